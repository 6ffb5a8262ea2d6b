"""The safety state machine, the command filter and the wireless-remote stop combination,
driven tick by tick with synthetic robot states (no timing involved: time is an input)."""

from __future__ import annotations

import numpy as np
import pytest

from robot import go2_constants as go2
from robot import wireless_remote
from robot.safety import CommandFilter, Mode, SafetyConfig, SafetyStateMachine
from robot.types import LowCmd, LowState

DT = 0.002


def upright(q=None, dq=None) -> LowState:
    return LowState(q=go2.DEFAULT_JOINT_POS.copy() if q is None else np.asarray(q, float),
                    dq=np.zeros(12) if dq is None else np.asarray(dq, float))


def run(sm: SafetyStateMachine, t0: float, t1: float, target=None, chunk_every: float | None = None,
        state: LowState | None = None) -> tuple[float, LowCmd]:
    t, cmd, last_chunk = t0, None, -1e9
    st = state or upright()
    while t < t1 - 1e-9:
        fresh = chunk_every is not None and t - last_chunk >= chunk_every - 1e-9
        if fresh:
            last_chunk = t
        cmd = sm.step(t, st, target, fresh)
        t += DT
    return t, cmd


def modes(sm: SafetyStateMachine) -> list[str]:
    return [tr.dst.value for tr in sm.transitions]


CFG = SafetyConfig(passive_s=0.5, stand_up_s=2.0, grace_s=0.2, hold_s=0.5, stand_ramp_s=1.0,
                   stand_timeout_s=2.0, startup_wait_s=5.0)


