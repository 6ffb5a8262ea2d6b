"""What the latency work on the observation -> chunk path must not change.

The sampler draws the next plan's noise while idle, builds the warm-start input with
``shift_plan`` into a preallocated buffer, skips the distance arithmetic when the far check is
off, and the array decoder was rewritten as plain loops; the service process freezes the
garbage collector's view of its start-up objects. These tests pin the behaviour (noise
sequence, warm-start input, far decision, error codes) against the plain definitions.
"""

from __future__ import annotations

import gc
import math
import threading
import time

import numpy as np
import pytest

from planner_runtime import protocol as P
from planner_runtime.async_planner import AsyncPlanner, _LastPlan, shift_plan
from planner_runtime.client import PlannerClient
from planner_runtime.protocol import Observation
from planner_runtime.server import PlannerServer, free_tcp_port


def test_noise_drawn_while_idle_is_the_seeded_sequence(rec_server, rec_client, recording, spec, make_obs):
    # Through the real socket path: the thread draws each plan's noise after the previous
    # result went out; the noise of plan k must still be the generator's k-th draw.
    rec_client.hello()
    x, c = make_obs()
    for i in range(3):
        seq = rec_client.send_observation(x, c, stamp=10.0 + i * spec.chunk * spec.dt)
        rec_client.wait_chunk(seq, timeout=10.0)
    rng = np.random.default_rng(0)  # rec_server's seed
    scale = np.float32(math.sqrt(spec.temperature))
    assert len(recording.calls) == 3
    for call in recording.calls:
        want = rng.standard_normal((spec.B, spec.H, spec.S + spec.A), dtype=np.float32) * scale
        np.testing.assert_array_equal(call["noise"], want)


def test_warm_start_input_is_shift_plan_for_every_shift(recording, spec):
    planner = AsyncPlanner(recording, spec, seed=1, cold_threshold=math.inf)
    D = spec.S + spec.A
    plan = np.arange(spec.H * D, dtype=np.float32).reshape(spec.H, D)
    x, c = np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)
    for s in range(spec.H):
        last = _LastPlan(plan, x.copy(), 50.0, 7)
        ch, _ = planner.plan_once(Observation(s, 50.0 + s * spec.dt, x, c), last)
        assert not ch.cold
        got = recording.calls[-1]["prev_plan"]
        assert got.shape == (spec.B, spec.H, D)
        for b in range(spec.B):
            np.testing.assert_array_equal(got[b], shift_plan(plan, s))
    # the record of the plan keeps its own copy of the observed state
    ch, new_last = planner.plan_once(Observation(99, 50.0, x, c), last)
    x[:] = 5.0
    np.testing.assert_array_equal(new_last.x0, 0.0)


def test_far_decision_is_the_rms_in_normalizer_units(recording, spec):
    planner = AsyncPlanner(recording, spec, cold_threshold=0.5)
    D = spec.S + spec.A
    plan = np.zeros((spec.H, D), np.float32)
    last = _LastPlan(plan, np.zeros(spec.S, np.float32), 0.0, 1)
    scale = spec.state_scale
    c = np.zeros(spec.C, np.float32)
    # every state dimension 0.49 / 0.51 scale units from the prediction: RMS 0.49 / 0.51
    for k, far in ((0.49, False), (0.51, True)):
        state = (k * scale).astype(np.float32)
        cold, reason, s = planner.decide(Observation(0, 2 * spec.dt, state, c), last)
        assert (cold, reason, s) == ((True, "far", 2) if far else (False, "warm", 2))
    # one dimension off by d: RMS = d / sqrt(S)
    state = np.zeros(spec.S, np.float32)
    state[0] = np.float32(0.6 * math.sqrt(spec.S) * scale[0])
    assert planner.decide(Observation(0, 0.0, state, c), last)[:2] == (True, "far")
    # the check switched off: never far
    off = AsyncPlanner(recording, spec, cold_threshold=math.inf)
    assert off.decide(Observation(0, 0.0, state * 1e6, c), last) == (False, "warm", 0)


def test_chunk_timings_split_the_service_time(client, spec, make_obs):
    client.hello()
    x, c = make_obs()
    seq = client.send_observation(x, c)
    ch = client.wait_chunk(seq, timeout=10.0)
    for key in ("infer_ms", "prep_ms", "plan_ms", "queue_ms", "post_ms"):
        assert key in ch.timings and ch.timings[key] >= 0.0, (key, ch.timings)
    assert ch.timings["plan_ms"] >= ch.timings["infer_ms"]


