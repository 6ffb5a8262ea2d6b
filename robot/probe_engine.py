"""The Go2-sized probe engine: ``planner_runtime.probe_engine`` with the Go2's contract.

For exercising the controller <-> service path (tests, the controller benchmark, the soak)
without a trained model: the fused contract graph with the Go2's dimensions (S=30, A=12,
C=3, H=16) and the Go2 action semantics in its manifest, run by the real service through
ONNX Runtime. Its weights are tiny, so its actions stay near 0 (targets near the default
standing pose): the robot stands while "planning". It is not a planner and never walks.
"""

from __future__ import annotations

from pathlib import Path

from planner_runtime import probe_engine
from robot import go2_constants as go2
from robot.actions import PROJECT
from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

S, A, C, H, B, N_STEPS, K = len(STATE_NAMES), len(ACTION_NAMES), len(CONDITION_NAMES), 16, 1, 4, 10


def go2_manifest(action: dict | None = None) -> dict:
    return probe_engine.probe_manifest(
        S, A, C, H, B=B, K=K, n_steps=N_STEPS, dt=go2.POLICY_DT, chunk=go2.CHUNK_SIZE, cfg_w=1.0,
        state_names=STATE_NAMES, condition_names=CONDITION_NAMES, action_names=ACTION_NAMES,
        action=PROJECT.as_dict() if action is None else action, robot="go2",
        note="robot/probe_engine.py: Go2-sized contract graph, tiny weights; not a trained planner")


def build_probe_engine(path: Path, seed: int = 0, action: dict | None = None) -> Path:
    """plan = 0.1 prev_plan + 0.001 cfg_w noise + x0 Wx + cond Wc with weights ~ 0.001 N(0, 1):
    actions near zero. ``seed`` picks the weights (another seed: another graph checksum, i.e.
    another engine identity); ``action`` replaces the manifest's action semantics (tests of
    refusals)."""
    return probe_engine.build_probe_engine(path, go2_manifest(action), seed=seed, prev_gain=0.1,
                                           noise_gain=1e-3, weight_gain=1e-3, level_gain=0.0)
