"""Probe engines: small hand-built ONNX graphs that follow the engine contract, no model.

For exercising the service, the controller and their tests without a trained planner (and
without torch: the graphs are written with ``onnx.helper``, imported lazily). They run
through the real ONNX Runtime backend like any engine; they are not planners.

Fused graph (inputs x0, cond, prev_plan, noise, levels, cfg_w; outputs plan, score, best):
    plan  = prev_gain prev_plan + noise_gain cfg_w noise
            + (x0 Wx + cond Wc + level_gain max(levels) / K)   broadcast over the horizon
    score = mean of plan over rows and dims, best = argmax(score)
with Wx [S, S + A], Wc [C, S + A] drawn from ``seed`` (standard normal times
``weight_gain``): another seed is another graph checksum, i.e. another engine identity.
Step graph (inputs x0, cond, prev_plan, noise, tau, level, next_level, start, cfg_w):
the iterate is prev_plan + noise at start = 1, else tau; tau_next = 0.9 iterate + x0 Wx +
next_level / K; plan = tau_next (the runtime runs the loop).
Neither graph takes the committed-prefix inputs (an engine without real-time chunking).

:func:`probe_manifest` writes the manifest from the dimensions; ``robot.probe_engine``
uses both for the Go2-sized probe engine (near-zero actions: the robot stands).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime import schedule


def probe_manifest(S: int, A: int, C: int, H: int, *, B: int = 1, K: int = 10, n_steps: int = 5,
                   dt: float = 0.02, chunk: int = 4, cfg_w: float = 2.0,
                   state_names: Sequence[str] | None = None,
                   condition_names: Sequence[str] | None = None,
                   action_names: Sequence[str] | None = None,
                   action: dict[str, Any] | None = None, robot: str = "toy",
                   note: str = "planner_runtime.probe_engine: contract graph, not a trained planner"
                   ) -> dict[str, Any]:
    """The manifest of a fused probe engine (names default to s0.., c0.., a0..; ``action``
    defaults to joints j0.. at 0 with scale 0.25)."""
    return {
        "format": "planner-runtime-engine", "format_version": 1,
        "method": {"name": "toy-fused", "knobs": {}},
        "graph": {"kind": "fused", "n_steps": n_steps,
                  "inputs": ["x0", "cond", "prev_plan", "noise", "levels", "cfg_w"],
                  "outputs": ["plan", "score", "best"]},
        "dims": {"S": S, "A": A, "C": C, "H": H, "B": B},
        "diffusion": {"K": K, "schedule": "cosine", "warm_level": n_steps,
                      "cold_levels": schedule.ddim_levels(K, n_steps).tolist(),
                      "warm_levels": schedule.warm_levels(n_steps).tolist(),
                      "cfg_w": cfg_w, "temperature": 1.0, "clip": None},
        "normalizer": {"kind": "std",
                       "traj": {"kind": "std", "shift": [0.0] * (S + A), "scale": [1.0] * (S + A)},
                       "cond": {"kind": "std", "shift": [0.0] * C, "scale": [1.0] * C}},
        "observation": {
            "state_names": list(state_names or [f"s{i}" for i in range(S)]),
            "condition_names": list(condition_names or [f"c{i}" for i in range(C)]),
            "action_names": list(action_names or [f"a{i}" for i in range(A)])},
        "action": action if action is not None else {
            "joint_names": [f"j{i}" for i in range(A)], "default_joint_pos": [0.0] * A, "scale": 0.25},
        "control": {"dt": dt, "chunk_size": chunk},
        "robot": {"name": robot, "profile": None},
        "provenance": {"note": note},
        "checksums": {},
    }


def step_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A fused probe manifest turned into the one of the step graph (same dims and names)."""
    m = dict(manifest)
    m["method"] = {**manifest["method"], "name": "toy-step"}
    m["graph"] = {"kind": "step", "n_steps": 1,
                  "inputs": ["x0", "cond", "prev_plan", "noise", "tau", "level", "next_level",
                             "start", "cfg_w"], "outputs": ["tau_next", "plan"]}
    return m


