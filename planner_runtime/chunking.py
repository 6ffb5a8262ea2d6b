"""Real-time chunking: which action runs now, and what a new plan must agree with.

The one implementation of the chunk rules. The Go2 controller (``robot.controller``), the
closed-loop evaluation (``sim.evaluate``, through the controller), the demo (the controller
again) and the service client (``planner_runtime.client``) all execute chunks through
:class:`ChunkExecutor`; nothing else decides which row of which chunk applies.

Time is in control ticks of ``dt`` (the engine's, 20 ms on the Go2). An observation is
measured at tick n and its plan reaches the controller ``d`` ticks later (the delay). While
the plan is computed the robot keeps executing the chunk it has: those ``d`` actions are
*committed*. How a late chunk takes over (``merge``):

``inpaint`` (default)  the observation carries the ``d`` committed actions; the engine holds
                 them fixed at every denoising step (``Engine.prefix_inputs``), so rows
                 0..d-1 of the new plan are exactly what the robot did, the states after
                 them are the dynamics model's forecast, and row d (the first free action)
                 is planned from that forecast. The switch happens on time-aligned rows.
``aligned``      rows are time-aligned (row i applies at t0 + i dt; rows whose time passed
                 are skipped) and the old chunk keeps running until the new one arrives,
                 but the new plan knows nothing of the committed actions.
``blend``        ``aligned``, then over ``blend_ticks`` ticks the target moves linearly from
                 the old chunk's row to the new one's.
``replace``      the new chunk starts at its row 0 when it arrives, whatever its age.
``hold``         the behaviour before real-time chunking: only the first ``execute`` rows of
                 a chunk run, then the last of them is held until the next chunk arrives;
                 rows are time-aligned. Kept for side-by-side measurement.

``start_state="forecast"`` plans from the state the current chunk predicted for the tick the
new plan will start at (stamp moved ``d`` ticks ahead, no committed prefix): the previous
plan's forecast instead of the dynamics model's. The measured comparison is in
docs/realtime.md.

When to observe: at most every ``replan_every`` ticks, and (except ``hold``) only once the
previous observation was answered, so no two plans are in flight at once and the committed
prefix an observation carries is what the robot really executes (an unanswered observation
is given up after the rows a chunk can cover, ``(horizon - execute) dt``). A plan that takes
``d`` ticks is then followed by the next one as soon as it arrives (or ``replan_every``
ticks after the previous observation, whichever is later). By default
(:meth:`ChunkConfig.interval`) a rule that plans for the delay (``inpaint``, or the forecast
start state) replans continuously, ``replan_every = 1``: the next observation goes out as
soon as the previous plan is answered, so a switch comes every ``max(d, 1)`` ticks and each
one is small (measured in docs/realtime.md); the other rules observe every ``execute``
ticks, the schedule before real-time chunking.

The delay ``d`` comes from measured turnaround (observation measured -> chunk received on
the client clock), a high percentile over a recent window with cold plans excluded, rounded
up to ticks (:class:`DelayEstimator`). The admission rule (:func:`admit`) needs
``d <= prefix <= horizon - execute``: the committed prefix covers the delay and the rows
that run after it (``execute`` of them) are inside the plan.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner_runtime.bench.stats import summary
from planner_runtime.protocol import ActionChunk

MERGES = ("inpaint", "aligned", "blend", "replace", "hold")
DEFAULT_MERGE = "inpaint"
START_STATES = ("measured", "forecast")
_EPS = 1e-9


class ChunkAdmissionError(ValueError):
    """The engine cannot cover the delay the client measures (or was configured with)."""


def admit(delay: int, prefix: int, horizon: int, execute: int) -> None:
    """The admission rule: ``delay <= prefix`` and ``prefix + execute <= horizon``. Raises
    :class:`ChunkAdmissionError` with what to change."""
    if delay < 0 or prefix < 0:
        raise ChunkAdmissionError(f"delay ({delay}) and committed prefix ({prefix}) must be >= 0 ticks")
    if prefix < delay:
        raise ChunkAdmissionError(
            f"the committed prefix ({prefix} ticks) does not cover the delay ({delay} ticks): the "
            "robot would run actions the plan does not know about")
    if prefix + execute > horizon:
        raise ChunkAdmissionError(
            f"a delay of {delay} ticks plus the {execute} actions executed per plan needs "
            f"{prefix + execute} rows, but the engine plans {horizon}: use a smaller chunk "
            f"(--chunk), a faster backend, or an engine with a longer horizon")


class DelayEstimator:
    """Plan turnaround in ticks: ceil(percentile of the recent warm turnarounds / dt).

    ``fixed`` (ticks) overrides the measurement. Before any warm plan was measured the delay
    is 0 (the first plans then have no committed prefix: they are cold anyway)."""

    def __init__(self, dt: float, window: int = 50, percentile: float = 95.0,
                 fixed: int | None = None) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if window < 1 or not 0 < percentile <= 100:
            raise ValueError(f"window must be >= 1 and percentile in (0, 100], got {window}, {percentile}")
        if fixed is not None and fixed < 0:
            raise ValueError(f"a fixed delay must be >= 0 ticks, got {fixed}")
        self.dt, self.percentile, self.fixed = float(dt), float(percentile), fixed
        self.samples: deque[float] = deque(maxlen=int(window))

    def add(self, turnaround_s: float, cold: bool = False) -> None:
        """One measured turnaround (seconds); cold plans are not counted."""
        if not cold and math.isfinite(turnaround_s) and turnaround_s >= 0:
            self.samples.append(float(turnaround_s))

    def seconds(self) -> float | None:
        if not self.samples:
            return None
        return float(np.percentile(np.fromiter(self.samples, float), self.percentile))

    def ticks(self) -> int:
        if self.fixed is not None:
            return int(self.fixed)
        s = self.seconds()
        return 0 if s is None else max(0, math.ceil(s / self.dt - 1e-6))


@dataclass
class ChunkConfig:
    merge: str = DEFAULT_MERGE
    execute: int = 4  # actions executed per plan (admission; hold mode: rows run per chunk)
    replan_every: int | None = None  # at least this many ticks between observations (interval())
    start_state: str = "measured"  # or "forecast"
    blend_ticks: int = 2
    delay_window: int = 50
    delay_percentile: float = 95.0
    fixed_delay: int | None = None  # ticks; None: measured
    max_future_s: float = 0.05  # a chunk stamped further ahead than this is refused (clock skew)

    def validate(self) -> ChunkConfig:
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.start_state not in START_STATES:
            raise ValueError(f"start_state must be one of {START_STATES}, got {self.start_state!r}")
        if self.start_state == "forecast" and self.merge == "inpaint":
            raise ValueError("start_state 'forecast' plans from the forecast state with no committed "
                             "prefix: use it with merge 'aligned' (or 'blend')")
        if self.execute < 1 or self.blend_ticks < 1 or self.interval() < 1:
            raise ValueError(f"execute, replan_every and blend_ticks must be >= 1, got {self.execute}, "
                             f"{self.replan_every}, {self.blend_ticks}")
        return self

    @property
    def plans_for_delay(self) -> bool:
        """Whether the observation carries the delay: a committed prefix (``inpaint``) or a
        forecast start state."""
        return self.merge == "inpaint" or self.start_state == "forecast"

    def interval(self) -> int:
        """Policy ticks between observations: ``replan_every`` when set; else 1 (continuous:
        the next observation waits only for the previous plan) for a rule that plans for the
        delay, ``execute`` for the others."""
        if self.replan_every is not None:
            return int(self.replan_every)
        return 1 if self.plans_for_delay else self.execute


@dataclass
class _Record:
    t: float
    plan_id: int
    action: np.ndarray


@dataclass
class ChunkExecutor:
    """The chunk being executed, on the client's clock, with the rules above."""

    config: ChunkConfig = field(default_factory=ChunkConfig)
    dt: float = 0.02
    horizon: int | None = None  # rows the engine plans (None: unchecked)
    # ticks / plans kept for switch metrics and latency statistics: the newest 4096 (82 s of
    # 50 Hz ticks), so an hour-long run holds constant memory
    history: int = 4096

    def __post_init__(self) -> None:
        self.config.validate()
        self.delay = DelayEstimator(self.dt, self.config.delay_window, self.config.delay_percentile,
                                    self.config.fixed_delay)
        self.current: ActionChunk | None = None
        self.previous: ActionChunk | None = None  # the chunk before the switch (blend)
        self._switch_t: float | None = None  # when the current chunk took over
        self._last_index = -1
        self._sent: dict[int, float] = {}  # obs seq -> the time its state was measured
        self._x0: dict[int, np.ndarray] = {}  # obs seq -> the state it carried (plan start)
        self._last_send_tick: int | None = None
        self._inflight: tuple[int, float] | None = None  # (seq, sent at) awaiting its answer
        self.latencies: deque[float] = deque(maxlen=self.history)  # receipt - measured, s
        self.records: deque[_Record] = deque(maxlen=self.history)  # one per policy tick
        self.stats: dict[str, int] = {"accepted": 0, "executed": 0, "skipped": 0, "no_action": 0,
                                      "delay_over_horizon": 0}
        self.rejected: dict[str, int] = {}

    # ------------------------------------------------------------ observations out
    def prefix_ticks(self) -> int:
        """The delay to plan for now (ticks), after the admission rule; 0 when the merge does
        not use it."""
        if not self.config.plans_for_delay:
            return 0
        d = self.delay.ticks()
        if self.horizon is not None:
            try:
                admit(d, d, self.horizon, self.config.execute)
            except ChunkAdmissionError:
                self.stats["delay_over_horizon"] += 1
                raise
        return d

    def committed(self, t: float, n: int) -> np.ndarray | None:
        """The ``n`` actions that run at t, t + dt, ... if no new chunk arrived ([n, A]);
        None when there is no chunk to continue (nothing is committed then)."""
        if n <= 0 or self.current is None:
            return None
        rows = [self._row_at(t + j * self.dt) for j in range(n)]
        if any(r is None for r in rows):
            return None
        return np.stack([r for r in rows if r is not None]).astype(np.float32)

    def _planned_state(self, t: float) -> np.ndarray | None:
        """The current chunk's state for time ``t``: its start state at t0 (what was sent),
        its predicted ``states[i]`` at t0 + (i + 1) dt; None outside."""
        c = self.current
        if c is None:
            return None
        k = int(round((t - c.t0) / c.dt))
        if k == 0:
            return self._x0.get(c.obs_seq)
        if c.states is None or not 1 <= k <= len(c.states):
            return None
        return np.asarray(c.states[k - 1], np.float64)

    def forecast(self, t: float, n: int, x: np.ndarray) -> np.ndarray | None:
        """The state forecast for ``t + n dt`` from the state ``x`` measured at ``t``: ``x`` plus
        the change the current chunk predicts over those ``n`` ticks (anchored on the
        measurement, so errors of earlier forecasts do not accumulate). None when the chunk
        does not cover both times."""
        if n <= 0:
            return None
        a, b = self._planned_state(t + n * self.dt), self._planned_state(t)
        if a is None or b is None:
            return None
        return (np.asarray(x, np.float64) + (a - b)).astype(np.float32)

    def observation_plan(self, t: float, x: np.ndarray | None = None
                         ) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """What to send with the observation of state ``x`` measured at ``t``: (delay ticks,
        committed actions or None, forecast state or None). Raises ChunkAdmissionError when
        the delay cannot be covered."""
        d = self.prefix_ticks()
        if d == 0:
            return 0, None, None
        if self.config.start_state == "forecast":
            return d, None, None if x is None else self.forecast(t, d, x)
        return d, self.committed(t, d), None

    def due(self, tick: int, t: float) -> bool:
        """Whether to send an observation at policy tick ``tick`` (time ``t``)."""
        r = self.config.interval()
        if self.config.merge == "hold" or self._last_send_tick is None:
            return tick % r == 0  # the fixed schedule before real-time chunking; the first send
        if tick - self._last_send_tick < r:
            return False
        if self._inflight is not None:
            limit = ((self.horizon - self.config.execute) * self.dt if self.horizon
                     else 0.25)
            if t - self._inflight[1] < max(limit, self.dt):
                return False
            self._inflight = None  # its answer is not coming: observe again
            self.stats["unanswered"] = self.stats.get("unanswered", 0) + 1
        return True

    def sent(self, seq: int, t_measured: float, tick: int | None = None,
             state: np.ndarray | None = None) -> None:
        """Record an observation sent: when its state was measured (for turnaround), at which
        policy tick (for ``due``) and the state it carried (its plan's start, for forecasts)."""
        self._sent[seq] = t_measured
        if state is not None:
            self._x0[seq] = np.asarray(state, np.float64)
        self._inflight = (seq, t_measured)
        if tick is not None:
            self._last_send_tick = tick
        for table in (self._sent, self._x0):
            if len(table) > 256:  # answers that never came: forget the oldest
                for k in sorted(table)[:-128]:
                    del table[k]

    # ------------------------------------------------------------ chunks in
    def offer(self, chunk: ActionChunk, now: float, next_seq: int | None = None,
              action_dim: int | None = None) -> bool:
        """Adopt ``chunk`` unless a rule refuses it (the reason is counted in ``rejected``)."""
        if self._inflight is not None and isinstance(chunk.obs_seq, int) and chunk.obs_seq >= self._inflight[0]:
            self._inflight = None  # answered (even if refused below)
        a = np.asarray(chunk.actions)
        if a.ndim != 2 or a.shape[0] < 1 or (action_dim is not None and a.shape[1] != action_dim):
            return self._reject("bad_shape")
        if not np.all(np.isfinite(a)):
            return self._reject("non_finite")
        if not (math.isfinite(chunk.t0) and math.isfinite(chunk.dt) and chunk.dt > 0):
            return self._reject("bad_timing")
        if next_seq is not None and chunk.obs_seq >= next_seq:
            return self._reject("unknown_seq")
        cur = self.current
        if cur is not None and (chunk.obs_seq, chunk.plan_id) <= (cur.obs_seq, cur.plan_id):
            return self._reject("older_than_current")
        if chunk.t0 > now + self.config.max_future_s + self.delay_span(chunk):
            return self._reject("from_future")
        if chunk.expired(now):
            return self._reject("expired")
        if self.config.merge != "replace" and chunk.index_at(now) is None and chunk.t0 <= now:
            return self._reject("no_action_for_now")
        rx = chunk.received_at if chunk.received_at is not None else now
        t_meas = self._sent.pop(chunk.obs_seq, None)
        for k in [k for k in self._x0 if k < chunk.obs_seq]:
            del self._x0[k]  # older plans' start states are not needed any more
        turnaround = rx - (t_meas if t_meas is not None else chunk.t0)
        self.latencies.append(turnaround)
        self.delay.add(turnaround, cold=bool(chunk.cold))
        self.previous, self.current = cur, chunk
        self._switch_t = now
        self._last_index = -1
        self.stats["accepted"] += 1
        return True

    def delay_span(self, chunk: ActionChunk) -> float:
        """How far ahead of its receipt a chunk may legitimately start: a forecast plan is
        stamped for the tick its first action runs (up to the horizon ahead)."""
        if self.config.start_state != "forecast":
            return 0.0
        return (self.horizon or len(chunk.actions)) * chunk.dt

    def _reject(self, reason: str) -> bool:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return False

    # ------------------------------------------------------------ actions out
    def _index(self, c: ActionChunk, t: float, switch_t: float | None) -> int | None:
        if self.config.merge == "replace" and c is self.current and switch_t is not None:
            i = int((t - switch_t) / c.dt + _EPS)  # row 0 at adoption, whatever its age
        else:
            if t < c.t0 - _EPS:  # a forecast plan before its start: nothing yet
                return None
            i = int((t - c.t0) / c.dt + _EPS)
        last = len(c.actions) - 1
        if self.config.merge == "hold":
            last = min(last, self.config.execute - 1)
        return max(0, min(i, last))

    def _row_at(self, t: float) -> np.ndarray | None:
        c = self.current
        if c is None or c.expired(t):
            return None
        i = self._index(c, t, self._switch_t)
        return None if i is None else np.asarray(c.actions[i])

    def action(self, t: float) -> np.ndarray | None:
        """The action that applies at ``t``; None when there is none (no chunk, expired, or a
        forecast plan not started and nothing before it): the caller's watchdog decides."""
        c = self.current
        if c is not None and c.expired(t):
            self.current = None
            c = None
        if c is None:
            self.stats["no_action"] += 1
            return None
        i = self._index(c, t, self._switch_t)
        if i is None:  # the new plan starts later: keep the previous one until then
            p = self.previous
            if p is None or p.expired(t):
                self.stats["no_action"] += 1
                return None
            j = self._index(p, t, None)
            return None if j is None else np.asarray(p.actions[j])
        if i > self._last_index:
            # actions whose slot passed before they could run are skipped, not replayed
            self.stats["skipped"] += max(0, i - self._last_index - 1) if self._last_index >= 0 else i
            self.stats["executed"] += 1
            self._last_index = i
        a = np.asarray(c.actions[i])
        if self.config.merge == "blend" and self.previous is not None and self._switch_t is not None:
            k = int((t - self._switch_t) / self.dt + _EPS)
            m = self.config.blend_ticks
            p = self.previous
            if k < m and not p.expired(t):
                j = self._index(p, t, None)
                if j is not None:
                    w = (k + 1) / (m + 1)
                    a = w * a + (1 - w) * np.asarray(p.actions[j])
        return a

    def plan_age(self, t: float) -> float | None:
        """Seconds since the current plan's stamp (None: no plan)."""
        return None if self.current is None else t - self.current.t0

    # ------------------------------------------------------------ measurement
    def record(self, t: float, action: np.ndarray | None) -> None:
        """The action executed at the policy tick at ``t`` (call once per tick): switch metrics."""
        if action is not None and self.current is not None:
            self.records.append(_Record(t, self.current.plan_id, np.asarray(action, np.float64).copy()))

    def latency_stats(self) -> dict[str, float]:
        """Median / p99 / max of measured -> received turnaround in ms (empty if none)."""
        return summary(self.latencies, scale=1e3, suffix="_ms")

    def switch_metrics(self, scale: Any = 1.0) -> dict[str, float | None]:
        """Over the newest ``history`` recorded ticks (actions times ``scale``: joint-target units on the Go2):
        the largest and mean jump at chunk switches, the largest jump between other ticks, and
        the RMS jerk (third difference / dt^3, per joint)."""
        return switch_metrics([r.plan_id for r in self.records], [r.action for r in self.records],
                              self.dt, scale)