def test_array_decoder_error_codes_are_unchanged():
    good = P.pack_array(np.zeros(3, np.float32))
    cases = {
        "not a map": ([1, 2], P.E_BAD_FIELD, "expected an array map"),
        "no shape": ({"dtype": "<f4", "bytes": good["bytes"]}, P.E_MISSING_FIELD, "lacks 'shape'"),
        "no dtype": ({"shape": [3], "bytes": good["bytes"]}, P.E_MISSING_FIELD, "lacks 'dtype'"),
        "dtype not a str": ({**good, "dtype": 4}, P.E_BAD_DTYPE, "not allowed"),
        "object dtype": ({**good, "dtype": "|O"}, P.E_BAD_DTYPE, "not allowed"),
        "int where float": ({**good, "dtype": "<i4"}, P.E_BAD_DTYPE, "not accepted here"),
        "bool in shape": ({**good, "shape": [True, 3]}, P.E_BAD_SHAPE, "non-negative ints"),
        "float in shape": ({**good, "shape": [3.0]}, P.E_BAD_SHAPE, "non-negative ints"),
        "too many dims": ({**good, "shape": [1] * (P.MAX_NDIM + 1)}, P.E_BAD_SHAPE, "non-negative ints"),
        "shape a tuple-like str": ({**good, "shape": "3"}, P.E_BAD_SHAPE, "non-negative ints"),
        "bytes a str": ({**good, "bytes": "abc"}, P.E_BAD_FIELD, "must be binary"),
        "byte count": ({**good, "shape": [4]}, P.E_BAD_SHAPE, "needs 16 bytes"),
        "wrong shape": ({**good}, P.E_BAD_SHAPE, "expected shape [5]"),
        "nan": (P.pack_array(np.array([0.0, np.nan, np.inf], np.float32)), P.E_NOT_FINITE, "2 non-finite"),
    }
    for name, (obj, code, text) in cases.items():
        with pytest.raises(P.ProtocolError) as ei:
            P.unpack_array(obj, "state", shape=(5,) if name == "wrong shape" else (None,))
        assert ei.value.code == code and text in ei.value.message, (name, ei.value.message)
    a = P.unpack_array(good, "state", shape=(3,))
    assert a.dtype == np.float32 and a.shape == (3,)


def test_gc_freeze_only_in_a_dedicated_service_thread(engine, spec, endpoint):
    before = gc.get_freeze_count()
    srv = PlannerServer(engine, spec, bind=endpoint).start()  # a background thread: embedded use
    try:
        with PlannerClient(srv.endpoint, timeout=5.0) as c:
            c.ping()
        assert gc.get_freeze_count() == before
    finally:
        srv.stop()
    # serve_forever(freeze_gc=True) (what `planner-runtime serve` gets in its main thread)
    srv2 = PlannerServer(engine, spec, bind=f"tcp://127.0.0.1:{free_tcp_port()}")
    pinged = threading.Event()

    def stop_after_ping() -> None:
        with PlannerClient(srv2.endpoint, timeout=5.0) as c:
            c.ping()
        pinged.set()
        srv2.stop()

    t = threading.Thread(target=stop_after_ping)
    t.start()
    try:
        srv2.serve_forever(freeze_gc=True)
        t.join(10)
        assert pinged.is_set() and gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


