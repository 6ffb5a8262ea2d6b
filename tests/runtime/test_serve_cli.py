"""`planner-runtime serve` as a real subprocess: readiness, torch-free, signals, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

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
        "import planner_runtime.bench.service\n"
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


def test_serve_pins_and_takes_real_time_priority_or_says_why_not(serve_argv, endpoint, spec):
    """--cpus pins the service, --rt-priority puts it under SCHED_FIFO (or, where the system
    refuses, logs that it runs at normal priority); out-of-range values are refused (exit 2)."""
    import os

    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen(serve_argv(endpoint, "--log-json", "--cpus", str(cpu), "--rt-priority", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with PlannerClient(endpoint, timeout=60.0) as c:
            c.hello()
            assert os.sched_getaffinity(proc.pid) == {cpu}
            fifo = os.sched_getscheduler(proc.pid) == os.SCHED_FIFO
            seq = c.send_observation(np.zeros(spec.S), np.zeros(spec.C))
            assert c.wait_chunk(seq, timeout=30.0).obs_seq == seq  # it plans at that priority
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    sched = [e for e in events if e.get("event") == "scheduling"]
    assert len(sched) == 1 and ("SCHED_FIFO priority 5" in sched[0]["msg"]) == fifo, sched
    if not fifo:
        assert "not permitted" in sched[0]["msg"]
    for bad in (["--rt-priority", "0"], ["--rt-priority", "100"], ["--cpus", str(cpu + 1000)]):
        r = subprocess.run(serve_argv(endpoint, *bad), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and bad[0] in r.stderr and "Traceback" not in r.stderr, r.stderr
