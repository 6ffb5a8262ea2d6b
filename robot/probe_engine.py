"""A Go2-sized probe engine: the fused engine contract with near-zero actions.

For exercising the controller <-> service path (tests, the controller benchmark) without a
trained model: an ONNX graph with the Go2's dimensions (S=30, A=12, C=3, H=16) and the Go2
action semantics in its manifest, run by the real service through ONNX Runtime. Its weights
are tiny, so its actions stay near 0 (targets near the default standing pose): the robot
stands while "planning". It is not a planner and never walks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot import go2_constants as go2
from robot.actions import PROJECT
from robot.observation import CONDITION_NAMES, STATE_NAMES

S, A, C, H, B, N_STEPS, K = 30, 12, 3, 16, 1, 4, 10


def go2_manifest(action: dict | None = None) -> dict:
    from planner_runtime import schedule

    return {
        "format": "planner-runtime-engine", "format_version": 1,
        "method": {"name": "toy-fused", "knobs": {}},
        "graph": {"kind": "fused", "n_steps": N_STEPS,
                  "inputs": ["x0", "cond", "prev_plan", "noise", "levels", "cfg_w"],
                  "outputs": ["plan", "score", "best"]},
        "dims": {"S": S, "A": A, "C": C, "H": H, "B": B},
        "diffusion": {"K": K, "schedule": "cosine", "warm_level": N_STEPS,
                      "cold_levels": schedule.ddim_levels(K, N_STEPS).tolist(),
                      "warm_levels": schedule.warm_levels(N_STEPS).tolist(),
                      "cfg_w": 1.0, "temperature": 1.0, "clip": None},
        "normalizer": {"kind": "std",
                       "traj": {"kind": "std", "shift": [0.0] * (S + A), "scale": [1.0] * (S + A)},
                       "cond": {"kind": "std", "shift": [0.0] * C, "scale": [1.0] * C}},
        "observation": {"state_names": list(STATE_NAMES), "condition_names": list(CONDITION_NAMES),
                        "action_names": [f"a_{n}" for n in go2.JOINT_NAMES]},
        "action": PROJECT.as_dict() if action is None else action,
        "control": {"dt": go2.POLICY_DT, "chunk_size": go2.CHUNK_SIZE},
        "robot": {"name": "go2", "profile": None},
        "provenance": {"note": "robot/probe_engine.py: Go2-sized contract graph, tiny weights; not a trained planner"},
        "checksums": {},
    }


def build_probe_engine(path: Path, seed: int = 0, action: dict | None = None) -> Path:
    """plan = 0.1 prev_plan + 0.001 noise + (x0 Wx + cond Wc) * 0.001: actions near zero.
    ``seed`` picks the weights (another seed: another graph checksum, i.e. another engine
    identity); ``action`` replaces the manifest's action semantics (tests of refusals)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from planner_runtime.engine_file import attach_manifest

    rng = np.random.default_rng(seed)
    D = S + A
    f = TensorProto.FLOAT
    inits = [numpy_helper.from_array(rng.standard_normal((S, D)).astype(np.float32) * 1e-3, "Wx"),
             numpy_helper.from_array(rng.standard_normal((C, D)).astype(np.float32) * 1e-3, "Wc"),
             numpy_helper.from_array(np.array(0.1, np.float32), "tenth"),
             numpy_helper.from_array(np.array(0.001, np.float32), "milli"),
             numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12")]
    nodes = [
        helper.make_node("MatMul", ["x0", "Wx"], ["bx"]),
        helper.make_node("MatMul", ["cond", "Wc"], ["bc"]),
        helper.make_node("Add", ["bx", "bc"], ["b0"]),
        helper.make_node("Unsqueeze", ["b0", "one_axis"], ["b2"]),
        helper.make_node("Mul", ["prev_plan", "tenth"], ["pp"]),
        helper.make_node("Mul", ["noise", "milli"], ["n1"]),
        helper.make_node("Mul", ["n1", "cfg_w"], ["n2"]),
        helper.make_node("Add", ["pp", "n2"], ["p1"]),
        helper.make_node("Add", ["p1", "b2"], ["plan"]),
        helper.make_node("ReduceMean", ["plan", "axes12"], ["score"], keepdims=0),
        helper.make_node("ArgMax", ["score"], ["best"], axis=0, keepdims=1),
    ]
    io = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    graph = helper.make_graph(
        nodes, "go2_toy_fused",
        [io("x0", f, [B, S]), io("cond", f, [B, C]), io("prev_plan", f, [B, H, D]),
         io("noise", f, [B, H, D]), io("levels", TensorProto.INT64, [N_STEPS + 1]),
         io("cfg_w", f, [1])],
        [io("plan", f, [B, H, D]), io("score", f, [B]), io("best", TensorProto.INT64, [1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    attach_manifest(model, go2_manifest(action))
    path.write_bytes(model.SerializeToString())
    return path