def build_probe_engine(path: str | Path, manifest: dict[str, Any], *, graph: str = "fused",
                       seed: int = 0, prev_gain: float = 0.5, noise_gain: float = 0.1,
                       weight_gain: float = 0.3, level_gain: float = 1.0) -> Path:
    """Write a probe engine with ``manifest``'s dims (see the module docstring) to ``path``.
    ``graph`` "step" writes the step graph (``prev_gain``, ``noise_gain`` and ``level_gain``
    apply to the fused one) with ``step_manifest(manifest)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from planner_runtime.engine_file import attach_manifest

    if graph not in ("fused", "step"):
        raise ValueError(f"graph must be 'fused' or 'step', got {graph!r}")
    d = manifest["dims"]
    S, A, C, H, B = (int(d[k]) for k in ("S", "A", "C", "H", "B"))
    K, n_steps = int(manifest["diffusion"]["K"]), int(manifest["graph"]["n_steps"])
    D = S + A
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    rng = np.random.default_rng(seed)
    const = lambda v, name: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    inits = [const(rng.standard_normal((S, D)).astype(np.float32) * weight_gain, "Wx"),
             const(1.0 / K, "invK"), numpy_helper.from_array(np.array([1], np.int64), "one_axis")]
    io = lambda n, t, s: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    common_in = [io("x0", f, [B, S]), io("cond", f, [B, C]), io("prev_plan", f, [B, H, D]),
                 io("noise", f, [B, H, D])]
    if graph == "fused":
        inits += [const(rng.standard_normal((C, D)).astype(np.float32) * weight_gain, "Wc"),
                  const(prev_gain, "prev_gain"), const(noise_gain, "noise_gain"),
                  const(level_gain, "level_gain"),
                  numpy_helper.from_array(np.array([1, 2], np.int64), "axes12")]
        nodes = [
            helper.make_node("MatMul", ["x0", "Wx"], ["bx"]),
            helper.make_node("MatMul", ["cond", "Wc"], ["bc"]),
            helper.make_node("Add", ["bx", "bc"], ["b0"]),
            helper.make_node("ReduceMax", ["levels"], ["lmax"], keepdims=0),
            helper.make_node("Cast", ["lmax"], ["lf"], to=f),
            helper.make_node("Mul", ["lf", "invK"], ["lk"]),
            helper.make_node("Mul", ["lk", "level_gain"], ["lkg"]),
            helper.make_node("Add", ["b0", "lkg"], ["b1"]),
            helper.make_node("Unsqueeze", ["b1", "one_axis"], ["b2"]),
            helper.make_node("Mul", ["prev_plan", "prev_gain"], ["pp"]),
            helper.make_node("Mul", ["noise", "noise_gain"], ["n1"]),
            helper.make_node("Mul", ["n1", "cfg_w"], ["n2"]),
            helper.make_node("Add", ["pp", "n2"], ["p1"]),
            helper.make_node("Add", ["p1", "b2"], ["plan"]),
            helper.make_node("ReduceMean", ["plan", "axes12"], ["score"], keepdims=0),
            helper.make_node("ArgMax", ["score"], ["best"], axis=0, keepdims=1),
        ]
        inputs = [*common_in, io("levels", i64, [n_steps + 1]), io("cfg_w", f, [1])]
        outputs = [io("plan", f, [B, H, D]), io("score", f, [B]), io("best", i64, [1])]
    else:
        manifest = step_manifest(manifest)
        inits += [const(0.9, "decay"), const(1.0, "onef")]
        nodes = [
            helper.make_node("Cast", ["start"], ["sf"], to=f),
            helper.make_node("Add", ["prev_plan", "noise"], ["fresh"]),
            helper.make_node("Mul", ["fresh", "sf"], ["a"]),
            helper.make_node("Sub", ["onef", "sf"], ["nsf"]),
            helper.make_node("Mul", ["tau", "nsf"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["t_in"]),
            helper.make_node("Mul", ["t_in", "decay"], ["t1"]),
            helper.make_node("MatMul", ["x0", "Wx"], ["bx"]),
            helper.make_node("Unsqueeze", ["bx", "one_axis"], ["bx3"]),
            helper.make_node("Cast", ["next_level"], ["nl"], to=f),
            helper.make_node("Mul", ["nl", "invK"], ["nlk"]),
            helper.make_node("Add", ["t1", "bx3"], ["t2"]),
            helper.make_node("Add", ["t2", "nlk"], ["tau_next"]),
            helper.make_node("Mul", ["cfg_w", "onef"], ["w1"]),
            helper.make_node("Sub", ["w1", "cfg_w"], ["zero_w"]),  # keeps cfg_w a used input
            helper.make_node("Add", ["tau_next", "zero_w"], ["p0"]),
            helper.make_node("ReduceSum", ["cond", "one_axis"], ["csum"], keepdims=1),
            helper.make_node("Mul", ["csum", "invK"], ["c1"]),
            helper.make_node("Sub", ["c1", "c1"], ["c0"]),  # keeps cond a used input
            helper.make_node("Unsqueeze", ["c0", "one_axis"], ["c03"]),
            helper.make_node("Add", ["p0", "c03"], ["plan"]),
        ]
        inputs = [*common_in, io("tau", f, [B, H, D]), io("level", i64, [1]),
                  io("next_level", i64, [1]), io("start", i64, [1]), io("cfg_w", f, [1])]
        outputs = [io("tau_next", f, [B, H, D]), io("plan", f, [B, H, D])]
    model = helper.make_model(helper.make_graph(nodes, f"probe_{graph}", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    attach_manifest(model, manifest)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path
