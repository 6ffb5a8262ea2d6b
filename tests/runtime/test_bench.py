"""The onboard benchmarks (``planner_runtime.bench``): the one statistics helper, the cadence
bench, the service bench's confidence interval for "end-to-end p99 within 1 ms of the
sampler's p99" (a paired block bootstrap over the alternating blocks), and the service
bench itself against a real ``serve`` subprocess, also through ``planner-runtime bench``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner_runtime.backends import load_engine
from planner_runtime.bench.cadence import MODES, cadence_bench
from planner_runtime.bench.service import GOAL_LIMITS, goal_limited_by, p99_gap_ci
from planner_runtime.bench.stats import histogram_png, summary, tail_bursts


def test_summary_gives_n_median_p99_mean_min_max_scaled_and_renamed():
    s = summary(np.arange(1, 101, dtype=float))
    assert s == {"n": 100, "median": 50.5, "p99": pytest.approx(99.01), "mean": 50.5, "min": 1.0, "max": 100.0}
    # seconds in, ms out, with the key suffix and rounding the bench reports use
    ms = summary([0.001, 0.002, 0.0040004], scale=1e3, suffix="_ms", digits=3)
    assert ms == {"n": 3, "median_ms": 2.0, "p99_ms": 3.96, "mean_ms": 2.333, "min_ms": 1.0, "max_ms": 4.0}
    # generators and deques work as arrays do; NaN readings (not measured) are left out
    assert summary(x for x in (3.0, float("nan"), 1.0)) == summary([1.0, 3.0]) and summary([1.0, 3.0])["n"] == 2
    assert summary([]) == {} and summary([float("nan")]) == {}


def test_tail_bursts_tells_slow_runs_from_scattered_slow_readings():
    rng = np.random.default_rng(0)
    base = 5.0 + 0.1 * rng.random(3000)
    slow = 20.0 + rng.random(60)
    scattered = base.copy()
    scattered[np.arange(15, 3000, 50)] = slow  # 60 slow readings (2%), none next to another
    bursty = base.copy()
    bursty[1000:1060] = slow  # the same 60, in one run
    s, b = tail_bursts(scattered), tail_bursts(bursty)
    assert s["neighbour_share"] == 0.0 and b["neighbour_share"] > 0.5
    assert s["chance"] == pytest.approx(0.02, abs=0.005)
    # a window holding the burst has a slow median; the scattered series never does
    assert b["window_median_max"] > 10.0 > s["window_median_max"]
    assert s["window_median_min"] >= 5.0 and s["window"] == 100
    assert tail_bursts(base[:150]) == {}  # too few readings to say


def test_histogram_png_labels_every_series_and_skips_empty_ones(tmp_path):
    pytest.importorskip("matplotlib")
    png = histogram_png({"a": [1.0, 2.0, 3.0], "b": []}, tmp_path / "sub" / "h.png", "t", target=2.0)
    assert png == str(tmp_path / "sub" / "h.png") and (tmp_path / "sub" / "h.png").stat().st_size > 0
    assert histogram_png({"b": []}, tmp_path / "none.png", "t") is None
    assert not (tmp_path / "none.png").exists()


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
    assert rep["period_ms"] == pytest.approx(m.control.chunk_size * m.control.dt * 1e3)
    with pytest.raises(ValueError, match="rounds"):
        cadence_bench(engine_path, n=1, rounds=2)
    with pytest.raises(ValueError, match="period_s"):
        cadence_bench(engine_path, n=4, period_s=0.0)


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
    rng = np.random.default_rng(7)
    s = engine_like(rng, 4000)
    floor_ok = p99_gap_ci(engine_like(rng, 4000) + 0.2, s)
    floor_bad = p99_gap_ci(engine_like(rng, 4000) + 2.5, s)
    service_bad = p99_gap_ci(engine_like(rng, 4000) + 2.5, s)
    assert (floor_ok["verdict"], floor_bad["verdict"], service_bad["verdict"]) == ("met", "missed", "missed")
    assert goal_limited_by(service_bad, floor_ok) == "service"
    assert goal_limited_by(service_bad, floor_bad) == "machine"


def test_run_bench_reports_latency_memory_and_cpu(engine_path, tmp_path):
    from planner_runtime.bench.service import format_report, run_bench

    png = tmp_path / "hist.png"
    r = run_bench(engine_path, n=20, warmup=3, histogram=png)
    svc = r["service"]
    assert svc["returncode"] == 0 and svc["plans"] == 23 and svc["torch_loaded"] is False
    assert svc["e2e_ms"]["n"] == 20 and r["sampler"]["infer_ms"]["n"] == 20
    assert svc["e2e_ms"]["median"] >= svc["service_infer_ms"]["median"] > 0
    assert svc["memory_mb"]["VmRSS"] > 0 and svc["cpu_percent_busy"] >= 0
    assert isinstance(r["goal_e2e_p99_within_1ms"], bool) and isinstance(r["goal_rss_le_300mb"], bool)
    # the goal is judged against the sampler-only reading of the same run
    assert r["goal_e2e_p99_within_1ms"] == (r["e2e_minus_sampler_p99_ms"] <= 1.0)
    assert r["e2e_minus_sampler_p99_ms"] == pytest.approx(svc["e2e_ms"]["p99"] - r["sampler"]["infer_ms"]["p99"])
    assert "blocks" in r["sampler"]["mode"]
    split = svc["overhead_split_ms"]
    assert split["outside_planner_thread"]["n"] == 20 and split["post_median"] >= 0
    assert svc["overhead_ms"]["median"] > 0  # e2e minus the same request's engine time
    # CPU waits (schedstat) per request and per sampler plan
    assert svc["runqueue_wait_ms"]["n"] == 20 and r["sampler"]["runqueue_wait_ms"]["n"] == 20
    assert svc["runqueue_wait_off_engine_ms"]["max"] <= svc["runqueue_wait_ms"]["max"] + 1e-9
    if r.get("histogram"):
        assert png.stat().st_size > 0
    # the floor baseline ran in the same blocks: a bare ZeroMQ server around the same plan
    fl = r["floor"]
    assert fl["e2e_ms"]["n"] == 20 and fl["infer_ms"]["n"] == 20 and fl["chunk_bytes"] > 0
    assert fl["e2e_ms"]["median"] > fl["infer_ms"]["median"] > 0
    assert fl["e2e_minus_sampler_p99_ms"] == pytest.approx(fl["e2e_ms"]["p99"] - r["sampler"]["infer_ms"]["p99"])
    # how sure the run is of the goal: a paired block-bootstrap interval around the same gap
    for g, gap in ((r["goal_e2e_p99_ci"], r["e2e_minus_sampler_p99_ms"]),
                   (fl["goal_e2e_p99_ci"], fl["e2e_minus_sampler_p99_ms"])):
        assert g["gap_ms"] == pytest.approx(gap) and g["block"] == 25 and g["n_blocks"] == 0
        assert g["ci"] is None and g["verdict"] == "undetermined"  # 20 requests: no whole block of 25
    assert "goal_limited_by" in r and r["goal_limited_by"] is None  # neither verdict known: nobody named
    ratio = r["overhead_vs_floor"]
    assert ratio["median_ratio"] == pytest.approx(svc["overhead_ms"]["median"] / fl["overhead_ms"]["median"])
    assert ratio["p99_excess_ms"] == pytest.approx(svc["overhead_ms"]["p99"] - fl["overhead_ms"]["p99"])
    # what `planner-runtime bench --what service` prints: the same numbers, one line each
    text = format_report(r).splitlines()
    e2e_line = next(x for x in text if x.startswith("end-to-end"))
    assert f"median {svc['e2e_ms']['median']:.3f} ms  p99 {svc['e2e_ms']['p99']:.3f} ms" in e2e_line
    assert any(x.startswith("floor ") for x in text) and any(x.startswith("goal ") for x in text)


def test_run_bench_pins_service_and_client_and_restores_the_client(engine_path):
    import os

    from planner_runtime.bench.service import run_bench
    from planner_runtime.scheduling import parse_cpus

    before = os.sched_getaffinity(0)
    cpu = min(before)
    r = run_bench(engine_path, n=6, warmup=1, service_cpus=str(cpu), client_cpus=str(cpu), floor=False)
    svc = r["service"]
    assert svc["returncode"] == 0 and svc["e2e_ms"]["n"] == 6
    assert "floor" not in r and "overhead_vs_floor" not in r  # floor=False skips the baseline
    assert svc["service_cpus"] == [cpu] and svc["client_cpus"] == [cpu]
    assert os.sched_getaffinity(0) == before  # the bench gives the caller its CPUs back
    assert parse_cpus(None) is None and parse_cpus(f"{cpu}") == {cpu}
    with pytest.raises(ValueError, match="not all available"):
        parse_cpus(str(max(before) + 1000))
    with pytest.raises(ValueError, match="comma-separated"):
        parse_cpus("zero")


def test_floor_baseline_answers_with_a_plan_and_exits_when_the_bench_is_gone(engine_path, spec):
    from planner_runtime.bench.service import _FloorBaseline

    base = _FloorBaseline(engine_path, 1, None, dims=(spec.S, spec.C))
    try:
        e2e, infer = base.step()
        assert e2e > infer > 0  # the server really planned, and the round trip includes it
        assert base.info["chunk_bytes"] > 0
    finally:
        # no quit message: only the closed pipe tells the server its bench is gone
        base.proc.stdin.close()
        assert base.proc.wait(30) == 0
        base.sock.close(0)
        base._ctx.term()


def test_cli_bench_service_section_paced_at_a_rate(engine_path, capsys):
    """`planner-runtime bench --what service --requests N --rate-hz R`: the robot's cadence
    through the CLI named in DESIGN.md, with the goal's interval and who limits it."""
    from planner_runtime.cli import main

    rc = main(["bench", "--what", "service", "--engine", str(engine_path), "--requests", "60",
               "--rate-hz", "100", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)["service"]
    svc = rep["service"]
    assert rep["n"] == 60 and svc["e2e_ms"]["n"] == 60 and svc["rate_hz"] == 100
    assert "paced at 100.0 Hz" in rep["sampler"]["mode"] and rep["sampler"]["infer_ms"]["n"] == 60
    ci, fci = rep["goal_e2e_p99_ci"], rep["floor"]["goal_e2e_p99_ci"]
    assert ci["n_blocks"] == 2 and ci["ci"] is not None  # paced: blocks of 25 for the interval
    assert rep["goal_limited_by"] == goal_limited_by(ci, fci)


@pytest.mark.parametrize("bad", [["--requests", "0"], ["--block", "0"], ["--rate-hz", "0"], ["--rate-hz", "inf"]])
def test_cli_bench_service_refuses_bad_settings(engine_path, capsys, bad):
    from planner_runtime.cli import main

    assert main(["bench", "--what", "service", "--engine", str(engine_path), *bad]) == 2
    assert "--requests must be >= 1" in capsys.readouterr().err