def test_warm_up_runs_both_level_sequences_and_leaves_the_noise_sequence_alone(recording, spec, make_obs):
    """`serve` warms the engine up before it reports ready; the plans after it are the same
    as without it (the seeded noise stream is not consumed by the warm-up calls)."""
    x, c = make_obs()
    plain = AsyncPlanner(recording, spec, seed=5, cold_threshold=math.inf)
    ref, _ = plain.plan_once(Observation(0, 1.0, x, c))
    n0 = len(recording.calls)
    warmed = AsyncPlanner(recording, spec, seed=5, cold_threshold=math.inf)
    ms = warmed.warm_up(rounds=2)
    assert len(ms) == 4 and all(m > 0 for m in ms)
    calls = recording.calls[n0:]
    assert [list(cl["levels"]) for cl in calls] == [list(spec.cold_levels), list(spec.warm_levels)] * 2
    assert all(not cl["noise"].any() and not cl["x0"].any() for cl in calls)
    got, _ = warmed.plan_once(Observation(0, 1.0, x, c))
    np.testing.assert_array_equal(got.actions, ref.actions)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_agrees_with_isfinite_for_every_position(dtype):
    # all_finite is a dot product with zeros (one numpy call): NaN and +-inf anywhere, in
    # arrays around SIMD widths, and in 2-D must be caught; the largest finite values must not.
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 672):
        big = np.full(n, np.finfo(dtype).max, dtype)
        big[::2] *= -1
        assert P.all_finite(big) and P.all_finite(np.zeros(n, dtype))
        for bad in (np.nan, np.inf, -np.inf):
            for pos in {0, n // 2, n - 1}:
                a = (rng.standard_normal(n) * 1e30).astype(dtype)
                a[pos] = bad
                assert not P.all_finite(a), (n, bad, pos)
                assert not P.all_finite(a.reshape(1, n)), (n, bad, pos)
    grid = rng.standard_normal((16, 42)).astype(dtype)
    view = grid[:4, 30:]  # a non-contiguous view, as the chunk's actions are
    assert P.all_finite(view)
    grid[2, 35] = np.nan
    assert not P.all_finite(view) and P.all_finite(grid[:2, 30:])


def test_float64_observation_beyond_float32_range_is_refused():
    # finite as float64, inf once converted to the engine's float32: refused at the door
    msg = Observation(1, 0.5, np.array([1.0, 1e300, 0.0]), np.zeros(2)).to_msg()
    msg["state"] = P.pack_array(np.array([1.0, 1e300, 0.0]))  # keep the float64 on the wire
    with pytest.raises(P.ProtocolError) as ei:
        Observation.from_msg(P.decode(P.encode(msg)), 3, 2)
    assert ei.value.code == P.E_NOT_FINITE and "float32 range" in ei.value.message and ei.value.seq == 1
    msg["state"] = P.pack_array(np.array([1.0, 2.0, 3.0]))  # float64 in range: converted
    obs = Observation.from_msg(P.decode(P.encode(msg)), 3, 2)
    assert obs.state.dtype == np.float32 and obs.state.tolist() == [1.0, 2.0, 3.0]


def test_trusted_engine_call_equals_the_checked_one(engine, step_engine_path, spec):
    # The planner skips the engine's per-call input checks (it validated the inputs itself):
    # same inputs, same plan, for the fused and the step graph.
    from planner_runtime.async_planner import PlannerSpec
    from planner_runtime.backends import load_engine

    step = load_engine(step_engine_path, provider="cpu", threads=1)
    try:
        for eng in (engine, step):
            sp = PlannerSpec.from_manifest(eng.manifest)
            rng = np.random.default_rng(3)
            B, H, D = sp.B, sp.H, sp.S + sp.A
            args = (rng.standard_normal((B, sp.S)).astype(np.float32),
                    rng.standard_normal((B, sp.C)).astype(np.float32),
                    rng.standard_normal((B, H, D)).astype(np.float32),
                    rng.standard_normal((B, H, D)).astype(np.float32))
            for levels in (sp.cold_levels, sp.warm_levels):
                a = eng.plan(*args, levels, sp.cfg_w)
                b = eng.plan_trusted(*args, levels, sp.cfg_w)
                np.testing.assert_array_equal(a.plan, b.plan)
                assert a.best == b.best
    finally:
        step.close()


def test_planner_uses_the_trusted_call_and_its_chunk_is_the_checked_plan(engine, spec, make_obs):
    calls = []

    class Counting:
        """The real engine; counts which entry the planner uses."""

        manifest, backend = engine.manifest, engine.backend

        def plan(self, *a):
            calls.append("plan")
            return engine.plan(*a)

        def plan_trusted(self, *a):
            calls.append("trusted")
            return engine.plan_trusted(*a)

    x, c = make_obs()
    chunk, last = AsyncPlanner(Counting(), spec, seed=0).plan_once(Observation(0, 1.0, x, c))
    assert calls == ["trusted"]
    # the chunk's rows are the chosen plan's, and they encode to the same bytes as copies
    np.testing.assert_array_equal(chunk.actions, last.plan[: len(chunk.actions), spec.S:])
    enc = P.decode(P.encode(chunk.to_msg()))
    back = P.ActionChunk.from_msg(enc)
    np.testing.assert_array_equal(back.actions, np.ascontiguousarray(chunk.actions))
    np.testing.assert_array_equal(back.states, np.ascontiguousarray(chunk.states))
    # an engine returning a non-finite plan is refused, not sent
    bad = Counting()
    bad.plan_trusted = lambda *a: type(engine.plan(*a))(plan=np.full_like(engine.plan(*a).plan, np.nan),
                                                      best=0, score=np.zeros(1, np.float32), infer_ms=0.0)
    with pytest.raises(RuntimeError, match="bad plan"):
        AsyncPlanner(bad, spec, seed=0).plan_once(Observation(0, 1.0, x, c))


def test_stop_wakes_the_socket_thread_instead_of_waiting_for_its_poll_timeout(engine, spec, endpoint):
    # a poll timeout of ten minutes: only the wake-up written by stop() can end the loop
    srv = PlannerServer(engine, spec, bind=endpoint, seed=0, poll_ms=600_000).start()
    with PlannerClient(endpoint, timeout=10.0) as c:
        assert c.ping()["status"] == "ok"
        time.sleep(0.3)  # the socket thread is back in its poll, with nothing left to read
        srv.stop(timeout=10.0)
        assert srv._thread is not None and not srv._thread.is_alive()
    srv.stop()  # again, after the socket is closed: a no-op, no write to a closed descriptor
