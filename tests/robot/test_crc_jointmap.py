"""CRC of the Go2 low-level command, and the SDK <-> project <-> MuJoCo joint maps.

Known vector: the LowCmd below (Go2 framing, default pose, kp 30, kd 0.7, tau_ff
-3.0, -2.5, ..., 2.5) has CRC 0x9E51C88B. It was computed once (2026-11-21) with the
SDK's own CRC (unitree_sdk2py.utils.crc.CRC, its compiled crc_amd64.so) and is pinned here.
It is also recomputed by an independent implementation written from the algorithm's
definition: the C struct layout of LowCmd_ packed by hand, and CRC-32 with polynomial
0x04C11DB7, initial value 0xFFFFFFFF, no reflection, no final xor, over the first 202
little-endian 32-bit words, each fed most-significant byte first (this is CRC-32/MPEG-2
over the words' big-endian bytes; its catalogue check value for "123456789" is 0x0376E6E7).
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from robot import go2_constants as go2
from robot.dds_bridge import (
    check_lowcmd,
    fill_lowcmd,
    fill_lowstate,
    lowcmd_from_msg,
    lowstate_from_msg,
    new_lowcmd_msg,
    new_lowstate_msg,
)
from robot.types import LowCmd, LowState

KNOWN_CRC = 0x9E51C88B


def known_cmd() -> LowCmd:
    return LowCmd(q=go2.DEFAULT_JOINT_POS.copy(), dq=np.zeros(12), kp=np.full(12, 30.0),
                  kd=np.full(12, 0.7), tau=np.arange(12) * 0.5 - 3.0)


def _mpeg2_table() -> list[int]:
    table = []
    for b in range(256):
        c = b << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
            c &= 0xFFFFFFFF
        table.append(c)
    return table


_TABLE = _mpeg2_table()


def crc32_mpeg2(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def pack_lowcmd_by_hand(msg) -> bytes:
    """LowCmd_ as the C struct (812 bytes, natural alignment, little-endian)."""
    out = bytearray(812)
    out[0:2] = bytes(msg.head)
    out[2] = msg.level_flag
    out[3] = msg.frame_reserve
    struct.pack_into("<2I2IH", out, 4, *msg.sn, *msg.version, msg.bandwidth)
    for i, m in enumerate(msg.motor_cmd):
        off = 24 + 36 * i
        out[off] = m.mode
        struct.pack_into("<5f3I", out, off + 4, m.q, m.dq, m.tau, m.kp, m.kd, *m.reserve)
    out[744] = msg.bms_cmd.off
    out[745:748] = bytes(msg.bms_cmd.reserve)
    out[748:788] = bytes(msg.wireless_remote)
    out[788:800] = bytes(msg.led)
    out[800:802] = bytes(msg.fan)
    out[802] = msg.gpio
    struct.pack_into("<II", out, 804, msg.reserve, msg.crc)
    return bytes(out)


def independent_crc(msg) -> int:
    raw = pack_lowcmd_by_hand(msg)[:808]  # the CRC word itself is excluded
    words = struct.unpack("<202I", raw)
    return crc32_mpeg2(b"".join(struct.pack(">I", w) for w in words))


def test_independent_crc_matches_catalogue_check_value():
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_lowcmd_crc_known_vector_sdk_and_independent():
    msg = fill_lowcmd(new_lowcmd_msg(), known_cmd())
    assert tuple(msg.head) == (0xFE, 0xEF) and msg.level_flag == 0xFF and msg.gpio == 0
    assert [m.mode for m in msg.motor_cmd[:12]] == [0x01] * 12
    assert msg.crc == KNOWN_CRC  # the SDK's CRC, as pinned
    assert independent_crc(msg) == KNOWN_CRC
    assert check_lowcmd(msg) is None


def test_crc_changes_with_any_field_and_bad_crc_is_detected():
    msg = fill_lowcmd(new_lowcmd_msg(), known_cmd())
    msg.motor_cmd[7].kp = 30.5
    assert check_lowcmd(msg) == "bad_crc"
    from unitree_sdk2py.utils.crc import CRC

    msg.crc = CRC().Crc(msg)
    assert msg.crc != KNOWN_CRC and msg.crc == independent_crc(msg)
    msg.level_flag = 0xEE
    msg.crc = CRC().Crc(msg)
    assert check_lowcmd(msg) == "bad_header"


def test_lowstate_crc_round_trip():
    from unitree_sdk2py.utils.crc import CRC

    st = LowState(q=go2.DEFAULT_JOINT_POS + 0.01 * np.arange(12), dq=np.arange(12) * 0.1,
                  tick=1234, wireless_remote=bytes(range(40)))
    msg = fill_lowstate(new_lowstate_msg(), st)
    assert msg.crc == CRC().Crc(msg)
    back = lowstate_from_msg(msg)
    np.testing.assert_allclose(back.q, st.q, atol=1e-6)
    np.testing.assert_allclose(back.dq, st.dq, atol=1e-6)
    assert back.tick == 1234 and back.wireless_remote == bytes(range(40))


def _sdk_leg_ids() -> dict[str, int]:
    import unitree_sdk2py

    path = Path(unitree_sdk2py.__file__).parent / "test" / "lowlevel" / "unitree_go2_const.py"
    if not path.is_file():
        pytest.skip(f"the SDK's Go2 leg-ID table is not installed at {path}")
    spec = importlib.util.spec_from_file_location("unitree_go2_const", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LegID


def test_sdk_motor_order_is_project_joint_order():
    leg_ids = _sdk_leg_ids()
    jt = {"hip": 0, "thigh": 1, "calf": 2}
    for i, name in enumerate(go2.JOINT_NAMES):
        leg, joint, _ = name.split("_")
        assert leg_ids[f"{leg}_{jt[joint]}"] == i, name


def test_lowcmd_fields_land_on_the_named_motor():
    cmd = LowCmd(q=np.arange(12) * 0.1, dq=np.arange(12) * 0.2, kp=np.arange(12) + 1.0,
                 kd=np.arange(12) * 0.01, tau=-np.arange(12) * 0.3)
    msg = fill_lowcmd(new_lowcmd_msg(), cmd)
    for i in range(12):
        assert msg.motor_cmd[i].q == pytest.approx(0.1 * i)
        assert msg.motor_cmd[i].kp == pytest.approx(i + 1.0)
    for i in range(12, 20):  # unused slots stay passive with the SDK's "no target" sentinels
        assert msg.motor_cmd[i].mode == 0 and msg.motor_cmd[i].kp == 0.0
    back = lowcmd_from_msg(msg)
    np.testing.assert_allclose(back.tau, cmd.tau, atol=1e-6)


def test_command_through_dds_fields_moves_the_named_mujoco_joint():
    """SDK motor 4 (FL thigh) driven through the LowCmd_ fields moves MuJoCo's joint named
    FL_thigh_joint, and no other (the MuJoCo qpos order is FL, FR, RL, RR)."""
    pytest.importorskip("mujoco")
    from sim.mujoco_harness import MujocoGo2

    sim = MujocoGo2()
    sim.reset(height=0.6)  # in the air: only the commanded joint should move
    sim.model.opt.gravity[:] = 0.0
    q0 = sim.read_state().q.copy()
    cmd = LowCmd(q=q0.copy(), kp=np.full(12, 40.0), kd=np.full(12, 1.0))
    idx = go2.JOINT_NAMES.index("FL_thigh_joint")
    cmd.q[idx] += 0.4
    sim.write_command(lowcmd_from_msg(fill_lowcmd(new_lowcmd_msg(), cmd)))
    sim.step(250)
    m = sim.model
    jid = m.joint("FL_thigh_joint").id
    assert sim.data.qpos[m.jnt_qposadr[jid]] == pytest.approx(q0[idx] + 0.4, abs=0.05)
    moved = np.abs(sim.read_state().q - q0)
    assert moved[idx] > 0.3
    assert np.max(np.delete(moved, idx)) < 0.05


def test_fast_lowcmd_crc_equals_the_sdk_crc_on_random_commands():
    from unitree_sdk2py.utils.crc import CRC

    from robot.dds_bridge import LowCmdCrc

    msg = new_lowcmd_msg()
    packer = LowCmdCrc(msg)
    rng = np.random.default_rng(0)
    for _ in range(100):
        cmd = LowCmd(*(rng.normal(size=12) * s for s in (1.0, 5.0, 30.0, 1.0, 3.0)))
        fill_lowcmd(msg, cmd, packer)
        assert msg.crc == CRC().Crc(msg) == independent_crc(msg)
    assert fill_lowcmd(new_lowcmd_msg(), known_cmd(), packer).crc == KNOWN_CRC


def test_fast_lowstate_crc_equals_the_sdk_crc_on_random_states():
    from unitree_sdk2py.utils.crc import CRC

    from robot import wireless_remote
    from robot.dds_bridge import LowStateCrc

    msg = new_lowstate_msg()
    packer = LowStateCrc(msg)
    rng = np.random.default_rng(1)
    for k in range(50):
        quat = rng.normal(size=4)
        st = LowState(quaternion=quat / np.linalg.norm(quat), gyroscope=rng.normal(size=3),
                      accelerometer=rng.normal(size=3) * 9, q=rng.normal(size=12),
                      dq=rng.normal(size=12) * 5, tau_est=rng.normal(size=12) * 10,
                      foot_force=rng.uniform(-50, 200, 4), tick=123456789 + 7 * k,
                      wireless_remote=wireless_remote.encode(("L2", "B"), lx=0.3))
        fill_lowstate(msg, st, packer)
        assert msg.crc == CRC().Crc(msg)


def test_stop_sentinels_survive_the_crc_and_dds_path():
    """Damping and passive commands carry PosStopF / VelStopF (exact in float32): the fast
    and the SDK CRC agree on them, a receiver verifies them and reads the sentinels back."""
    from unitree_sdk2py.utils.crc import CRC

    from robot.dds_bridge import LowCmdCrc
    from robot.safety import damping_command

    msg = new_lowcmd_msg()
    packer = LowCmdCrc(msg)
    for cmd in (damping_command(), LowCmd.zero_torque()):
        fill_lowcmd(msg, cmd, packer)
        assert msg.crc == CRC().Crc(msg) == independent_crc(msg)
        assert check_lowcmd(msg) is None
        back = lowcmd_from_msg(msg)
        assert np.all(back.q == go2.POS_STOP_F) and np.all(back.kp == 0.0)
        np.testing.assert_array_equal(back.dq, cmd.dq)
        np.testing.assert_array_equal(back.kd, cmd.kd)
    assert np.float32(go2.POS_STOP_F) == go2.POS_STOP_F and np.float32(go2.VEL_STOP_F) == go2.VEL_STOP_F


def test_mujoco_ignores_the_sentinel_targets_as_the_firmware_does():
    """The harness applies a sentinel command exactly as the same command with harmless
    targets: kp = 0 / kd = 0 make the targets irrelevant (and nothing overflows)."""
    pytest.importorskip("mujoco")
    from robot.safety import damping_command
    from sim.mujoco_harness import MujocoGo2

    def after(cmd: LowCmd) -> np.ndarray:
        sim = MujocoGo2()
        sim.reset(joint_pos=go2.DEFAULT_JOINT_POS, height=0.45)  # dropped from standing height
        sim.write_command(cmd)
        sim.step(250)
        st = sim.read_state()
        assert np.all(np.isfinite(st.q)) and np.all(np.isfinite(st.dq))
        return np.concatenate([sim.data.qpos, sim.data.qvel])

    damp = damping_command()
    plain = LowCmd(q=np.zeros(12), dq=damp.dq.copy(), kp=damp.kp.copy(), kd=damp.kd.copy(), tau=damp.tau.copy())
    np.testing.assert_allclose(after(damp), after(plain), atol=1e-9)
    np.testing.assert_allclose(after(LowCmd.zero_torque()), after(LowCmd()), atol=1e-9)
    # and the damping really damps: the legs fold slower than with zero torque
    assert not np.allclose(after(damp), after(LowCmd.zero_torque()), atol=1e-3)
