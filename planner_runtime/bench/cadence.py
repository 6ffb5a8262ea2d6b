"""Plan latency of one engine at the robot's cadence (torch-free).

The sampler benchmark (``planner-runtime bench --what sampler``) calls its variants back to
back. The service does not: it plans once per chunk (80 ms for the Go2's 4 actions at 50 Hz)
and sleeps in between, and on a machine whose idle cores clock down or get descheduled the
first call after a sleep is slower. ``cadence_bench`` measures the same engine three ways in
one run, rounds alternating so load hits all alike:

- ``back_to_back``: call after call;
- ``paced_sleep``: one call per period, sleeping in between (what the service does);
- ``paced_spin``: one call per period, busy-waiting in between (a core kept awake).

``planner-runtime bench --what cadence [--engine E]`` runs it (default engine: the sampler
section's fused graph, else the embedded default).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.bench.stats import summary

MODES = ("back_to_back", "paced_sleep", "paced_spin")


def cadence_bench(engine_path: str | Path, n: int = 300, period_s: float | None = None,
                  rounds: int = 6, threads: int | None = 1, provider: str | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """Latency of ``engine.plan`` (warm levels) back to back, paced with sleep, paced with spin.

    ``n`` calls per mode in ``rounds`` alternating blocks; ``period_s`` defaults to the
    manifest's chunk period (chunk_size * dt). Returns a plain dict (ms)."""
    from planner_runtime.backends import load_engine

    eng = load_engine(engine_path, provider=provider, threads=threads)
    try:
        m = eng.manifest
        if period_s is None:
            period_s = float(m.control.chunk_size) * float(m.control.dt)
        if period_s <= 0 or n < rounds or rounds < 1:
            raise ValueError(f"need period_s > 0 and n >= rounds >= 1, got {period_s}, {n}, {rounds}")
        B, H, D, S, C = eng.B, eng.H, eng.D, eng.S, eng.C
        rng = np.random.default_rng(seed)
        x0 = (0.1 * rng.standard_normal((B, S))).astype(np.float32)
        cond = np.zeros((B, C), np.float32)
        prev = (0.1 * rng.standard_normal((B, H, D))).astype(np.float32)
        noise = (0.3 * rng.standard_normal((B, H, D))).astype(np.float32)
        levels = eng.default_levels(warm=True)
        for _ in range(5):
            eng.plan(x0, cond, prev, noise, levels)
        samples: dict[str, list[float]] = {k: [] for k in MODES}
        gaps: dict[str, list[float]] = {k: [] for k in MODES}
        per = n // rounds
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else reversed(MODES):
                for _ in range(per):
                    t_gap = time.perf_counter()
                    if mode == "paced_sleep":
                        time.sleep(period_s)
                    elif mode == "paced_spin":
                        end = t_gap + period_s
                        while time.perf_counter() < end:
                            pass
                    t0 = time.perf_counter()
                    eng.plan(x0, cond, prev, noise, levels)
                    t1 = time.perf_counter()
                    samples[mode].append((t1 - t0) * 1e3)
                    gaps[mode].append((t0 - t_gap) * 1e3)
    finally:
        eng.close()
    out: dict[str, Any] = {"engine": str(engine_path), "period_ms": round(period_s * 1e3, 3), "threads": threads,
           "rounds": rounds, **{k: summary(v, suffix="_ms", digits=3) for k, v in samples.items()},
           "gap_ms_median": {k: summary(v, digits=3)["median"] for k, v in gaps.items()},
           "samples_ms": samples}
    out["paced_sleep_over_back_to_back_median"] = round(
        out["paced_sleep"]["median_ms"] / out["back_to_back"]["median_ms"], 3)
    return out
