"""CPU pinning for the onboard processes (``serve --cpus``, ``controller --cpus``).

On the robot's computer the 500 Hz controller and the planner service belong on cores of
their own: a real-time loop on a core the planner shares preempts the planner whenever it
runs, and a planner starved that way answers too late to be used (docs/realtime.md). Pin
before starting threads (ONNX Runtime's, DDS's): threads inherit the process's CPU set.
"""

from __future__ import annotations

import os


def parse_cpus(text: str | None) -> set[int] | None:
    """"0,2" -> {0, 2}; None or "" -> None (no pinning). Refuses CPUs this process may not use."""
    if not text:
        return None
    try:
        cpus = {int(c) for c in str(text).split(",") if c.strip()}
    except ValueError as exc:
        raise ValueError(f"CPU list must be comma-separated integers, got {text!r}") from exc
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise ValueError(f"CPUs {sorted(cpus)} not all available (allowed: {sorted(allowed)})")
    return cpus


def pin_cpus(text: str | None) -> set[int] | None:
    """Pin this process to the CPUs in ``text`` (``parse_cpus``); None leaves it as it is.
    Returns the CPU set the process then runs on, or None when not pinned."""
    cpus = parse_cpus(text)
    if cpus is None:
        return None
    os.sched_setaffinity(0, cpus)
    return set(os.sched_getaffinity(0))
