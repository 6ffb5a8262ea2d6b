"""A real-time run's timing, replayed in lockstep evaluation.

The real-time demo (``planner-runtime demo``; the controller's ``--timing-out``) records two
things the lockstep harness otherwise draws or ignores: each accepted plan's turnaround
(receipt minus the measurement of the state it was planned from) in order, and the wall
period of every 500 Hz loop iteration. ``planner-runtime eval --timing-trace RUN`` replays
both from the start of planning, deterministically:

* plan ``i`` of an episode is released ``turnaround[i]`` after its observation (the
  sequence cycles when an episode outlasts it), instead of a latency drawn independently per
  plan (``--latency LO HI``): bursts of late plans stay bursts;
* the simulated robot advances between two controller iterations by the recorded wall period,
  rounded to whole 2 ms physics steps on the cumulative clock (so no time is lost to rounding):
  an iteration that ran 10 ms late holds the previous motor command for 10 ms, as the robot's
  firmware does, and the iterations after it share physics steps, as a loop catching up does.

What is not replayed: the state's age at the controller (the stand-in's own stalls under load;
a real robot's state is never late by the simulator's CPU), and the order of events inside one
2 ms step.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "timing.npz"  # the name a demo run writes (sim/demo.py)
KEYS = ("period_s", "period_tick0", "turnaround_s", "planning_tick", "control_dt")


class TimingTraceError(ValueError):
    """A timing trace that cannot be replayed (missing, malformed, no planning)."""


@dataclass(frozen=True)
class TimingTrace:
    periods: np.ndarray  # wall periods of the loop iterations after planning began (s)
    turnarounds: np.ndarray  # plan turnarounds in order (s)
    control_dt: float
    source: str

    def tick_steps(self, physics_dt: float) -> Iterator[int]:
        """Physics steps to advance after each controller iteration (0, 1, 2, ...), cycling
        over the recorded periods: the cumulative wall time rounded to whole steps."""
        total, done = 0.0, 0
        while True:
            for p in self.periods:
                total += float(p)
                n = int(round(total / physics_dt))
                yield n - done
                done = n

    def summary(self) -> dict:
        """What the trace holds, for a report: ms medians / p99 and counts."""
        err = np.abs(self.periods - self.control_dt) * 1e3
        return {"source": self.source, "plans": int(self.turnarounds.size),
                "turnaround_ms_median": float(np.median(self.turnarounds) * 1e3),
                "turnaround_ms_p99": float(np.percentile(self.turnarounds, 99) * 1e3),
                "loop_iterations": int(self.periods.size),
                "period_error_ms_p99": float(np.percentile(err, 99)),
                "period_ms_max": float(self.periods.max() * 1e3)}


def load_timing_trace(path: str | Path) -> TimingTrace:
    """The trace of a demo run folder (its ``timing.npz``) or of an NPZ the controller wrote
    with ``--timing-out``; the loop periods from the iteration planning began. Raises
    :class:`TimingTraceError` with what is wrong. Read once per file version (evaluation
    replays it in every episode)."""
    p = Path(path)
    f = p / FILE if p.is_dir() else p
    return _load(str(p), f.stat().st_mtime_ns if f.is_file() else None)


@functools.lru_cache(maxsize=8)
def _load(path: str, _version: int | None) -> TimingTrace:
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    if not p.is_file():
        raise TimingTraceError(f"timing trace not found: {p} (a demo run folder holds {FILE}; "
                               "the controller writes one with --timing-out)")
    try:
        with np.load(p) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise TimingTraceError(f"{p}: not a controller timing trace (missing {', '.join(missing)})")
            a = {k: np.asarray(z[k], np.float64) for k in KEYS}
    except (OSError, ValueError) as exc:
        if isinstance(exc, TimingTraceError):
            raise
        raise TimingTraceError(f"{p}: cannot read a timing trace: {exc}") from exc
    per, tat = a["period_s"].reshape(-1), a["turnaround_s"].reshape(-1)
    dt = float(a["control_dt"])
    for name, v in (("period_s", per), ("turnaround_s", tat)):
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise TimingTraceError(f"{p}: {name} holds non-finite or negative values")
    if not (np.isfinite(dt) and dt > 0):
        raise TimingTraceError(f"{p}: control_dt {dt} is not a period")
    plan_tick, tick0 = int(a["planning_tick"]), int(a["period_tick0"])
    if plan_tick < 0:
        raise TimingTraceError(f"{p}: the run never reached planning: nothing to replay")
    # period_s[j] is the period that ended at loop iteration tick0 + j
    start = max(0, plan_tick + 1 - tick0)
    per = per[start:]
    if per.size == 0 or tat.size == 0:
        raise TimingTraceError(f"{p}: no loop periods or no plans after planning began")
    if per.sum() <= 0:
        raise TimingTraceError(f"{p}: the loop periods sum to zero")
    return TimingTrace(per, tat, dt, str(p))
