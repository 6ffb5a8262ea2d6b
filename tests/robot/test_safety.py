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
    assert ok and f.stats.pos_clamped == 1
    np.testing.assert_allclose(out.q, go2.JOINT_POS_UPPER + go2.TARGET_OVERDRIVE)


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


# ---------------------------------------------------------------- latched faults, resume
def test_a_fault_latches_until_an_operator_resumes_and_a_signal_stop_cannot_be_resumed():
    sm = SafetyStateMachine(CFG)
    tgt = go2.DEFAULT_JOINT_POS
    t = to_planning(sm, tgt)
    sm.step(t, upright(), tgt, True, state_age=0.5)  # state lost
    assert sm.mode is Mode.DAMPING and "stale" in sm.fault and sm.fault_resumable
    # the state is fresh again and chunks keep coming: nothing leaves DAMPING by itself
    t, cmd = run(sm, t + DT, t + 3.0, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.DAMPING and np.all(cmd.kp == 0)
    # an operator resume with a stale state is refused (and recorded) ...
    sm.request_resume("test")
    sm.step(t, upright(), tgt, False, state_age=0.5)
    assert sm.mode is Mode.DAMPING and sm.resumes[-1]["accepted"] is False
    assert "stale" in sm.resumes[-1]["refused"]
    # ... with a good state it stands up from the measured pose, then waits for a new chunk
    lying = upright(q=go2.LYING_JOINT_POS)
    sm.request_resume("test")
    cmd = sm.step(t, lying, None, False)
    assert sm.mode is Mode.STAND_UP and sm.resumes[-1]["accepted"] and sm.fault is None
    assert "operator resume (test) after: robot state stale" in sm.transitions[-1].reason
    np.testing.assert_allclose(cmd.q, go2.LYING_JOINT_POS)
    assert np.all(cmd.kp == go2.STAND_KP)
    t, _ = run(sm, t + DT, t + 2.5, state=lying)
    assert sm.mode is Mode.STAND  # no chunk: it does not plan
    t, _ = run(sm, t, t + 0.2, target=tgt, chunk_every=0.08)
    assert sm.mode is Mode.PLANNING
    assert modes(sm)[-4:] == ["damping", "stand_up", "stand", "planning"]
    # a signal's stop ends the controller: not resumable
    sm.request_stop("signal SIGTERM", resumable=False)
    sm.step(t, upright(), tgt, True)
    assert sm.mode is Mode.DAMPING and not sm.fault_resumable
    sm.request_resume("test")
    sm.step(t + DT, upright(), tgt, True)
    assert sm.mode is Mode.DAMPING and "restart" in sm.resumes[-1]["refused"]


def test_resume_is_refused_while_tilted_and_outside_damping():
    sm = SafetyStateMachine(CFG)
    t = to_planning(sm, go2.DEFAULT_JOINT_POS)
    assert "nothing to resume" in sm.resume_problem(upright())
    sm.request_resume("early")  # outside DAMPING: ignored, not kept for later
    sm.step(t, upright(), go2.DEFAULT_JOINT_POS, True)
    assert sm.mode is Mode.PLANNING and sm.resumes == []
    on_side = upright()
    on_side.quaternion = np.array([np.cos(0.75), np.sin(0.75), 0.0, 0.0])  # rolled 1.5 rad
    sm.step(t, on_side, go2.DEFAULT_JOINT_POS, True)
    assert sm.mode is Mode.DAMPING and "fall" in sm.fault
    sm.request_resume("test")
    sm.step(t + DT, on_side, None, False)
    assert sm.mode is Mode.DAMPING and "set it upright" in sm.resumes[-1]["refused"]
    sm.request_resume("test")
    sm.step(t + 2 * DT, upright(), None, False)  # righted (on its belly or feet)
    assert sm.mode is Mode.STAND_UP


@pytest.mark.parametrize("roll, falls", [(0.95, False), (1.05, True)])
def test_fall_detection_is_a_tilt_over_one_radian(roll, falls):
    assert go2.FALL_TILT_RAD == 1.0 and SafetyConfig().fall_tilt_rad == go2.FALL_TILT_RAD
    for axis in (1, 2):  # roll and pitch
        sm = SafetyStateMachine(CFG)
        t = to_planning(sm, go2.DEFAULT_JOINT_POS)
        st = upright()
        quat = np.zeros(4)
        quat[0], quat[axis] = np.cos(roll / 2), np.sin(roll / 2)
        st.quaternion = 3.0 * quat  # any norm
        sm.step(t, st, go2.DEFAULT_JOINT_POS, True)
        assert (sm.mode is Mode.DAMPING) is falls, (roll, axis, sm.transitions[-1])
        if falls:
            assert "tilted 1.05 rad > 1.00 rad" in sm.fault


def test_a_planner_target_far_outside_the_joint_range_is_a_fault():
    sm = SafetyStateMachine(CFG)
    tgt = go2.DEFAULT_JOINT_POS.copy()
    t = to_planning(sm, tgt)
    near = tgt.copy()
    near[2] = go2.JOINT_POS_LOWER[2] - 0.8  # calf 0.8 rad past its range: clamped by the filter
    sm.step(t, upright(), near, True)
    assert sm.mode is Mode.PLANNING
    far = tgt.copy()
    far[2] = go2.JOINT_POS_LOWER[2] - 1.1
    sm.step(t + DT, upright(), far, True)
    assert sm.mode is Mode.DAMPING and "FR_calf_joint" in sm.fault and "beyond its joint range" in sm.fault


# ---------------------------------------------------------------- PosStopF / VelStopF
def test_no_position_or_velocity_control_uses_the_sdk_sentinels():
    sm = SafetyStateMachine(CFG)
    passive = sm.step(0.0, upright(), None, False)
    assert sm.mode is Mode.PASSIVE
    assert np.all(passive.q == go2.POS_STOP_F) and np.all(passive.dq == go2.VEL_STOP_F)
    assert np.all(passive.kp == 0) and np.all(passive.kd == 0) and np.all(passive.tau == 0)
    sm.request_stop("test")
    damp = sm.step(DT, upright(), None, False)
    assert np.all(damp.q == go2.POS_STOP_F) and np.all(damp.kp == 0)
    assert np.all(damp.dq == 0) and np.all(damp.kd == go2.DAMPING_KD)  # velocity control toward 0
    f = CommandFilter()
    for cmd in (passive, damp):  # the filter passes them through unchanged
        out, ok = f.apply(cmd, upright())
        assert ok
        for name in ("q", "dq", "kp", "kd", "tau"):
            np.testing.assert_array_equal(getattr(out, name), getattr(cmd, name))
    # any command with a zero gain gets the sentinel on that joint, whatever it said
    mixed = pd(go2.DEFAULT_JOINT_POS, kp=30.0, kd=0.7)
    mixed.kp[3] = 0.0
    mixed.kd[7] = 0.0
    mixed.q[3] = 0.0  # a calf "target" of 0 rad (out of range) with kp 0: the old damping's bug
    out, ok = f.apply(mixed, upright())
    assert ok and out.q[3] == go2.POS_STOP_F and out.dq[7] == go2.VEL_STOP_F
    np.testing.assert_allclose(np.delete(out.q, 3), np.delete(go2.DEFAULT_JOINT_POS, 3))
    assert np.all(np.delete(out.dq, 7) == 0.0) and f.stats.pos_clamped == 0
    assert np.all(np.isfinite(predicted_tau(out, upright())))


def test_remote_resume_combination_is_l2_plus_a_and_never_with_the_stop():
    assert wireless_remote.RESUME_COMBO == ("L2", "A")
    assert wireless_remote.decode(wireless_remote.encode(("L2", "A"))).resume_pressed
    assert not wireless_remote.decode(wireless_remote.encode(("A",))).resume_pressed
    assert not wireless_remote.decode(wireless_remote.encode(("L2", "A", "B"))).resume_pressed


# ---------------------------------------------------------------- sport mode (logic only)
class _Switcher:
    """A Python-level stand-in for MotionSwitcherClient (the DDS path is in test_dds)."""

    def __init__(self, mode: str, stuck: bool = False, code: int = 0):
        self.mode, self.stuck, self.code, self.released = mode, stuck, code, 0

    def CheckMode(self):  # noqa: N802 (the SDK's names)
        return (self.code, {"form": "0", "name": self.mode} if self.code == 0 else None)

    def ReleaseMode(self):  # noqa: N802
        self.released += 1
        if not self.stuck:
            self.mode = ""
        return 0, None


def test_release_sport_mode_checks_releases_and_says_what_to_do():
    from robot.sport_mode import SportModeError, release_sport_mode

    sw = _Switcher("normal")
    assert release_sport_mode(client=sw, settle_s=0.0) == {
        "before": "normal", "after": "", "release_calls": 1, "dry_run": False}
    assert release_sport_mode(client=_Switcher(""), settle_s=0.0)["release_calls"] == 0
    dry = _Switcher("ai")
    assert release_sport_mode(client=dry, settle_s=0.0, dry_run=True)["after"] == "ai" and dry.released == 0
    with pytest.raises(SportModeError, match="still active after 3 ReleaseMode calls.*Unitree app"):
        release_sport_mode(client=_Switcher("normal", stuck=True), settle_s=0.0, attempts=3)
    with pytest.raises(SportModeError, match="RPC code 3104.*motion-switcher service"):
        release_sport_mode(client=_Switcher("normal", code=3104), settle_s=0.0)


def test_controller_series_keeps_the_newest_values_and_counts_all():
    from robot.controller import Series

    s = Series(capacity=8)
    assert not s and s.values().size == 0
    for i in range(5):
        s.append(float(i))
    np.testing.assert_array_equal(s.values(), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(s.since(3), [3, 4])
    for i in range(5, 20):
        s.append(float(i))
    assert len(s) == 20 and s.buf.size == 8  # bounded: 8 held, 20 counted
    np.testing.assert_array_equal(s.values(), np.arange(12, 20))
    np.testing.assert_array_equal(s.since(17), [17, 18, 19])
    np.testing.assert_array_equal(s.since(2), np.arange(12, 20))  # older ones are gone
    assert s.since(20).size == 0


def test_the_filter_passes_overdrive_targets_and_clamps_beyond():
    """Targets up to TARGET_OVERDRIVE past the joint range reach the motors unchanged (gaits
    use them); further ones are clamped to that band."""
    f = CommandFilter()
    st = upright()
    q = go2.DEFAULT_JOINT_POS.copy()
    q[2] = go2.JOINT_POS_UPPER[2] + 0.3  # calf 0.3 rad past its upper limit
    q[5] = go2.JOINT_POS_UPPER[5] + 0.9
    cmd = LowCmd(q=q, kp=np.full(12, 20.0), kd=np.full(12, 0.5))
    safe, ok = f.apply(cmd, st)
    assert ok
    assert safe.q[2] == pytest.approx(q[2]) and f.stats.torque_clamped == 0
    assert safe.q[5] == pytest.approx(go2.JOINT_POS_UPPER[5] + go2.TARGET_OVERDRIVE)
    assert f.stats.pos_clamped == 1