def test_startup_passive_standup_stand_planning():
    sm = SafetyStateMachine(CFG)
    lying = upright(q=go2.LYING_JOINT_POS)
    cmd = sm.step(0.0, lying, None, False)
    assert sm.mode is Mode.PASSIVE and np.all(cmd.kp == 0) and np.all(cmd.kd == 0) and np.all(cmd.tau == 0)
    t, cmd = run(sm, DT, 1.5, state=lying)  # 1 s into the 2 s stand-up
    assert sm.mode is Mode.STAND_UP and np.all(cmd.kp == go2.STAND_KP)
    assert np.all((cmd.q - go2.LYING_JOINT_POS) * (go2.DEFAULT_JOINT_POS - go2.LYING_JOINT_POS) >= -1e-12)
    t, cmd = run(sm, t, 3.0, state=lying)
    assert sm.mode is Mode.STAND
    np.testing.assert_allclose(cmd.q, go2.DEFAULT_JOINT_POS)
    tgt = go2.DEFAULT_JOINT_POS + 0.1
    t, cmd = run(sm, t, 3.5, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.PLANNING
    np.testing.assert_allclose(cmd.q, tgt)
    assert np.all(cmd.kp == go2.DEFAULT_KP) and np.all(cmd.kd == go2.DEFAULT_KD)
    assert modes(sm) == ["stand_up", "stand", "planning"]
    assert all(tr.reason for tr in sm.transitions)


def to_planning(sm: SafetyStateMachine, target) -> float:
    t, _ = run(sm, 0.0, 3.0)
    t, _ = run(sm, t, 3.5, target=target, chunk_every=0.08)
    assert sm.mode is Mode.PLANNING
    return t


def test_watchdog_hold_then_stand_then_damping_in_order():
    sm = SafetyStateMachine(CFG)
    tgt = go2.DEFAULT_JOINT_POS + np.linspace(-0.2, 0.2, 12)
    t_last = to_planning(sm, tgt)
    # Chunks stop: grace 0.2 -> HOLD (the last target, planner gains) -> 0.5 -> STAND -> 2.0 -> DAMPING.
    t, cmd = run(sm, t_last, t_last + 0.35, target=tgt)
    assert sm.mode is Mode.HOLD
    np.testing.assert_allclose(cmd.q, tgt)
    assert np.all(cmd.kp == go2.DEFAULT_KP)
    t, cmd = run(sm, t, t + 0.6, target=tgt)
    assert sm.mode is Mode.STAND
    t, cmd = run(sm, t, t + 1.2, target=tgt)  # ramp done: default pose with stand gains
    np.testing.assert_allclose(cmd.q, go2.DEFAULT_JOINT_POS, atol=1e-9)
    assert np.all(cmd.kp == go2.STAND_KP)
    t, cmd = run(sm, t, t + 1.0, target=tgt)
    assert sm.mode is Mode.DAMPING
    assert np.all(cmd.kp == 0) and np.all(cmd.kd == go2.DAMPING_KD)
    assert modes(sm)[-3:] == ["hold", "stand", "damping"]
    hold, stand, damp = sm.transitions[-3:]
    assert hold.t < stand.t < damp.t
    assert hold.t - sm.last_chunk_time == pytest.approx(CFG.grace_s, abs=2 * DT)
    assert stand.t - hold.t == pytest.approx(CFG.hold_s, abs=2 * DT)
    assert damp.t - stand.t == pytest.approx(CFG.stand_timeout_s, abs=2 * DT)
    assert all("watchdog" in tr.reason for tr in (hold, stand, damp))


def test_hold_recovers_when_chunks_return_but_damping_is_latched():
    sm = SafetyStateMachine(CFG)
    tgt = go2.DEFAULT_JOINT_POS
    t = to_planning(sm, tgt)
    t, _ = run(sm, t, t + 0.3, target=tgt)
    assert sm.mode is Mode.HOLD
    t, _ = run(sm, t, t + 0.1, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.PLANNING
    sm.request_stop("test stop")
    t, _ = run(sm, t, t + 0.01, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.DAMPING
    t, cmd = run(sm, t, t + 0.5, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.DAMPING and np.all(cmd.kp == 0)
    assert sm.transitions[-1].reason == "test stop"


@pytest.mark.parametrize("what", ["target", "state_q", "quaternion"])
def test_non_finite_goes_to_damping(what):
    sm = SafetyStateMachine(CFG)
    tgt = go2.DEFAULT_JOINT_POS.copy()
    t = to_planning(sm, tgt)
    st = upright()
    if what == "target":
        tgt = tgt.copy()
        tgt[3] = np.nan
    elif what == "state_q":
        st.q[5] = np.inf
    else:
        st.quaternion = np.array([np.nan, 0, 0, 0])
    cmd = sm.step(t, st, tgt, True)
    assert sm.mode is Mode.DAMPING and cmd.is_finite() and np.all(cmd.kp == 0)
    assert "non-finite" in sm.transitions[-1].reason


def test_stale_state_and_fall_go_to_damping():
    sm = SafetyStateMachine(CFG)
    t = to_planning(sm, go2.DEFAULT_JOINT_POS)
    sm.step(t, upright(), go2.DEFAULT_JOINT_POS, True, state_age=0.5)
    assert sm.mode is Mode.DAMPING and "stale" in sm.transitions[-1].reason
    sm = SafetyStateMachine(CFG)
    t = to_planning(sm, go2.DEFAULT_JOINT_POS)
    tipped = upright()
    tipped.quaternion = np.array([np.cos(0.6), np.sin(0.6), 0.0, 0.0])  # rolled ~69 deg
    sm.step(t, tipped, go2.DEFAULT_JOINT_POS, True)
    assert sm.mode is Mode.DAMPING and "fall" in sm.transitions[-1].reason


def test_no_planner_after_standup_times_out_to_damping():
    sm = SafetyStateMachine(SafetyConfig(passive_s=0.1, stand_up_s=0.5, startup_wait_s=1.0))
    run(sm, 0.0, 2.0)
    assert modes(sm) == ["stand_up", "stand", "damping"]
    assert "no planner" in sm.transitions[-1].reason


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="grace_s"):
        SafetyConfig(grace_s=-1.0).validate()
    with pytest.raises(ValueError, match="stand_kp"):
        SafetyConfig(stand_kp=float("nan")).validate()


# ---------------------------------------------------------------- command filter
def pd(q, kp=30.0, kd=0.7, tau=0.0) -> LowCmd:
    return LowCmd(q=np.array(q, float), dq=np.zeros(12), kp=np.full(12, kp), kd=np.full(12, kd),
                  tau=np.full(12, tau))


def predicted_tau(cmd: LowCmd, st: LowState) -> np.ndarray:
    return cmd.kp * (cmd.q - st.q) + cmd.kd * (cmd.dq - st.dq) + cmd.tau


def test_filter_nan_becomes_damping():
    f = CommandFilter()
    c = pd(go2.DEFAULT_JOINT_POS)
    c.q[0] = np.nan
    out, ok = f.apply(c, upright())
    assert not ok and out.is_finite() and np.all(out.kp == 0) and f.stats.nonfinite == 1


def test_filter_clamps_position_to_joint_limits():
    f = CommandFilter()
    q = go2.JOINT_POS_UPPER + 1.0
    st = upright(q=go2.JOINT_POS_UPPER - 0.01)  # near the limit so the torque stays small
    out, ok = f.apply(pd(q, kp=5.0), st)
    assert ok and np.all(out.q <= go2.JOINT_POS_UPPER + 1e-12) and f.stats.pos_clamped == 1


def test_filter_keeps_predicted_torque_within_limits():
    f = CommandFilter()
    st = upright()
    tgt = np.clip(go2.DEFAULT_JOINT_POS + 1.5, go2.JOINT_POS_LOWER, go2.JOINT_POS_UPPER)
    raw = pd(tgt, kp=60.0)
    assert np.any(np.abs(predicted_tau(raw, st)) > go2.TORQUE_LIMIT)
    out, ok = f.apply(raw, st)
    assert ok and f.stats.torque_clamped == 1
    assert np.all(np.abs(predicted_tau(out, st)) <= go2.TORQUE_LIMIT + 1e-9)
    # The direction of the correction is kept.
    assert np.all(np.sign(out.q - st.q) == np.sign(tgt - st.q))


def test_filter_bounds_damping_torque_and_feedforward():
    f = CommandFilter()
    st = upright(dq=np.full(12, 25.0))
    raw = LowCmd(q=np.zeros(12), dq=np.zeros(12), kp=np.zeros(12), kd=np.full(12, 5.0),
                 tau=np.full(12, -100.0))
    out, ok = f.apply(raw, st)
    assert ok and np.all(np.abs(predicted_tau(out, st)) <= go2.TORQUE_LIMIT + 1e-9)


def test_filter_only_brakes_a_joint_over_the_velocity_limit():
    f = CommandFilter()
    dq = np.zeros(12)
    dq[2] = 40.0  # calf spinning over the 30 rad/s limit
    st = upright(dq=dq)
    raw = pd(go2.DEFAULT_JOINT_POS + 0.5, kp=30.0, kd=0.0)  # would push it further (+)
    out, ok = f.apply(raw, st)
    tau = predicted_tau(out, st)
    assert ok and f.stats.overspeed_braked == 1
    assert tau[2] <= 1e-9  # no torque along the motion
    np.testing.assert_allclose(np.delete(tau, 2), np.delete(predicted_tau(raw, st), 2))


def test_filter_refuses_negative_gains_and_huge_velocity_targets():
    f = CommandFilter()
    c = pd(go2.DEFAULT_JOINT_POS, kp=-5.0)
    c.dq[:] = 100.0
    out, ok = f.apply(c, upright())
    assert ok and np.all(out.kp >= 0) and np.all(np.abs(out.dq) <= go2.JOINT_VEL_LIMIT)


# ---------------------------------------------------------------- wireless remote
def test_remote_stop_combination_is_l2_plus_b():
    assert wireless_remote.decode(wireless_remote.encode(("L2", "B"))).stop_pressed
    assert not wireless_remote.decode(wireless_remote.encode(("L2",))).stop_pressed
    assert not wireless_remote.decode(wireless_remote.encode(("B", "A"))).stop_pressed
    assert not wireless_remote.decode(bytes(40)).stop_pressed


def test_remote_decoding_of_bits_and_sticks():
    raw = bytearray(40)
    raw[2] = 1 << 5  # L2
    raw[3] = 1 << 1  # B (bit 9)
    raw[4:8] = np.float32(0.5).tobytes()
    r = wireless_remote.decode(bytes(raw))
    assert r.keys == {"L2", "B"} and r.lx == pytest.approx(0.5)
    with pytest.raises(ValueError, match="40 bytes"):
        wireless_remote.decode(b"\x00" * 39)
    with pytest.raises(ValueError, match="unknown remote keys"):
        wireless_remote.encode(("Z",))
