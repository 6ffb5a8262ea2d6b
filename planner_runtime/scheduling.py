"""Scheduling of the onboard processes: CPU pinning (``serve --cpus``, ``controller --cpus``)
and real-time priority (Linux SCHED_FIFO: ``controller --rt-priority``, ``serve
--rt-priority``), best effort.

On a loaded CPU a normal-priority Python loop misses deadlines by tens of milliseconds; under
SCHED_FIFO the controller keeps its 2 ms period (measured: robot.bench_loop). On the robot's
computer the 500 Hz controller and the planner service belong on cores of their own: a
real-time loop on a core the planner shares preempts the planner whenever it runs, and a
planner starved that way answers too late to be used (docs/realtime.md). Pin and set the
priority before starting threads (ONNX Runtime's, DDS's): threads inherit both. SCHED_FIFO
needs root or CAP_SYS_NICE; without it, ``set_realtime`` says so.
"""

from __future__ import annotations

import argparse
import os

PRIORITIES = range(1, 100)  # the SCHED_FIFO priorities Linux accepts


def check_priority(priority: int) -> int:
    """``priority`` as an int, or ValueError with the reason outside 1..99."""
    if int(priority) not in PRIORITIES:
        raise ValueError(f"SCHED_FIFO priority must be in 1..99, got {priority}")
    return int(priority)


def priority_arg(text: str) -> int:
    """argparse ``type`` of a SCHED_FIFO priority option: refused at parse time (exit 2, the
    reason in the usage error), never ignored or turned into a traceback later."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    try:
        return check_priority(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def set_realtime(priority: int) -> str:
    """Switch this process to SCHED_FIFO at ``priority`` (1-99); returns what happened."""
    check_priority(priority)
    if not hasattr(os, "sched_setscheduler"):
        return "not available on this platform"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError) as exc:
        return f"not permitted ({exc}); running at normal priority"
    return f"SCHED_FIFO priority {int(priority)}"


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
