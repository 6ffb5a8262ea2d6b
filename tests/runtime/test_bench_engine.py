"""The cadence benchmark: the same engine back to back vs paced at the chunk period."""

from __future__ import annotations

import pytest

from planner_runtime.backends import load_engine
from planner_runtime.bench_engine import MODES, cadence_bench


def test_cadence_bench_paces_each_mode_and_reports_every_call(engine_path):
    rep = cadence_bench(engine_path, n=12, period_s=0.01, rounds=2)
    for mode in MODES:
        assert rep[mode]["n"] == 12 and len(rep["samples_ms"][mode]) == 12
        assert 0 < rep[mode]["median_ms"] <= rep[mode]["max_ms"]
    # the paced modes really waited a period before each call; back to back did not
    assert rep["gap_ms_median"]["paced_sleep"] >= 10.0
    assert rep["gap_ms_median"]["paced_spin"] >= 10.0
    assert rep["gap_ms_median"]["back_to_back"] < 5.0
    assert rep["period_ms"] == 10.0


def test_cadence_period_defaults_to_the_chunk_period_and_bad_arguments_are_refused(engine_path):
    m = load_engine(engine_path).manifest
    rep = cadence_bench(engine_path, n=2, rounds=1)
    assert rep["period_ms"] == pytest.approx(m["control"]["chunk_size"] * m["control"]["dt"] * 1e3)
    with pytest.raises(ValueError, match="rounds"):
        cadence_bench(engine_path, n=1, rounds=2)
    with pytest.raises(ValueError, match="period_s"):
        cadence_bench(engine_path, n=4, period_s=0.0)
