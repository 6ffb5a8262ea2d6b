"""The PM QoS CPU wake-up latency request held by `serve --cpu-latency-us`."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from planner_runtime import cpu_latency as CL
from planner_runtime.client import PlannerClient

REAL = CL.PM_QOS_DEVICE
can_write_real = os.path.exists(REAL) and os.access(REAL, os.W_OK)
needs_real = pytest.mark.skipif(not can_write_real, reason=f"{REAL} missing or not writable here")


@pytest.mark.parametrize("bad", [-1, 2**31, 1.5, True, "0"])
def test_refuses_values_that_are_not_microseconds(bad):
    with pytest.raises(ValueError, match="microseconds"):
        CL.CpuLatencyRequest(bad)


def test_writes_a_native_int32_and_closing_ends_the_request(tmp_path):
    # A regular file stands in for the device to check what is written; the kernel's
    # behaviour is checked on the real device below.
    dev = tmp_path / "cpu_dma_latency"
    dev.write_bytes(b"")
    req = CL.CpuLatencyRequest(25, dev)
    with req:
        assert req.held
        assert dev.read_bytes() == struct.pack("=i", 25)
        assert CL.read_limit(dev) == 25
    assert not req.held
    req.release()  # twice is harmless


def test_missing_device_and_unopenable_path_give_clear_errors(tmp_path):
    with pytest.raises(CL.CpuLatencyError, match="does not exist.*without --cpu-latency-us"):
        CL.CpuLatencyRequest(0, tmp_path / "nope").acquire()
    with pytest.raises(CL.CpuLatencyError, match="cannot open"):
        CL.CpuLatencyRequest(0, tmp_path).acquire()  # a directory


@needs_real
def test_the_kernel_applies_the_request_while_held():
    before = CL.read_limit()
    if before == 0:
        pytest.skip("another process already holds a 0 us request")
    with CL.CpuLatencyRequest(0):
        assert CL.read_limit() == 0
    assert CL.read_limit() == before


def test_serve_refuses_to_start_when_the_request_cannot_be_placed(serve_argv, free_endpoint_port, tmp_path,
                                                                  monkeypatch, capsys):
    import logging

    from planner_runtime.cli import main

    monkeypatch.setattr(CL, "PM_QOS_DEVICE", str(tmp_path / "no_such_device"))
    # serve installs its log handler on this (captured) stderr: restore the logger afterwards
    root = logging.getLogger("planner_runtime")
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "propagate", root.propagate)
    monkeypatch.setattr(root, "level", root.level)
    argv = serve_argv(f"tcp://127.0.0.1:{free_endpoint_port}", "--cpu-latency-us", "0")
    rc = main(argv[argv.index("serve"):])
    assert rc == 2
    assert "no_such_device does not exist" in capsys.readouterr().err


@needs_real
def test_serve_holds_the_limit_while_serving_and_drops_it_on_exit(start_serve, endpoint, spec):
    before = CL.read_limit()
    if before == 0:
        pytest.skip("another process already holds a 0 us request")
    proc = start_serve("--cpu-latency-us", "0")
    with PlannerClient(endpoint, timeout=60.0) as c:
        c.hello()
        assert CL.read_limit() == 0
        seq = c.send_observation(np.zeros(spec.S), np.zeros(spec.C))
        assert c.wait_chunk(seq, timeout=30.0).obs_seq == seq
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "CPU wake-up latency limit of 0 us" in err
    assert CL.read_limit() == before
