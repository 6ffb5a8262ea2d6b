"""Warm-start bookkeeping of the background sampler, in process and through real sockets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner_runtime import schedule
from planner_runtime.async_planner import AsyncPlanner, PlannerSpec, shift_plan
from planner_runtime.protocol import Observation


def test_shift_plan_drops_executed_rows_and_repeats_the_last():
    plan = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    out = shift_plan(plan, 2)
    np.testing.assert_array_equal(out[:3], plan[2:])
    np.testing.assert_array_equal(out[3], plan[4])
    np.testing.assert_array_equal(out[4], plan[4])
    np.testing.assert_array_equal(shift_plan(plan, 0), plan)
    np.testing.assert_array_equal(shift_plan(plan, 5), np.repeat(plan[4:], 5, axis=0))  # H: all last
    for bad in (6, -1):
        with pytest.raises(ValueError, match="shift steps"):
            shift_plan(plan, bad)
    # into a [B, H, D] buffer: every candidate gets the shifted plan; the input is untouched
    buf = np.full((3, 5, 3), np.nan, np.float32)
    assert shift_plan(plan, 2, out=buf) is buf
    for b in range(3):
        np.testing.assert_array_equal(buf[b], out)
    np.testing.assert_array_equal(plan, np.arange(5 * 3, dtype=np.float32).reshape(5, 3))


def test_spec_from_manifest_and_overrides(engine):
    m = engine.manifest
    spec = PlannerSpec.from_manifest(m)
    assert spec.cold_levels.tolist() == list(m.diffusion.cold_levels)
    assert spec.warm_levels.tolist() == list(m.diffusion.warm_levels)
    assert spec.chunk == m.control.chunk_size and spec.dt == m.control.dt
    assert PlannerSpec.from_manifest(m, chunk=2, temperature=0.5, cfg_w=1.0).chunk == 2
    if m.graph.kind == "fused":
        with pytest.raises(ValueError, match="step-graph"):
            PlannerSpec.from_manifest(m, steps=m.graph.n_steps + 1)
    with pytest.raises(ValueError, match="chunk size"):
        PlannerSpec.from_manifest(m, chunk=m.dims.H + 1)
    with pytest.raises(ValueError, match="temperature"):
        PlannerSpec.from_manifest(m, temperature=-1.0)
    with pytest.raises(ValueError, match="cfg_w"):
        PlannerSpec.from_manifest(m, cfg_w=float("nan"))


def _full(chunk):
    return np.concatenate([chunk.states, chunk.actions], axis=1)


def test_in_process_warm_start_shift_levels_and_noise(recording, spec):
    spec.temperature = 0.25
    planner = AsyncPlanner(recording, spec, seed=42, cold_threshold=math.inf)
    rng = np.random.default_rng(42)
    D = spec.S + spec.A
    x = np.zeros(spec.S, np.float32)
    c = np.ones(spec.C, np.float32)
    ch1, last = planner.plan_once(Observation(0, 100.0, x, c))
    call = recording.calls[-1]
    assert ch1.cold and ch1.plan_id == 1 and ch1.obs_seq == 0 and ch1.t0 == 100.0
    np.testing.assert_array_equal(call["levels"], spec.cold_levels)
    np.testing.assert_array_equal(call["prev_plan"], 0.0)
    # noise: the seeded generator's standard normal scaled by sqrt(temperature)
    want = rng.standard_normal((spec.B, spec.H, D), dtype=np.float32) * np.float32(0.5)
    np.testing.assert_array_equal(call["noise"], want)
    assert ch1.valid_until == pytest.approx(100.0 + spec.H * spec.dt)

    # 3 rows executed: the next observation is stamped 3 dt later
    ch2, last2 = planner.plan_once(Observation(1, 100.0 + 3 * spec.dt, x, c), last)
    call = recording.calls[-1]
    assert not ch2.cold and ch2.plan_id == 2 and ch2.obs_seq == 1
    np.testing.assert_array_equal(call["levels"], spec.warm_levels)
    expect = shift_plan(_full(ch1), 3)
    np.testing.assert_allclose(call["prev_plan"][0], expect)
    np.testing.assert_allclose(call["x0"][0], x)

    # the plan is used up: cold; a stamp going backwards: cold
    ch3, _ = planner.plan_once(Observation(2, 100.0 + 3 * spec.dt + spec.H * spec.dt, x, c), last2)
    assert ch3.cold and planner.stats["cold_reasons"]["plan_exhausted"] == 1
    ch4, _ = planner.plan_once(Observation(3, 99.0, x, c), last2)
    assert ch4.cold and planner.stats["cold_reasons"]["stamp_backwards"] == 1


def test_far_observation_cold_starts(recording, spec):
    planner = AsyncPlanner(recording, spec, seed=0, cold_threshold=1.0)
    x = np.zeros(spec.S, np.float32)
    c = np.zeros(spec.C, np.float32)
    ch1, last = planner.plan_once(Observation(0, 0.0, x, c))
    pred = ch1.states[1]  # predicted for t0 + 2 dt
    ch2, _ = planner.plan_once(Observation(1, 2 * spec.dt, pred + 0.1, c), last)
    assert not ch2.cold
    ch3, _ = planner.plan_once(Observation(2, 2 * spec.dt, pred + 5.0, c), last)
    assert ch3.cold and planner.stats["cold_reasons"] == {"first": 1, "far": 1}
    np.testing.assert_array_equal(recording.calls[-1]["levels"], spec.cold_levels)
    with pytest.raises(ValueError, match="cold_threshold"):
        AsyncPlanner(recording, spec, cold_threshold=0.0)


def test_bookkeeping_through_sockets(rec_server, rec_client, recording, spec):
    client = rec_client
    x, c = np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)
    t = 50.0
    client.hello()  # connected: observations are only queued on a live connection
    s0 = client.send_observation(x, c, stamp=t)
    assert s0 == 0
    ch0 = client.wait_chunk(s0)
    assert (ch0.plan_id, ch0.obs_seq, ch0.cold, ch0.t0, ch0.dt) == (1, s0, True, t, spec.dt)
    assert ch0.chunk == spec.chunk and ch0.actions.shape == (spec.H, spec.A)
    np.testing.assert_allclose(_full(ch0), recording.calls[-1]["plan"][0], rtol=0, atol=0)

    # warm: 2 rows executed and the robot is where the plan said it would be
    s1 = client.send_observation(ch0.states[1], c, stamp=t + 2 * spec.dt)
    ch1 = client.wait_chunk(s1)
    assert (ch1.plan_id, ch1.obs_seq, ch1.cold) == (2, s1, False)
    np.testing.assert_allclose(recording.calls[-1]["prev_plan"][0], shift_plan(_full(ch0), 2))
    np.testing.assert_array_equal(recording.calls[-1]["levels"], spec.warm_levels)

    # far from the prediction: cold
    s2 = client.send_observation(ch1.states[0] + 10.0, c, stamp=t + 3 * spec.dt)
    ch2 = client.wait_chunk(s2)
    assert ch2.cold and ch2.plan_id == 3
    # after a reset the next plan is cold even though the observation matches
    s3 = client.send_observation(ch2.states[0], c, stamp=t + 4 * spec.dt)
    assert not client.wait_chunk(s3).cold
    client.reset()
    s4 = client.send_observation(ch2.states[1], c, stamp=t + 5 * spec.dt)
    ch4 = client.wait_chunk(s4)
    assert ch4.cold and ch4.obs_seq == s4
    h = client.ping()
    assert h["cold_reasons"] == {"first": 1, "far": 1, "reset": 1}
    assert h["plans"] == 5 and h["warm"] == 2


def test_schedule_levels_are_what_the_engine_gets(spec):
    assert spec.warm_levels[0] <= spec.K and spec.warm_levels[-1] == 0
    np.testing.assert_array_equal(schedule.validate_levels(spec.cold_levels, spec.K), spec.cold_levels)


def test_engine_failure_is_reported_and_the_next_plan_is_cold(rec_server, rec_client, recording, spec):
    from planner_runtime.client import ServerError

    c = rec_client
    c.hello()
    x, cond = np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)
    ch = c.wait_chunk(c.send_observation(x, cond, stamp=10.0))
    recording.fail_next = True
    seq = c.send_observation(ch.states[0], cond, stamp=10.0 + spec.dt)
    with pytest.raises(ServerError, match="injected engine failure") as ei:
        c.wait_chunk(seq)
    assert ei.value.code == "engine_error" and ei.value.seq == seq
    assert c.ping()["status"] == "engine_failing"
    seq = c.send_observation(ch.states[1], cond, stamp=10.0 + 2 * spec.dt)
    ch2 = c.wait_chunk(seq)
    assert ch2.cold and ch2.plan_id == 2  # never warm-started from a failed chain
    h = c.ping()
    assert h["engine_errors"] == 1 and h["cold_reasons"]["after_error"] == 1 and h["status"] == "ok"


def test_reset_during_a_plan_discards_its_result(rec_server, rec_client, recording, spec, wait):
    c = rec_client
    c.hello()
    x, cond = np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)
    recording.gate.clear()
    c.send_observation(x, cond, stamp=1.0)
    assert recording.entered.wait(5)
    # reset is answered while the sampler is busy: the socket thread never waits for it
    c.reset(timeout=5.0)
    recording.gate.set()
    assert wait(lambda: rec_server.planner.stats["discarded"] == 1)
    assert c.poll_chunk(0.1) is None  # the pre-reset plan is never sent
    seq = c.send_observation(x, cond, stamp=1.1)
    ch = c.wait_chunk(seq)
    assert ch.cold and ch.obs_seq == seq and c.ping()["cold_reasons"] == {"first": 1, "reset": 1}
