"""The background sampler: always plans from the newest observation, warm-started.

One thread owns the engine. Observations arrive through a size-1 slot (a newer one
replaces an older one that was not started yet: latest wins, nothing queues), so the
socket thread hands over an observation in microseconds and never waits for a plan.

Per plan the runtime only does bookkeeping; the update math is inside the engine graphs:
- warm start: the previous chosen plan is shifted by the number of rows executed since it
  was made, ``s = round((stamp_new - t0_prev) / dt)`` (rows are ``dt`` apart and row 0
  acts at t0), the end padded by repeating the last row, and passed as ``prev_plan`` with
  ``levels = diffusion.warm_levels`` ([k_w, ..., 0]); the graph noises it to level k_w.
- cold start (``levels = diffusion.cold_levels``, zeros as ``prev_plan``): the first
  observation, after ``reset()``, when the stamp went backwards or the old plan is used up
  (``s >= H``), or when the observation is far from what the old plan predicted for now:
  RMS over state dims of ``(x_obs - x_pred) / scale`` above ``cold_threshold``, where
  ``scale`` is the normalizer's per-dimension state scale (1 when the manifest has none).
- noise: a seeded ``numpy.random.Generator``, standard normal scaled by sqrt(temperature);
  the thread draws the next plan's noise while idle, after a result went out (one draw per
  plan, in order, so a seed gives the same sequence), to keep it off the latency path.

Committed prefix (real-time chunking, ``planner_runtime.chunking``): an observation may carry
the actions the robot executes while its plan is computed; they go to the engine as the
prefix it holds fixed (rows 0..n-1 of the plan), and the chunk says how many (``prefix``).

Every result is an ``ActionChunk`` stamped with plan id, the observation seq it answers,
t0 (= the observation's stamp), dt, valid_until (= t0 + n_send * dt) and timings in ms.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner_runtime import schedule
from planner_runtime.engine import Engine
from planner_runtime.manifest import Manifest
from planner_runtime.protocol import ActionChunk, Observation, all_finite

log = logging.getLogger("planner_runtime.planner")

ResultCallback = Callable[[Any, "ActionChunk | None", "Exception | None", Observation], None]


@dataclass
class PlannerSpec:
    """What the planner needs from a manifest, plus run-time overrides."""

    S: int
    A: int
    C: int
    H: int
    B: int
    K: int
    dt: float
    chunk: int
    graph: str  # "fused" | "step"
    cold_levels: np.ndarray
    warm_levels: np.ndarray
    cfg_w: float
    temperature: float
    state_scale: np.ndarray  # [S], for the far-observation test

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, chunk: int | None = None,
                      steps: int | None = None, warm_level: int | None = None,
                      cfg_w: float | None = None, temperature: float | None = None) -> PlannerSpec:
        """Build from a parsed manifest; ``steps``/``warm_level`` only for step graphs."""
        d, g, f = manifest.dims, manifest.graph, manifest.diffusion
        K = f.K
        cold = np.asarray(f.cold_levels, np.int64)
        warm = np.asarray(f.warm_levels, np.int64)
        if g.kind == "fused" and (steps is not None or warm_level is not None):
            n = g.n_steps
            if (steps is not None and steps != n) or (warm_level is not None and warm_level != n):
                raise ValueError(
                    f"this is a fused engine with {n} unrolled steps: --steps/--warm-level can only "
                    f"be changed for step-graph engines (export one with --graph step)")
        if steps is not None:
            cold = schedule.ddim_levels(K, steps)
        if warm_level is not None:
            if not 1 <= warm_level <= K:
                raise ValueError(f"warm level must be in [1, K={K}], got {warm_level}")
            warm = schedule.warm_levels(warm_level)
        H = d.H
        c = manifest.control.chunk_size if chunk is None else int(chunk)
        if not 1 <= c <= H:
            raise ValueError(f"chunk size must be in [1, H={H}], got {c}")
        S = d.S
        temp = float(f.temperature if temperature is None else temperature)
        w = float(f.cfg_w if cfg_w is None else cfg_w)
        if not (math.isfinite(temp) and temp >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temp}")
        if not math.isfinite(w):
            raise ValueError(f"cfg_w must be finite, got {w}")
        return cls(S=S, A=d.A, C=d.C, H=H, B=d.B, K=K,
                   dt=float(manifest.control.dt), chunk=c, graph=g.kind,
                   cold_levels=schedule.validate_levels(cold, K),
                   warm_levels=schedule.validate_levels(warm, K),
                   cfg_w=w, temperature=temp,
                   state_scale=state_scale_from_manifest(manifest, S))


def state_scale_from_manifest(manifest: Manifest, S: int) -> np.ndarray:
    """Per-dimension state scale from the normalizer (``traj.scale[:S]`` or ``scale[:S]``)."""
    norm = manifest.normalizer or {}
    for block in (norm.get("traj"), norm):
        if isinstance(block, Mapping) and isinstance(block.get("scale"), tuple) and len(block["scale"]) >= S:
            sc = np.asarray(block["scale"][:S], np.float64)
            if np.all(np.isfinite(sc)) and np.all(sc > 0):
                return sc
    return np.ones(S)


def shift_plan(plan: np.ndarray, steps: int, out: np.ndarray | None = None) -> np.ndarray:
    """The warm-start shift: row t of the result is row ``min(t + steps, H - 1)`` of ``plan``
    ``[..., H, D]`` (the first ``steps`` rows dropped, the end padded with the last row).

    ``steps`` must be in [0, H] (H: every row is the last one). ``out``: an array to fill
    instead of a new one (it may have more leading dimensions than ``plan``: each candidate
    of a [B, H, D] input gets the same shifted plan). The graph side has the same rule in
    torch (``export.sampling.common.shift_plan``); a test checks that the two agree.
    """
    H = plan.shape[-2]
    if not 0 <= steps <= H:
        raise ValueError(f"shift steps must be in [0, H={H}], got {steps}")
    if out is None:
        out = np.empty_like(plan)
    out[..., : H - steps, :] = plan[..., steps:, :]
    if steps:
        out[..., H - steps:, :] = plan[..., -1:, :]
    return out


@dataclass
class _LastPlan:
    plan: np.ndarray  # [H, D] chosen candidate, raw units
    x0: np.ndarray  # [S] the state it was planned from
    t0: float
    plan_id: int


class AsyncPlanner:
    """Background sampler thread with a latest-wins observation slot.

    ``on_result(tag, chunk, error, obs)`` is called from the planner thread for every
    planned observation (``error`` set when the engine failed). ``tag`` is whatever the
    submitter passed (the server uses the client's identity).
    """

    def __init__(self, engine: Engine, spec: PlannerSpec, on_result: ResultCallback | None = None,
                 *, seed: int = 0, cold_threshold: float = 1.0, send_steps: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cold_threshold <= 0 or math.isnan(cold_threshold):
            raise ValueError(f"cold_threshold must be > 0 (inf disables the check), got {cold_threshold}")
        self.engine = engine
        # Engines without the fast entry (wrappers, custom backends) get their checked plan().
        self._plan = getattr(engine, "plan_trusted", None) or engine.plan
        self.spec = spec
        self.on_result = on_result
        self.cold_threshold = float(cold_threshold)
        self.send_steps = spec.H if send_steps is None else int(send_steps)
        if not spec.chunk <= self.send_steps <= spec.H:
            raise ValueError(f"send_steps must be in [chunk={spec.chunk}, H={spec.H}], got {send_steps}")
        self._rng = np.random.default_rng(seed)
        self._noise_scale = np.float32(math.sqrt(max(spec.temperature, 0.0)))
        D = spec.S + spec.A
        self._plan_shape = (spec.B, spec.H, D)
        self._inv_scale = 1.0 / np.asarray(spec.state_scale, np.float64)
        # The next plan's noise, drawn while the thread is idle (one draw per plan, in plan
        # order, so a seed gives the same noise sequence as drawing on demand).
        self._noise_next: np.ndarray | None = None
        self._noise_lock = threading.Lock()
        self._clock = clock
        self._cv = threading.Condition()
        self._slot: tuple[Any, Observation, float] | None = None
        self._stop = False
        self._epoch = 0  # bumped by reset(): results of plans started before it are dropped
        self._last: _LastPlan | None = None
        self._next_id = 1
        self._thread: threading.Thread | None = None
        self._busy = False
        self._next_cold_reason = "first"
        self.stats: dict[str, Any] = {
            "received": 0, "replaced": 0, "plans": 0, "cold": 0, "warm": 0, "errors": 0,
            "discarded": 0, "consecutive_errors": 0, "cold_reasons": {}, "last_infer_ms": None,
            "last_plan_id": 0,
        }

    # ------------------------------------------------------------ thread control
    def start(self) -> AsyncPlanner:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="planner", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish (after the plan in flight); True if it ended in time."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def submit(self, obs: Observation, tag: Any = None) -> bool:
        """Offer an observation; returns True if it replaced one not yet started. Never blocks
        on the sampler (only on the slot's lock, held for a few instructions)."""
        now = self._clock()
        with self._cv:
            replaced = self._slot is not None
            self._slot = (tag, obs, now)
            self.stats["received"] += 1
            if replaced:
                self.stats["replaced"] += 1
            self._cv.notify()
        return replaced

    def reset(self) -> None:
        """Forget the warm-start plan and any pending observation; the next plan is cold."""
        with self._cv:
            self._epoch += 1
            self._slot = None
            self._last = None
            self._next_cold_reason = "reset"

    @property
    def pending(self) -> bool:
        with self._cv:
            return self._slot is not None

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self._prepare_noise()
        while True:
            with self._cv:
                while self._slot is None and not self._stop:
                    # No timeout: submit() and stop() notify, so the thread sleeps in the
                    # kernel until there is work (no periodic wake-ups to pay for).
                    self._cv.wait()
                if self._stop:
                    return
                assert self._slot is not None
                tag, obs, recv_t = self._slot
                self._slot = None
                epoch = self._epoch
                last = self._last
                self._busy = True
            try:
                chunk, new_last = self.plan_once(obs, last, recv_t)
                err = None
            except Exception as exc:  # the engine failed: report it, keep serving
                log.exception("plan for observation seq %d failed", obs.seq)
                chunk, new_last, err = None, None, exc
            with self._cv:
                self._busy = False
                if epoch != self._epoch:  # a reset arrived while planning: drop this plan
                    self.stats["discarded"] += 1
                    continue
                if err is not None:
                    self.stats["errors"] += 1
                    self.stats["consecutive_errors"] += 1
                    # never warm-start from a plan chain that just failed: next plan is cold
                    self._last = None
                    self._next_cold_reason = "after_error"
                else:
                    self._last = new_last
                    self.stats["consecutive_errors"] = 0
            if self.on_result is not None:
                try:
                    self.on_result(tag, chunk, err, obs)
                except Exception:  # a broken callback must not kill the sampler
                    log.exception("result callback failed")
            # Idle work after the result is out: the next plan's noise is drawn now, not on
            # the latency path of the next observation.
            self._prepare_noise()

    # ------------------------------------------------------------ one plan
    def _draw_noise(self) -> np.ndarray:
        noise = self._rng.standard_normal(self._plan_shape, dtype=np.float32)
        noise *= self._noise_scale
        return noise

    def _prepare_noise(self) -> None:
        """Draw the next plan's noise now (off the observation -> chunk path)."""
        with self._noise_lock:
            if self._noise_next is None:
                self._noise_next = self._draw_noise()

    def _take_noise(self) -> np.ndarray:
        with self._noise_lock:
            noise, self._noise_next = self._noise_next, None
            return self._draw_noise() if noise is None else noise

    def decide(self, obs: Observation, last: _LastPlan | None) -> tuple[bool, str, int]:
        """(cold, reason, shift) for an observation given the previous plan."""
        if last is None:
            return True, self._next_cold_reason, 0
        s = int(round((obs.stamp - last.t0) / self.spec.dt))
        if s < 0:
            return True, "stamp_backwards", 0
        if s >= self.spec.H:
            return True, "plan_exhausted", 0
        if self.cold_threshold != math.inf:  # inf disables the check: skip its arithmetic
            pred = last.x0 if s == 0 else last.plan[s - 1, : self.spec.S]
            d = (obs.state - pred) * self._inv_scale
            dist = math.sqrt(float(np.dot(d, d)) / d.size)  # RMS in normalizer units
            if dist > self.cold_threshold:
                return True, "far", s
        return False, "warm", s

    def warm_up(self, rounds: int = 2) -> list[float]:
        """Run the engine on zero inputs (cold and warm level sequences) before serving, so
        the first real observation does not pay ONNX Runtime's first-run allocations (tens
        of ms: enough to trip the controller's 0.2 s watchdog under load). Uses its own zero
        noise: the seeded noise sequence of the real plans is untouched. Returns ms per call."""
        B, H, D = self._plan_shape
        sp = self.spec
        x0, cond = np.zeros((B, sp.S), np.float32), np.zeros((B, sp.C), np.float32)
        z = np.zeros((B, H, D), np.float32)
        times = []
        for _ in range(max(0, int(rounds))):
            for levels in (sp.cold_levels, sp.warm_levels):
                t = self._clock()
                self.engine.plan(x0, cond, z, z, levels, sp.cfg_w)
                times.append((self._clock() - t) * 1e3)
        return times

    def plan_once(self, obs: Observation, last: _LastPlan | None = None,
                  recv_t: float | None = None) -> tuple[ActionChunk, _LastPlan]:
        """Plan synchronously for ``obs`` (the thread calls this; tests may too)."""
        sp = self.spec
        t_start = self._clock()
        cold, reason, s = self.decide(obs, last)
        B, H, D = self._plan_shape
        # Fresh arrays each plan (an engine may keep its inputs), filled with as few numpy
        # calls as possible: this is all on the observation -> chunk path.
        prev = np.empty((B, H, D), np.float32)
        if cold:
            prev.fill(0.0)
            levels = sp.cold_levels
        else:
            assert last is not None
            shift_plan(last.plan, s, out=prev)  # warm start: the previous plan shifted by s rows
            levels = sp.warm_levels
        noise = self._take_noise()
        # [1, S] / [1, C] copies (obs.state/cond may be read-only views of the message),
        # repeated per candidate; row 0 of x0 is kept as the warm-start record.
        x0 = np.array(obs.state, np.float32, ndmin=2)
        cond = np.array(obs.cond, np.float32, ndmin=2)
        if B > 1:
            x0, cond = np.repeat(x0, B, axis=0), np.repeat(cond, B, axis=0)
        state = x0[0]
        t_call = self._clock()
        # Inputs are checked already (the observation on receipt, levels at start-up, noise
        # and the previous plan by construction): the engine skips its per-call checks.
        n_prefix = 0 if obs.committed is None else min(len(obs.committed), H)
        if n_prefix:  # real-time chunking: the committed actions are held as rows 0..n-1
            out = self._plan(x0, cond, prev, noise, levels, sp.cfg_w, obs.committed, n_prefix)
        else:
            out = self._plan(x0, cond, prev, noise, levels, sp.cfg_w)
        t_done = self._clock()
        chosen = out.chosen()
        if chosen.shape != (H, D) or chosen.dtype != np.float32 or not all_finite(chosen):
            raise RuntimeError(f"engine returned a bad plan (shape {chosen.shape}, expected {(H, D)}, "
                               f"dtype {chosen.dtype}, finite={bool(np.all(np.isfinite(chosen)))})")
        plan_id = self._next_id
        self._next_id += 1
        n = self.send_steps
        timings = {"infer_ms": out.infer_ms, "prep_ms": (t_call - t_start) * 1e3,
                   "plan_ms": (t_done - t_start) * 1e3}
        if recv_t is not None:
            timings["queue_ms"] = (t_start - recv_t) * 1e3
        if out.timings:
            timings.update({k: float(v) for k, v in out.timings.items()})
        # Views of the engine's fresh output array (nothing writes to it later); the
        # encoder writes them out row by row.
        chunk = ActionChunk(plan_id=plan_id, obs_seq=obs.seq, t0=obs.stamp, dt=sp.dt,
                            actions=chosen[:n, sp.S:], states=chosen[:n, : sp.S],
                            chunk=sp.chunk, valid_until=obs.stamp + n * sp.dt, cold=cold,
                            timings=timings, prefix=n_prefix)
        st = self.stats
        st["plans"] += 1
        st["cold" if cold else "warm"] += 1
        if cold:
            st["cold_reasons"][reason] = st["cold_reasons"].get(reason, 0) + 1
        st["last_infer_ms"] = out.infer_ms
        st["last_plan_id"] = plan_id
        if log.isEnabledFor(logging.DEBUG):  # the extra dict is not built when nobody logs it
            log.debug("plan %d for seq %d: %s, shift %d, infer %.2f ms", plan_id, obs.seq, reason, s,
                      out.infer_ms, extra={"event": "plan", "plan_id": plan_id, "seq": obs.seq,
                                           "start": reason, "shift": s, "infer_ms": round(out.infer_ms, 3)})
        # post_ms: the bookkeeping after the engine call (checks, chunk), so a client can
        # split its end-to-end time into queue + plan + post + transport.
        timings["post_ms"] = (self._clock() - t_done) * 1e3
        return chunk, _LastPlan(chosen, state, obs.stamp, plan_id)
