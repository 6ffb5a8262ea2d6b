"""The engine contract: what an exported planner graph takes and returns.

An engine file (``.onnx`` or TensorRT ``.plan``) carries a manifest (see ``manifest.py``)
and one of two graph shapes. Trajectories are ``[B, H, D]`` with ``D = S + A``; row ``t``
is ``[x_{t+1} (S), u_t (A)]``, so ``plan[:, 0, S:]`` is the action to apply at the observed
state ``x_0``. All inputs/outputs at this boundary are in raw (unnormalized) units; the
normalizer lives inside the graph. ``B`` is the number of candidates (1 on the Go2).

Fused graph (one call per plan, ``n`` reverse steps unrolled, CFG batch inside):
    inputs   x0 [B, S] f32, cond [B, C] f32, prev_plan [B, H, D] f32 (already shifted by
             the runtime; zeros on a cold start), noise [B, H, D] f32 (standard normal,
             scaled by sqrt(temperature) by the runtime), levels [n + 1] i64 (decreasing,
             ends at 0: warm = [k_w, ..., 0], cold = schedule.ddim_levels(K, n)),
             cfg_w [1] f32
    outputs  plan [B, H, D] f32 (raw), score [B] f32 (ranker score; zeros when N = 1),
             best [1] i64 (index of the candidate the ranker picked)
  The first reverse step starts from q_sample(normalize(prev_plan), noise, levels[0]);
  with levels[0] = K and a cosine schedule that is (numerically) pure noise: a cold start.

Step graph (one call per reverse step; the loop lives in the runtime, steps changeable):
    inputs   x0, cond, prev_plan, noise as above, tau [B, H, D] f32 (normalized iterate;
             ignored when start = 1), level [1] i64, next_level [1] i64, start [1] i64,
             cfg_w [1] f32
    outputs  tau_next [B, H, D] f32 (normalized), plan [B, H, D] f32 (raw: the
             unnormalized clean estimate; the final plan when next_level = 0)

The runtime keeps no copy of an update rule: it shifts the previous plan, draws noise,
picks the level sequence (``schedule.py``) and loops; the graphs do the math.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FUSED_INPUTS = ("x0", "cond", "prev_plan", "noise", "levels", "cfg_w")
FUSED_OUTPUTS = ("plan", "score", "best")
STEP_INPUTS = ("x0", "cond", "prev_plan", "noise", "tau", "level", "next_level", "start", "cfg_w")
STEP_OUTPUTS = ("tau_next", "plan")


class EngineError(RuntimeError):
    """An engine file is missing, corrupt, mismatched, or cannot run on this machine."""


@dataclass
class PlanOutput:
    plan: np.ndarray  # [B, H, D] raw units
    best: int  # index of the chosen candidate
    score: np.ndarray  # [B]
    infer_ms: float  # wall time of the engine call(s)
    timings: dict[str, float] = field(default_factory=dict)

    def chosen(self) -> np.ndarray:
        """[H, D] trajectory of the chosen candidate."""
        return self.plan[self.best]


class Engine(ABC):
    """A loaded engine. Backends (ONNX Runtime, TensorRT) implement ``plan``."""

    manifest: dict[str, Any]
    backend: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt"
    path: Any  # the engine file (pathlib.Path)

    def _adopt_manifest(self, manifest: dict[str, Any], profile: Mapping[str, Any] | None) -> None:
        """Check the manifest against a robot profile (when given) and take the dimensions
        every backend needs from it: B, S, A, C, H, D = S + A, K, kind, n_steps."""
        from planner_runtime import manifest as mf

        if profile is not None:
            try:
                mf.check_profile(manifest, profile)
            except mf.ManifestError as exc:
                raise EngineError(f"{self.path}: {exc}") from exc
        self.manifest = manifest
        d = manifest["dims"]
        self.B, self.S, self.A, self.C, self.H = d["B"], d["S"], d["A"], d["C"], d["H"]
        self.D = self.S + self.A
        self.K = manifest["diffusion"]["K"]
        self.kind = manifest["graph"]["kind"]
        self.n_steps = manifest["graph"]["n_steps"]

    def default_levels(self, warm: bool) -> np.ndarray:
        """The manifest's warm or cold level sequence (int64)."""
        key = "warm_levels" if warm else "cold_levels"
        return np.asarray(self.manifest["diffusion"][key], dtype=np.int64)

    @abstractmethod
    def plan(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray, noise: np.ndarray,
             levels: np.ndarray, cfg_w: float | None = None) -> PlanOutput:
        """Run one full reverse pass over ``levels``. Shapes as in the module docstring."""

    def plan_trusted(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray,
                     noise: np.ndarray, levels: np.ndarray, cfg_w: float) -> PlanOutput:
        """``plan`` for a caller that has already checked every input: float32 C-contiguous
        arrays of exactly the engine's shapes, all finite, and ``levels`` an int64 array that
        passed ``schedule.validate_levels`` with the engine's step count. The AsyncPlanner
        validates once (the observation on receipt, levels at start-up) and calls this, so
        the checks do not run twice per plan. Backends may skip their own checks here; this
        default just runs them."""
        return self.plan(x0, cond, prev_plan, noise, levels, cfg_w)

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release sessions / device buffers."""
