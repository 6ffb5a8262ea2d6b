"""The bench's confidence interval for "end-to-end p99 within 1 ms of the sampler's p99"
(``bench_service.p99_gap_ci``): a paired block bootstrap over the alternating blocks."""

from __future__ import annotations

import numpy as np
import pytest

from planner_runtime.bench_service import p99_gap_ci


def engine_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Engine times with a heavy right tail (lognormal around 5 ms)."""
    return 5.0 * rng.lognormal(0.0, 0.2, n)


def test_a_clear_gap_is_bracketed_and_judged():
    rng = np.random.default_rng(1)
    s = engine_like(rng, 2000)
    for shift, verdict in ((0.3, "met"), (2.5, "missed")):
        e = engine_like(rng, 2000) + shift
        g = p99_gap_ci(e, s, block=25)
        lo, hi = g["ci"]
        assert lo <= g["gap_ms"] <= hi
        assert lo < shift < hi  # the true gap (same distributions, shifted) is inside
        assert g["verdict"] == verdict and g["n_blocks"] == 80


def test_a_gap_near_the_goal_is_undetermined_and_more_readings_narrow_it():
    rng = np.random.default_rng(2)
    widths = []
    for n in (500, 8000):
        g = p99_gap_ci(engine_like(rng, n) + 1.0, engine_like(rng, n), block=25, seed=3)
        lo, hi = g["ci"]
        widths.append(hi - lo)
        assert lo < 1.0 < hi and g["verdict"] == "undetermined"
    assert widths[1] < 0.5 * widths[0]


def test_blocks_stay_paired_so_shared_drift_cancels():
    # The machine slows down by 3 ms in about one block in ten, for both readings alike
    # (same blocks): the p99s sit in those blocks, and a resample that draws more of them
    # moves both p99s together only when the pairing is kept.
    rng = np.random.default_rng(4)
    n, block = 2000, 25
    drift = np.repeat(rng.uniform(0.0, 1.0, n // block) < 0.1, block) * 3.0
    s = engine_like(rng, n) + drift
    e = engine_like(rng, n) + drift + 0.5
    paired = p99_gap_ci(e, s, block=block)
    # The same readings with the blocks' pairing broken: one array's blocks shuffled.
    order = rng.permutation(n // block)
    e_unpaired = e.reshape(-1, block)[order].ravel()
    unpaired = p99_gap_ci(e_unpaired, s, block=block)
    assert paired["gap_ms"] == pytest.approx(unpaired["gap_ms"])  # point estimate: same readings
    w_p = paired["ci"][1] - paired["ci"][0]
    w_u = unpaired["ci"][1] - unpaired["ci"][0]
    assert w_p < 0.7 * w_u


def test_seeded_reproducible_and_bad_input_refused():
    rng = np.random.default_rng(5)
    e, s = engine_like(rng, 1000), engine_like(rng, 1000)
    assert p99_gap_ci(e, s, seed=7) == p99_gap_ci(e, s, seed=7)
    few = p99_gap_ci(e[:30], s[:30], block=25)  # one whole block: nothing to resample
    assert few["ci"] is None and few["verdict"] == "undetermined" and few["n_blocks"] == 1
    with pytest.raises(ValueError, match="finite"):
        p99_gap_ci(np.r_[e[:-1], np.nan], s)
    with pytest.raises(ValueError, match="both"):
        p99_gap_ci([], s)
    with pytest.raises(ValueError, match="bootstrap settings"):
        p99_gap_ci(e, s, block=0)


def test_goal_limited_by_names_the_machine_only_when_the_bare_floor_misses_too():
    from planner_runtime.bench_service import GOAL_LIMITS, goal_limited_by

    def v(verdict):
        return {"verdict": verdict}

    # the floor (bare one-thread server, same plan, same blocks) missing = the machine's limit
    assert goal_limited_by(v("missed"), v("missed")) == "machine"
    assert goal_limited_by(v("undetermined"), v("missed")) == "machine"
    # the floor meets it and the service is not shown to: the service's own work
    assert goal_limited_by(v("missed"), v("met")) == "service"
    assert goal_limited_by(v("undetermined"), v("met")) == "service"
    # met, or the floor cannot tell, or no floor ran: nobody is named
    for s in ("met", "missed", "undetermined"):
        assert goal_limited_by(v(s), v("undetermined")) is None
        assert goal_limited_by(v(s), None) is None
    assert goal_limited_by(v("met"), v("missed")) is None
    assert set(GOAL_LIMITS) == {"machine", "service"}


def test_goal_limited_by_follows_the_intervals_of_real_readings():
    """End to end through p99_gap_ci: a floor 0.2 ms over the sampler and a service 2.5 ms
    over it give "service"; a floor that is itself 2.5 ms over gives "machine"."""
    from planner_runtime.bench_service import goal_limited_by

    rng = np.random.default_rng(7)
    s = engine_like(rng, 4000)
    floor_ok = p99_gap_ci(engine_like(rng, 4000) + 0.2, s)
    floor_bad = p99_gap_ci(engine_like(rng, 4000) + 2.5, s)
    service_bad = p99_gap_ci(engine_like(rng, 4000) + 2.5, s)
    assert (floor_ok["verdict"], floor_bad["verdict"], service_bad["verdict"]) == ("met", "missed", "missed")
    assert goal_limited_by(service_bad, floor_ok) == "service"
    assert goal_limited_by(service_bad, floor_bad) == "machine"
