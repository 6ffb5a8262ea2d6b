"""Benchmark of what ``controller --record`` costs the control loop: the time of recording one
policy tick (a sample and its executed action, ``ClosedLoopRecorder``) in memory alone and
with the crash journal beside it, over as many ticks as an hour's run has (50 Hz), and the
journal's size. The loop runs every 2 ms; a recorder whose appends stall it would show here
as a max or p99.99 in milliseconds. The ticks run back to back: the worst case for the
journal, whose writer thread gets the interpreter only by preempting the timed appends (the
loop leaves it most of each 2 ms period).

    python -m robot.bench_record                  # 180,000 ticks (an hour), both variants
    python -m robot.bench_record --ticks 20000 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from planner_runtime.bench.stats import summary
from robot.observation import ACTION_DIM, STATE_DIM
from robot.recording import ClosedLoopRecorder, RecordJournal


def measure(ticks: int, journal: Path | None) -> dict:
    """Per-tick recording time (µs) over ``ticks`` policy ticks; the journal's bytes a tick."""
    j = RecordJournal(journal, STATE_DIM, ACTION_DIM, 0.0, 0.02, {}, {}) if journal is not None else None
    rec = ClosedLoopRecorder(journal=j)
    rng = np.random.default_rng(0)
    x, cmd, v, a = rng.normal(size=STATE_DIM), np.array([0.5, 0.0, 0.0]), rng.normal(size=3), rng.normal(size=ACTION_DIM)
    times = np.empty(ticks)
    clock = time.perf_counter
    for k in range(ticks):
        t = 0.02 * k
        t0 = clock()
        rec.sample(t, x, cmd, v, tick=k)
        rec.executed([SimpleNamespace(t=t, action=a)])
        times[k] = clock() - t0
    out: dict = summary(times, scale=1e6, suffix="_us", digits=1)
    out["p99_99_us"] = round(float(np.percentile(times, 99.99) * 1e6), 1)
    if j is not None:
        j.close()
        out["journal_bytes_per_tick"] = round(j.path.stat().st_size / ticks, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot.bench_record", description=__doc__.split("\n\n")[0])
    p.add_argument("--ticks", type=int, default=180_000, help="policy ticks per variant (50 Hz: 180,000 an hour)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.ticks < 2:
        p.error("--ticks must be at least 2")
    with tempfile.TemporaryDirectory() as d:
        res = {"ticks": args.ticks, "memory": measure(args.ticks, None),
               "memory_and_journal": measure(args.ticks, Path(d) / "run.h5.journal")}
    if args.json:
        print(json.dumps(res))
    else:
        for name in ("memory", "memory_and_journal"):
            r = res[name]
            extra = f", journal {r['journal_bytes_per_tick']} B a tick" if "journal_bytes_per_tick" in r else ""
            print(f"{name:20s} per tick: median {r['median_us']} µs, p99 {r['p99_us']} µs, "
                  f"p99.99 {r['p99_99_us']} µs, max {r['max_us']} µs{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