def switch_metrics(plan_ids: list[int], actions: list[np.ndarray], dt: float,
                   scale: Any = 1.0) -> dict[str, float | None]:
    """See :meth:`ChunkExecutor.switch_metrics`; consecutive records are one tick apart."""
    out: dict[str, float | None] = {"switch_jump_max": None, "switch_jump_mean": None,
                                    "step_jump_max": None, "step_jump_mean": None, "jerk_rms": None,
                                    "switches": 0}
    if len(actions) < 2:
        return out
    q = np.asarray(actions, np.float64) * np.asarray(scale, np.float64)
    jumps = np.abs(np.diff(q, axis=0)).max(axis=1)
    ids = np.asarray(plan_ids)
    sw = ids[1:] != ids[:-1]
    if sw.any():
        out["switch_jump_max"] = float(jumps[sw].max())
        out["switch_jump_mean"] = float(jumps[sw].mean())
        out["switches"] = int(sw.sum())
    if (~sw).any():
        out["step_jump_max"] = float(jumps[~sw].max())
        out["step_jump_mean"] = float(jumps[~sw].mean())
    if len(q) >= 4:
        jerk = np.diff(q, n=3, axis=0) / dt ** 3
        out["jerk_rms"] = float(np.sqrt(np.mean(jerk ** 2)))
    return out


def add_chunking_arguments(p: Any) -> None:
    """The chunk-rule options of every command that executes chunks (controller, eval, demo)."""
    p.add_argument("--merge", choices=MERGES, default=None,
                   help=f"how a late chunk takes over (planner_runtime.chunking; default: "
                        f"{DEFAULT_MERGE} when the engine holds a committed prefix, else aligned; "
                        "hold = the behaviour before real-time chunking)")
    p.add_argument("--start-state", choices=START_STATES, default="measured",
                   help="plan from the measured state (default) or from the current chunk's "
                        "forecast for the tick the new plan starts (with --merge aligned/blend)")
    p.add_argument("--replan-every", type=int, default=None, metavar="N",
                   help="at least N policy ticks between observations (default: 1 with --merge "
                        "inpaint or --start-state forecast, i.e. as soon as the previous plan is "
                        "answered; the chunk size otherwise); except with --merge hold, the next "
                        "observation also waits for the previous one's plan")
    p.add_argument("--delay-ticks", type=int, default=None, metavar="N",
                   help="plan for this delay in policy ticks instead of the measured turnaround "
                        "(95th percentile of the last 50 warm plans)")
