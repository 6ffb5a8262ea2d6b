"""`planner-runtime serve` as a real subprocess: readiness, torch-free, signals, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from planner_runtime import malloc_tuning as MT
from planner_runtime.client import PlannerClient


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_subprocess_serves_without_torch_and_stops_on_signal(serve_argv, endpoint, spec, sig):
    proc = subprocess.Popen(serve_argv(endpoint, "--log-json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with PlannerClient(endpoint, timeout=60.0) as c:
            meta = c.hello()  # waits for start-up (imports + engine load) on a busy machine
            assert meta["horizon"] == spec.H
            h = c.ping()
            assert h["pid"] == proc.pid
            assert h["torch_loaded"] is False  # 'torch' not in the service's sys.modules
            seq = c.send_observation(np.zeros(spec.S), np.zeros(spec.C))
            assert c.wait_chunk(seq, timeout=30.0).obs_seq == seq
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events, err
    kinds = [e.get("event") for e in events]
    assert "start" in kinds and "signal" in kinds and kinds[-1] == "stop"


def test_health_check_command(server, endpoint):
    ok = subprocess.run([sys.executable, "-m", "planner_runtime.client", "ping", server.endpoint],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "ok", ok.stderr
    gone = subprocess.run([sys.executable, "-m", "planner_runtime.client", "ping",
                           "tcp://127.0.0.1:9", "--timeout", "0.3"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and json.loads(gone.stdout)["error"] == "timeout"


def test_serve_modules_import_no_torch():
    code = (
        "import sys\n"
        "import planner_runtime.commands.serve, planner_runtime.server, planner_runtime.client\n"
        "import planner_runtime.async_planner, planner_runtime.protocol, planner_runtime.backends.ort\n"
        "import planner_runtime.bench_service\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_serve_refuses_exposed_bind_and_fused_step_override(serve_argv, free_endpoint_port):
    r = subprocess.run(serve_argv(f"tcp://0.0.0.0:{free_endpoint_port}"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "CurveZMQ" in r.stderr
    r = subprocess.run(serve_argv(f"tcp://127.0.0.1:{free_endpoint_port}", "--steps", "99"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and ("step-graph" in r.stderr or "num_steps" in r.stderr), r.stderr


def test_serve_refuses_a_corrupt_engine(tmp_path, free_endpoint_port):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07this is not an onnx model")
    argv = [sys.executable, "-m", "planner_runtime.cli", "serve", "--engine", str(bad),
            "--bind", f"tcp://127.0.0.1:{free_endpoint_port}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "corrupt.onnx" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_run_bench_reports_latency_memory_and_cpu(engine_path, tmp_path):
    from planner_runtime.bench_service import run_bench

    png = tmp_path / "hist.png"
    r = run_bench(engine_path, n=20, warmup=3, histogram=png)
    svc = r["service"]
    assert svc["returncode"] == 0 and svc["plans"] == 23 and svc["torch_loaded"] is False
    assert svc["e2e_ms"]["n"] == 20 and r["sampler"]["infer_ms"]["n"] == 20
    # both readings run with the malloc set-up serve uses by default (fastbins off on glibc)
    glibc = MT.glibc_version() is not None
    assert svc["malloc_fastbins_off"] is glibc and r["sampler"]["malloc_fastbins_off"] is glibc
    assert svc["e2e_ms"]["median"] >= svc["service_infer_ms"]["median"] > 0
    assert svc["memory_mb"]["VmRSS"] > 0 and svc["cpu_percent_busy"] >= 0
    assert isinstance(r["goal_e2e_p99_within_1ms"], bool) and isinstance(r["goal_rss_le_300mb"], bool)
    # the goal is judged against the sampler-only reading of the same run
    assert r["goal_e2e_p99_within_1ms"] == (r["e2e_minus_sampler_p99_ms"] <= 1.0)
    assert r["e2e_minus_sampler_p99_ms"] == pytest.approx(svc["e2e_ms"]["p99"] - r["sampler"]["infer_ms"]["p99"])
    assert "blocks" in r["sampler"]["mode"] and r["sampler"]["plan_once_ms"]["n"] == 20
    split = svc["overhead_split_ms"]
    assert split["outside_planner_thread"]["n"] == 20 and split["post_median"] >= 0
    assert svc["overhead_ms"]["median"] > 0  # e2e minus the same request's engine time
    # CPU waits (schedstat) per request and per sampler plan, and the uncontended subset
    assert svc["runqueue_wait_ms"]["n"] == 20 and r["sampler"]["runqueue_wait_ms"]["n"] == 20
    u = r["uncontended"]
    assert 0 <= u["requests"] <= 20 and 0 <= u["sampler_plans"] <= 20 and u["threshold_ms"] > 0
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


def test_run_bench_pins_service_and_client_and_restores_the_client(engine_path):
    import os

    from planner_runtime.bench_service import parse_cpus, run_bench

    before = os.sched_getaffinity(0)
    cpu = min(before)
    r = run_bench(engine_path, n=6, warmup=1, service_cpus=str(cpu), client_cpus=str(cpu),
                  malloc_fastbins=True, floor=False)
    svc = r["service"]
    assert svc["returncode"] == 0 and svc["e2e_ms"]["n"] == 6
    # --malloc-fastbins reaches both the service and the sampler worker
    assert svc["malloc_fastbins_off"] is False and r["sampler"]["malloc_fastbins_off"] is False
    assert "floor" not in r and "overhead_vs_floor" not in r  # floor=False skips the baseline
    assert svc["service_cpus"] == [cpu] and svc["client_cpus"] == [cpu]
    assert os.sched_getaffinity(0) == before  # the bench gives the caller its CPUs back
    assert parse_cpus(None) is None and parse_cpus(f"{cpu}") == {cpu}
    with pytest.raises(ValueError, match="not all available"):
        parse_cpus(str(max(before) + 1000))
    with pytest.raises(ValueError, match="comma-separated"):
        parse_cpus("zero")


def test_floor_baseline_answers_with_a_plan_and_exits_when_the_bench_is_gone(engine_path, spec):
    from planner_runtime.bench_service import _FloorBaseline

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
    from planner_runtime.bench_service import goal_limited_by
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


@pytest.mark.parametrize("bad", [["--requests", "0"], ["--rate-hz", "0"], ["--rate-hz", "inf"]])
def test_cli_bench_service_refuses_bad_settings(engine_path, capsys, bad):
    from planner_runtime.cli import main

    assert main(["bench", "--what", "service", "--engine", str(engine_path), *bad]) == 2
    assert "--requests must be >= 1" in capsys.readouterr().err
