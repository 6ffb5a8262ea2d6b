"""The runtime's chunk rules (planner_runtime.chunking) on hand-built chunks.

Times are exact multiples of dt; every rule is checked for the row it picks, what it refuses,
and what it promises (the committed actions are the ones ``action`` later returns).
"""

from __future__ import annotations

import numpy as np
import pytest

from planner_runtime.chunking import (
    ChunkAdmissionError,
    ChunkConfig,
    ChunkExecutor,
    DelayEstimator,
    admit,
    switch_metrics,
)
from planner_runtime.protocol import ActionChunk

DT, H, A, S = 0.02, 16, 3, 2


def chunk(plan_id: int, t0: float, base: float = 0.0, seq: int | None = None, cold: bool = False,
          received: float | None = None) -> ActionChunk:
    """Row i's actions are base + i (so a row is identifiable); states row i = base + i + 1."""
    rows = base + np.arange(H, dtype=np.float32)
    return ActionChunk(plan_id=plan_id, obs_seq=plan_id if seq is None else seq, t0=t0, dt=DT,
                       actions=np.repeat(rows[:, None], A, axis=1), states=np.repeat(rows[:, None] + 1, S, axis=1),
                       chunk=4, valid_until=t0 + H * DT, cold=cold, received_at=received)


def ex(merge: str = "aligned", **kw) -> ChunkExecutor:
    return ChunkExecutor(ChunkConfig(merge=merge, execute=4, **kw), dt=DT, horizon=H)


def row(a: np.ndarray | None) -> float:
    assert a is not None
    return float(a[0])


def test_aligned_rows_follow_time_and_the_old_chunk_runs_on_while_the_next_is_late():
    e = ex("aligned")
    assert e.offer(chunk(1, 0.0), 0.0)
    assert [row(e.action(k * DT)) for k in range(7)] == [0, 1, 2, 3, 4, 5, 6]  # past execute=4
    # the next plan (observed at tick 4) arrives at tick 7: its row 3 applies, rows 0-2 skipped
    assert e.offer(chunk(2, 4 * DT, base=100), 7 * DT)
    assert row(e.action(7 * DT)) == 103 and e.stats["skipped"] >= 3


def test_hold_runs_only_the_chunk_size_then_holds_its_last_row():
    e = ex("hold")
    e.offer(chunk(1, 0.0), 0.0)
    assert [row(e.action(k * DT)) for k in range(7)] == [0, 1, 2, 3, 3, 3, 3]


def test_replace_starts_a_late_chunk_at_its_first_row():
    e = ex("replace")
    e.offer(chunk(1, 0.0), 0.0)
    e.offer(chunk(2, 4 * DT, base=100), 6 * DT)
    assert [row(e.action(k * DT)) for k in (6, 7, 8)] == [100, 101, 102]


def test_blend_moves_linearly_from_the_old_row_to_the_new_one():
    e = ex("blend", blend_ticks=2)
    e.offer(chunk(1, 0.0), 0.0)
    e.offer(chunk(2, 4 * DT, base=100), 6 * DT)
    old, new = 6.0, 102.0
    assert row(e.action(6 * DT)) == pytest.approx(old + (new - old) / 3)
    assert row(e.action(7 * DT)) == pytest.approx(7.0 + (103.0 - 7.0) * 2 / 3)
    assert row(e.action(8 * DT)) == 104.0  # blend over: the new chunk alone


@pytest.mark.parametrize("merge", ["aligned", "hold", "inpaint", "blend"])
def test_committed_actions_are_the_ones_that_then_run(merge):
    e = ex(merge)
    e.offer(chunk(1, 0.0), 0.0)
    for k in range(2):
        e.action(k * DT)
    committed = e.committed(2 * DT, 3)
    assert committed is not None and committed.shape == (3, A)
    ran = np.stack([e.action((2 + j) * DT) for j in range(3)])
    np.testing.assert_array_equal(committed, ran)
    assert ex(merge).committed(0.0, 2) is None  # nothing to continue: nothing committed


def test_inpaint_observation_carries_the_measured_delay_of_committed_actions():
    e = ex("inpaint")
    assert e.observation_plan(0.0) == (0, None, None)  # nothing measured yet
    e.sent(0, 0.0, tick=0)
    e.offer(chunk(1, 0.0, seq=0, cold=True, received=2 * DT + 0.001), 2 * DT + 0.001)  # cold: not counted
    assert e.delay.ticks() == 0
    e.sent(1, 4 * DT, tick=4)
    assert e.offer(chunk(2, 4 * DT, base=100, seq=1, received=6 * DT - 0.003), 6 * DT)
    d, committed, forecast = e.observation_plan(8 * DT)
    assert d == 2 and forecast is None
    np.testing.assert_array_equal(committed[:, 0], [104, 105])  # rows of the current chunk at ticks 8, 9


def test_forecast_is_the_measurement_plus_the_predicted_change():
    e = ex("aligned", start_state="forecast", fixed_delay=2)
    x_sent = np.array([5.0, 5.0])
    e.sent(0, 0.0, tick=0, state=x_sent)
    e.offer(chunk(1, 0.0, seq=0), 0.0)
    # the chunk predicts states base + i + 1 at t0 + (i + 1) dt, x_sent at t0
    x = np.array([0.5, -0.5])
    d, committed, fc = e.observation_plan(0.0, x)
    assert d == 2 and committed is None
    np.testing.assert_allclose(fc, x + (np.array([2.0, 2.0]) - x_sent))
    d, _, fc = e.observation_plan(3 * DT, x)
    np.testing.assert_allclose(fc, x + (5.0 - 3.0))  # state k at tick k
    assert e.observation_plan(15 * DT, x)[2] is None  # past what the chunk predicts


