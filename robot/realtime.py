"""Real-time scheduling for the 500 Hz loop (Linux SCHED_FIFO), best effort.

On a loaded CPU a normal-priority Python loop misses deadlines by tens of milliseconds; under
SCHED_FIFO it keeps its 2 ms period (measured: robot.bench_loop). Call before starting DDS
so its threads inherit the policy. Needs root or CAP_SYS_NICE; without it, says so.
"""

from __future__ import annotations

import os

PRIORITIES = range(1, 100)  # the SCHED_FIFO priorities Linux accepts


def set_realtime(priority: int) -> str:
    """Switch this process to SCHED_FIFO at ``priority`` (1-99); returns what happened."""
    if int(priority) not in PRIORITIES:
        raise ValueError(f"SCHED_FIFO priority must be in 1..99, got {priority}")
    if not hasattr(os, "sched_setscheduler"):
        return "not available on this platform"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError) as exc:
        return f"not permitted ({exc}); running at normal priority"
    return f"SCHED_FIFO priority {int(priority)}"
