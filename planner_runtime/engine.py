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

Who does what: ``Engine`` (this module) owns everything that is the same on every backend:
``plan`` (input checks and conversion, level check, the fused step count, the manifest's
cfg_w default, the prefix feeds), ``plan_trusted`` (the same feeds without the checks),
``default_levels``, and the one loop over (level, next_level) pairs of a step graph with
its start flag, per-step timings (``step{i}_ms``) and ``infer_ms``. A backend
(``backends/ort.py``, ``backends/tensorrt.py``) implements only its engine calls:
``_run_fused`` (one fused call), ``_begin_steps`` / ``_run_step`` / ``_end_steps`` (one
pass of a step graph: where the constant feeds and the iterate live between steps is the
backend's business, e.g. device buffers) and ``close``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from planner_runtime.schedule import validate_levels

if TYPE_CHECKING:
    from planner_runtime.manifest import Manifest

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


def _as_array(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """float32, C-contiguous, exactly ``shape`` (a missing leading batch of 1 is added)."""
    a = np.asarray(value, dtype=np.float32)
    if a.shape != shape:
        if a.size == int(np.prod(shape)) and a.ndim < len(shape):
            a = a.reshape(shape)
        else:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(a)


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
    """A loaded engine. ``plan``/``plan_trusted`` and the step loop live here; a backend
    (ONNX Runtime, TensorRT) implements the engine calls below (see the module docstring)."""

    manifest: Manifest
    backend: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt"
    path: Any  # the engine file (pathlib.Path)

    def _adopt_manifest(self, manifest: Manifest, profile: Mapping[str, Any] | None) -> None:
        """Check the manifest against a robot profile (when given) and take the dimensions
        every backend needs from it: B, S, A, C, H, D = S + A, K, kind, n_steps."""
        from planner_runtime import manifest as mf

        if profile is not None:
            try:
                mf.check_profile(manifest, profile)
            except mf.ManifestError as exc:
                raise EngineError(f"{self.path}: {exc}") from exc
        self.manifest = manifest
        d = manifest.dims
        self.B, self.S, self.A, self.C, self.H = d.B, d.S, d.A, d.C, d.H
        self.D = self.S + self.A
        self.K = manifest.diffusion.K
        self.kind = manifest.graph.kind
        self.n_steps = manifest.graph.n_steps
        # Whether the graph takes the committed prefix (engines exported before it did not).
        self.inpaints = all(n in manifest.graph.inputs for n in PREFIX_INPUTS)
        self._cfg_arrays: dict[float, np.ndarray] = {}  # plan_trusted's cfg_w feeds, by value

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
        return np.asarray(self.manifest.diffusion.levels(warm), dtype=np.int64)

    # ------------------------------------------------------------ planning
    def plan(self, x0: Any, cond: Any, prev_plan: Any, noise: Any, levels: Any,
             cfg_w: float | None = None, prefix: Any = None, n_prefix: int = 0) -> PlanOutput:
        """Run one full reverse pass over ``levels``, holding the first ``n_prefix`` rows'
        actions at ``prefix`` (see ``prefix_inputs``). Shapes as in the module docstring; a
        missing leading batch of 1 is added; ``cfg_w`` None is the manifest's. Every input is
        checked (shape, finite, levels strictly decreasing to 0, a fused engine's step
        count) and a bad one refused with its name."""
        B, H, D = self.B, self.H, self.D
        w = self.manifest.diffusion.cfg_w if cfg_w is None else float(cfg_w)
        feeds = {
            "x0": _as_array(x0, (B, self.S), "x0"),
            "cond": _as_array(cond, (B, self.C), "cond"),
            "prev_plan": _as_array(prev_plan, (B, H, D), "prev_plan"),
            "noise": _as_array(noise, (B, H, D), "noise"),
            "cfg_w": _as_array([w], (1,), "cfg_w"),
        }
        feeds.update(self.prefix_inputs(prefix, n_prefix))
        lv = validate_levels(np.asarray(levels), self.K)
        if self.kind == "fused" and lv.size != self.n_steps + 1:
            raise ValueError(
                f"this fused engine unrolls {self.n_steps} steps: levels needs "
                f"{self.n_steps + 1} entries, got {lv.tolist()} (use a step engine to vary steps)"
            )
        return self._run(feeds, lv)

    def plan_trusted(self, x0: np.ndarray, cond: np.ndarray, prev_plan: np.ndarray,
                     noise: np.ndarray, levels: np.ndarray, cfg_w: float, prefix: Any = None,
                     n_prefix: int = 0) -> PlanOutput:
        """``plan`` for a caller that has already checked every input: float32 C-contiguous
        arrays of exactly the engine's shapes, all finite, and ``levels`` an int64 array that
        passed ``schedule.validate_levels`` with the engine's step count. The AsyncPlanner
        validates once (the observation on receipt, levels at start-up) and calls this, so
        the checks do not run twice per plan: the arrays go to the backend as they are (only
        the prefix feeds are built, ``prefix_inputs``, which refuses a prefix an engine
        without the inputs cannot hold)."""
        w = self._cfg_arrays.get(cfg_w)
        if w is None:
            w = self._cfg_arrays[cfg_w] = np.array([cfg_w], np.float32)
        feeds = {"x0": x0, "cond": cond, "prev_plan": prev_plan, "noise": noise, "cfg_w": w}
        feeds.update(self.prefix_inputs(prefix, n_prefix))
        return self._run(feeds, levels)

    def _run(self, feeds: dict[str, np.ndarray], lv: np.ndarray) -> PlanOutput:
        """One plan from checked feeds: one fused call, or the loop over a step graph's
        (level, next_level) pairs (no update math here: the graph does it)."""
        if self.kind == "fused":
            feeds["levels"] = lv
            t0 = time.perf_counter()
            plan, score, best = self._run_fused(feeds)
            ms = (time.perf_counter() - t0) * 1e3
            return PlanOutput(plan=plan, best=int(best[0]), score=score, infer_ms=ms)
        steps_ms: list[float] = []
        tau0 = np.zeros((self.B, self.H, self.D), dtype=np.float32)  # ignored at start = 1
        t_all = time.perf_counter()
        run = self._begin_steps(feeds, tau0)
        for i, (k, kn) in enumerate(zip(lv[:-1].tolist(), lv[1:].tolist(), strict=False)):
            t0 = time.perf_counter()
            self._run_step(run, i, np.array([k], np.int64), np.array([kn], np.int64),
                           np.array([1 if i == 0 else 0], np.int64))
            steps_ms.append((time.perf_counter() - t0) * 1e3)
        plan = self._end_steps(run)
        ms = (time.perf_counter() - t_all) * 1e3
        timings = {f"step{i}_ms": v for i, v in enumerate(steps_ms)}
        # The step graph has no ranker: candidate 0 is returned (N > 1 needs a fused engine).
        return PlanOutput(plan=plan, best=0, score=np.zeros(self.B, np.float32), infer_ms=ms,
                          timings=timings)

    # ------------------------------------------------------------ a backend's engine calls
    @abstractmethod
    def _run_fused(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One call of the fused graph on ``feeds`` (every input, by name); returns host
        arrays (plan [B, H, D], score [B], best [1]) the caller may keep."""

    @abstractmethod
    def _begin_steps(self, feeds: dict[str, np.ndarray], tau0: np.ndarray) -> Any:
        """Start one pass of the step graph: ``feeds`` are the inputs constant over the pass,
        ``tau0`` the first iterate. Returns this pass's state, handed to the calls below."""

    @abstractmethod
    def _run_step(self, run: Any, i: int, level: np.ndarray, next_level: np.ndarray,
                  start: np.ndarray) -> None:
        """Reverse step ``i`` of the pass (``level``, ``next_level``, ``start``: [1] int64):
        the previous step's ``tau_next`` is this step's ``tau``."""

    @abstractmethod
    def _end_steps(self, run: Any) -> np.ndarray:
        """End the pass: the last step's ``plan`` [B, H, D] as a host array the caller may keep."""

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release sessions / device buffers."""