def test_delay_estimator_takes_a_high_percentile_of_warm_plans_in_ticks():
    d = DelayEstimator(DT, window=20, percentile=90)
    assert d.ticks() == 0
    for v in [0.010] * 18 + [0.030, 0.035]:
        d.add(v)
    d.add(0.5, cold=True)  # a cold plan is not counted
    d.add(float("nan"))
    assert d.seconds() == pytest.approx(np.percentile([0.010] * 18 + [0.030, 0.035], 90))
    assert d.ticks() == 1
    for _ in range(20):
        d.add(0.041)  # the window forgets the old samples
    assert d.ticks() == 3
    assert DelayEstimator(DT, fixed=4).ticks() == 4
    with pytest.raises(ValueError):
        DelayEstimator(DT, fixed=-1)


def test_admission_rule():
    admit(2, 2, 16, 4)
    admit(12, 12, 16, 4)
    with pytest.raises(ChunkAdmissionError, match="does not cover"):
        admit(3, 2, 16, 4)
    with pytest.raises(ChunkAdmissionError, match="needs 17 rows"):
        admit(13, 13, 16, 4)
    e = ex("inpaint", fixed_delay=13)
    with pytest.raises(ChunkAdmissionError, match="smaller chunk"):
        e.observation_plan(0.0)
    assert e.stats["delay_over_horizon"] == 1


def test_due_waits_for_the_answer_except_in_hold():
    e = ex("aligned", replan_every=1)
    assert e.due(0, 0.0)
    e.sent(0, 0.0, tick=0)
    assert not e.due(1, DT) and not e.due(2, 2 * DT)  # in flight
    e.offer(chunk(1, 0.0, seq=0), 2 * DT)
    assert e.due(2, 2 * DT)
    e.sent(1, 2 * DT, tick=2)
    limit = (H - 4) * DT  # an answer that never comes is given up after the rows a chunk covers
    assert not e.due(3, 2 * DT + limit - DT)
    assert e.due(3, 2 * DT + limit + DT) and e.stats["unanswered"] == 1
    h = ex("hold", replan_every=4)
    h.sent(0, 0.0, tick=0)
    assert [h.due(k, k * DT) for k in range(9)] == [k % 4 == 0 for k in range(9)]



@pytest.mark.parametrize("merge,start_state,expected", [
    ("inpaint", "measured", 1),   # plans for the delay: continuous
    ("aligned", "forecast", 1),
    ("aligned", "measured", 4),   # no delay planned: every `execute` ticks
    ("blend", "measured", 4),
    ("hold", "measured", 4),      # the schedule before real-time chunking
])
def test_default_replan_interval_follows_the_rule(merge, start_state, expected):
    e = ex(merge, start_state=start_state)
    assert e.config.interval() == expected
    sends = []
    for k in range(9):  # every observation is answered within its tick
        if e.due(k, k * DT):
            sends.append(k)
            e.sent(k, k * DT, tick=k)
            e.offer(chunk(k + 1, k * DT, seq=k), k * DT + DT / 2)
    assert sends == list(range(0, 9, expected))
    assert ex(merge, start_state=start_state, replan_every=3).config.interval() == 3
    with pytest.raises(ValueError, match="replan_every"):
        ChunkConfig(merge=merge, start_state=start_state, replan_every=0).validate()

@pytest.mark.parametrize("bad,reason", [
    (dict(actions=np.zeros((0, A))), "bad_shape"),
    (dict(actions=np.full((H, A), np.nan)), "non_finite"),
    (dict(dt=0.0), "bad_timing"),
    (dict(obs_seq=9), "unknown_seq"),
    (dict(t0=1.0, valid_until=2.0), "from_future"),
    (dict(t0=-1.0, valid_until=-0.5), "expired"),
])
def test_refused_chunks_are_counted_by_reason(bad, reason):
    e = ex("aligned")
    c = chunk(1, 0.0)
    for k, v in bad.items():
        setattr(c, k, v)
    assert not e.offer(c, 0.0, next_seq=5, action_dim=A)
    assert e.rejected == {reason: 1} and e.current is None


def test_an_older_plan_never_replaces_a_newer_one():
    e = ex("aligned")
    assert e.offer(chunk(2, 0.0), 0.0)
    assert not e.offer(chunk(1, 0.0), 0.0)
    assert e.rejected == {"older_than_current": 1} and e.current.plan_id == 2


def test_switch_metrics_separate_switch_jumps_from_other_ticks():
    ids = [1, 1, 1, 2, 2, 2]
    acts = [np.array([0.0]), np.array([0.1]), np.array([0.2]), np.array([1.2]), np.array([1.3]), np.array([1.4])]
    m = switch_metrics(ids, acts, DT, scale=0.5)
    assert m["switches"] == 1
    assert m["switch_jump_max"] == pytest.approx(0.5) and m["switch_jump_mean"] == pytest.approx(0.5)
    assert m["step_jump_max"] == pytest.approx(0.05)
    assert m["jerk_rms"] > 0
    smooth = switch_metrics(ids, [np.array([0.1 * k]) for k in range(6)], DT)
    assert smooth["jerk_rms"] == pytest.approx(0.0, abs=1e-6) and smooth["switch_jump_max"] == pytest.approx(0.1)


def test_config_refuses_unknown_rules():
    with pytest.raises(ValueError, match="merge"):
        ChunkConfig(merge="average").validate()
    with pytest.raises(ValueError, match="forecast"):
        ChunkConfig(merge="inpaint", start_state="forecast").validate()
