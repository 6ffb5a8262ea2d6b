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
             cfg_w [1] f32, prefix [B, H, A] f32 (raw committed actions), n_prefix [1] i64
    outputs  plan [B, H, D] f32 (raw), score [B] f32 (ranker score; zeros when N = 1),
             best [1] i64 (index of the candidate the ranker picked)
  The first reverse step starts from q_sample(normalize(prev_plan), noise, levels[0]);
  with levels[0] = K and a cosine schedule that is (numerically) pure noise: a cold start.

Step graph (one call per reverse step; the loop lives in the runtime, steps changeable):
    inputs   x0, cond, prev_plan, noise as above, tau [B, H, D] f32 (normalized iterate;
             ignored when start = 1), level [1] i64, next_level [1] i64, start [1] i64,
             cfg_w [1] f32, prefix, n_prefix as above
    outputs  tau_next [B, H, D] f32 (normalized), plan [B, H, D] f32 (raw: the
             unnormalized clean estimate; the final plan when next_level = 0)

Committed prefix (real-time chunking): the actions of rows t < n_prefix are the ones the
robot executes while the plan is computed; the graph holds them fixed at every reverse step
and returns them exactly in ``plan`` (rows of ``prefix`` at or past n_prefix are ignored;
n_prefix = 0 is the plain sampler). Engines exported before the prefix existed have the
inputs without ``prefix``/``n_prefix`` (``*_INPUTS_V1``); they load and plan, and
``Engine.inpaints`` is False for them, so a caller that needs the prefix refuses them.

The runtime keeps no copy of an update rule: it shifts the previous plan, draws noise,
picks the level sequence (``schedule.py``) and loops; the graphs do the math.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PREFIX_INPUTS = ("prefix", "n_prefix")
FUSED_INPUTS_V1 = ("x0", "cond", "prev_plan", "noise", "levels", "cfg_w")
FUSED_INPUTS = FUSED_INPUTS_V1 + PREFIX_INPUTS
FUSED_OUTPUTS = ("plan", "score", "best")
STEP_INPUTS_V1 = ("x0", "cond", "prev_plan", "noise", "tau", "level", "next_level", "start", "cfg_w")
STEP_INPUTS = STEP_INPUTS_V1 + PREFIX_INPUTS
STEP_OUTPUTS = ("tau_next", "plan")


def graph_inputs(kind: str) -> tuple[tuple[str, ...], ...]:
    """The input lists an engine of ``kind`` may have: the current one first, then the one
    before committed-prefix inpainting existed (still loadable, ``inpaints`` False)."""
    return (FUSED_INPUTS, FUSED_INPUTS_V1) if kind == "fused" else (STEP_INPUTS, STEP_INPUTS_V1)


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
        # Whether the graph takes the committed prefix (engines exported before it did not).
        self.inpaints = all(n in manifest["graph"]["inputs"] for n in PREFIX_INPUTS)

    def prefix_inputs(self, prefix: Any, n_prefix: int) -> dict[str, np.ndarray]:
        """The graph's ``prefix``/``n_prefix`` feeds ({} for an engine without them, which
        refuses n_prefix > 0). ``prefix`` [n >= n_prefix, A] or [B, H, A] raw actions, or None
        when n_prefix is 0; rows past n_prefix are zero-filled."""
        n = int(n_prefix)
        if not self.inpaints:
            if n > 0:
                raise EngineError(f"{self.path}: this engine was exported without the committed-prefix "
                                  "inputs (real-time chunking): re-export it with planner-runtime export")
            return {}
        if not 0 <= n <= self.H:
            raise ValueError(f"n_prefix must be in [0, H={self.H}], got {n}")
        out = np.zeros((self.B, self.H, self.A), np.float32)
        if n:
            p = np.asarray(prefix, dtype=np.float32)
            if p.ndim == 2:
                if p.shape[0] < n or p.shape[1] != self.A:
                    raise ValueError(f"prefix must have at least n_prefix={n} rows of {self.A} actions, "
                                     f"got shape {list(p.shape)}")
                out[:, :n] = p[:n]
            elif p.shape == out.shape:
                out[:, :n] = p[:, :n]
            else:
                raise ValueError(f"prefix must have shape [n, {self.A}] or {list(out.shape)}, got {list(p.shape)}")
            if not np.all(np.isfinite(out)):
                raise ValueError("prefix contains NaN or inf")
        return {"prefix": out, "n_prefix": np.array([n], np.int64)}

    def default_levels(self, warm: bool) -> np.ndarray:
        """The manifest's warm or cold level sequence (int64)."""
        key = "warm_levels" if warm else "cold_levels"
        return np.asarray(self.manifest["diffusion"][key], dtype=np.int64)

    @abstractmethod
    def plan(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray, noise: np.ndarray,
             levels: np.ndarray, cfg_w: float | None = None, prefix: Any = None,
             n_prefix: int = 0) -> PlanOutput:
        """Run one full reverse pass over ``levels``, holding the first ``n_prefix`` rows'
        actions at ``prefix`` (see ``prefix_inputs``). Shapes as in the module docstring."""

    def plan_trusted(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray,
                     noise: np.ndarray, levels: np.ndarray, cfg_w: float, prefix: Any = None,
                     n_prefix: int = 0) -> PlanOutput:
        """``plan`` for a caller that has already checked every input: float32 C-contiguous
        arrays of exactly the engine's shapes, all finite, and ``levels`` an int64 array that
        passed ``schedule.validate_levels`` with the engine's step count. The AsyncPlanner
        validates once (the observation on receipt, levels at start-up) and calls this, so
        the checks do not run twice per plan. Backends may skip their own checks here; this
        default just runs them."""
        return self.plan(x0, cond, prev_plan, noise, levels, cfg_w, prefix, n_prefix)

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release sessions / device buffers."""
