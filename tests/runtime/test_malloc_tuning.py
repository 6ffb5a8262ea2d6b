"""glibc malloc without fastbins: the mechanism, the switch, and who applies it.

mallopt is process-wide, so the allocator checks run in fresh subprocesses (the pytest
process keeps its malloc as it is). The blocks are allocated and freed through libc
itself (ctypes), so no Python allocator sits in between."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from planner_runtime import malloc_tuning as MT
from planner_runtime import protocol as P
from planner_runtime.client import PlannerClient

needs_glibc = pytest.mark.skipif(MT.glibc_version() is None or MT.fastbin_blocks() is None,
                                 reason="needs glibc 2.33+ (mallopt, mallinfo2)")

_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from planner_runtime import malloc_tuning as MT
    applied = MT.disable_fastbins() if sys.argv[1] == "off" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    freed = [libc.malloc(40) for _ in range(200)]
    kept = [libc.malloc(40) for _ in range(200)]  # so the freed blocks do not border the heap top
    for p in freed:
        libc.free(p)
    after_frees = MT.fastbin_blocks()
    big = libc.malloc(2000)  # a request glibc serves from its large bins
    after_large = MT.fastbin_blocks()
    print(json.dumps({"applied": applied, "disabled": MT.fastbins_disabled(),
                      "after_frees": after_frees, "after_large": after_large}))
""")


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_glibc
def test_by_default_freed_small_blocks_wait_in_fastbins_until_a_large_request_merges_them():
    r = _probe("default")
    # 200 frees of 40 bytes: a few go to the per-thread cache, the rest to the fastbins...
    assert r["disabled"] is False and r["after_frees"] >= 150
    # ...and the next larger request merges them all at once: the work the service avoids
    assert r["after_large"] == 0


@needs_glibc
def test_disable_fastbins_merges_freed_blocks_at_free_time():
    r = _probe("off")
    assert r["applied"] is True and r["disabled"] is True
    assert r["after_frees"] == 0 and r["after_large"] == 0


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(MT, "_glibc", lambda: None)
    monkeypatch.setattr(MT, "_applied", False)
    assert MT.disable_fastbins() is False and MT.fastbins_disabled() is False
    assert MT.glibc_version() is None and MT.fastbin_blocks() is None


@needs_glibc
@pytest.mark.parametrize("extra, off", [((), True), (("--malloc-fastbins",), False)])
def test_serve_turns_fastbins_off_unless_asked_and_reports_it(start_serve, endpoint, spec, extra, off):
    proc = start_serve(*extra)
    with PlannerClient(endpoint, timeout=60.0) as c:
        health = c.ping()
        assert health["malloc_fastbins_off"] is off
        seq = c.send_observation(np.zeros(spec.S), np.zeros(spec.C))
        assert c.wait_chunk(seq, timeout=30.0).obs_seq == seq
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert ("fastbins off" in err) is off


def test_encode_keeps_one_packer_per_thread_and_recovers_after_a_failed_message():
    with pytest.raises(TypeError):
        P.encode({"type": "ping", "bad": object()})
    # nothing of the failed message is left in the packer's buffer
    assert P.decode(P.encode({"type": "ping", "req": 7})) == {"v": 1, "type": "ping", "req": 7}
    main_packer = P._packer()
    assert P._packer() is main_packer

    errors: list[str] = []
    packers: list[object] = []

    def worker(k: int) -> None:
        packers.append(P._packer())
        for i in range(300):
            a = np.full((3, 2), k * 1000 + i, np.float32)
            msg = P.decode(P.encode({"type": "ping", "req": i, "a": P.pack_array(a)}))
            if msg["req"] != i or not np.array_equal(P.unpack_array(msg["a"], "a"), a):
                errors.append(f"thread {k} message {i} came back as {msg}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(p) for p in packers}) == 4 and all(p is not main_packer for p in packers)
