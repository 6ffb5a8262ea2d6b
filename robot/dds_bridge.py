"""The Go2 over DDS (unitree_sdk2py): a ``RobotInterface`` on rt/lowstate and rt/lowcmd.

Used by ``planner-runtime controller`` against the real robot, or against the MuJoCo Go2
standing in for it on loopback (``sim.dds_robot``). Framing follows the SDK's Go2
low-level example: head 0xFE 0xEF, level flag 0xFF (low level), gpio 0, motor mode 0x01
(servo) on the 12 leg motors, the unused motor slots 12-19 at mode 0 with the SDK's
"no target" sentinels, and the SDK's CRC-32 on every command.

Motor order: the SDK's motor index 0-11 is FR, FL, RR, RL (hip, thigh, calf each), which is
this project's joint order (robot.go2_constants.JOINT_NAMES); ``SDK_TO_OURS`` records that
identity and the tests check it against the SDK's own leg-ID table.

Before it creates its rt/lowcmd publisher, ``DdsRobot`` looks for other publishers of
rt/lowcmd on the domain (DDS discovery: the built-in DCPSPublication topic) for
``lowcmd_check_s`` and refuses to start when it finds one: two processes commanding the same
motors fight each other (Unitree's own deploy stacks refuse the same way). A dry run only
warns (it publishes nothing). ``robot.sport_mode`` releases the Go2's own sport mode first.

The channel factory of unitree_sdk2py is a process-wide singleton bound to one DDS domain
and one network interface; ``init_channels`` refuses a second, different initialization
instead of silently reusing the first. Always pass the interface ("lo" for a simulator on
this machine) so discovery never leaves the intended network.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from robot import go2_constants as go2
from robot.interface import RobotInterface
from robot.types import LowCmd, LowState

log = logging.getLogger("robot.dds_bridge")

TOPIC_LOWSTATE = "rt/lowstate"
TOPIC_LOWCMD = "rt/lowcmd"
NUM_MOTOR_SLOTS = 20  # LowCmd_/LowState_ carry 20 motor slots; the Go2 uses 0-11
# SDK motor index of our joint i (identity: the SDK order is our order).
SDK_TO_OURS = np.arange(go2.NUM_JOINTS)

_factory_lock = threading.Lock()
_factory_args: tuple[int, str] | None = None


class DdsError(RuntimeError):
    pass


def init_channels(domain_id: int, iface: str) -> None:
    """Initialize the SDK's channel factory once per process (domain, interface)."""
    global _factory_args
    if not (0 <= int(domain_id) <= 232):
        raise ValueError(f"DDS domain id must be in 0..232, got {domain_id}")
    if not iface:
        raise ValueError("a network interface is required (e.g. 'lo' or the robot's 'eth0')")
    with _factory_lock:
        if _factory_args is not None:
            if _factory_args != (int(domain_id), iface):
                raise DdsError(f"DDS already initialized on domain {_factory_args[0]} iface "
                               f"{_factory_args[1]!r}; cannot switch to {domain_id} {iface!r} "
                               "in the same process")
            return
        from unitree_sdk2py.core.channel import ChannelFactoryInitialize

        try:
            ChannelFactoryInitialize(int(domain_id), iface)
        except Exception as exc:  # the SDK raises a bare Exception
            raise DdsError(f"DDS init failed on domain {domain_id} iface {iface!r}: {exc}") from exc
        _factory_args = (int(domain_id), iface)


_discovery: dict[int, Any] = {}  # domain -> (participant, built-in publication reader)


def topic_publishers(topic: str, domain_id: int, wait_s: float) -> list[dict[str, str]]:
    """Publications of ``topic`` that DDS discovery finds on ``domain_id`` within ``wait_s``
    (after ``init_channels``): one dict per writer (participant, writer key, type name).

    Reads cyclonedds' built-in DCPSPublication topic through a participant of its own (kept
    for the process's life, like the SDK's entities: see ``DdsRobot.close``). Writers that
    were deleted meanwhile are left out."""
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.core import InstanceState
    from cyclonedds.domain import DomainParticipant

    with _factory_lock:
        if domain_id not in _discovery:
            dp = DomainParticipant(int(domain_id))
            _discovery[domain_id] = (dp, BuiltinDataReader(dp, BuiltinTopicDcpsPublication))
        reader = _discovery[domain_id][1]
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        for smp in reader.take(N=256):
            if getattr(smp, "topic_name", None) != topic:
                continue
            key = str(smp.key)
            if smp.sample_info.instance_state == InstanceState.Alive:
                found[key] = {"participant": str(smp.participant_key), "writer": key,
                              "type": str(smp.type_name)}
            else:
                found.pop(key, None)
        if time.monotonic() >= deadline:
            return list(found.values())
        time.sleep(0.02)


class NewestReader:
    """A DDS reader of ``topic`` that holds only the newest sample (history KEEP_LAST 1) and
    is read by polling (``take``): no Python runs per arriving message.

    The SDK's subscriber calls a Python handler on DDS's receive thread for every message.
    At 500 Hz that costs the process a few hundred microseconds per state (deserializing,
    the CRC, parsing) under the GIL; when the process is starved (a loaded CPU, a controller
    not at real-time priority) the receive thread falls behind and works through a queue of
    old messages, so the newest state the loop reads was measured up to seconds earlier
    while it looks fresh (measured in the demo with the simulated robot keeping real time:
    docs/realtime.md, "Stale states under load"). Polled, the loop
    reads the newest message whenever it reads, and DDS's C receive thread only overwrites
    the one cached sample. A participant of its own on the domain (after ``init_channels``),
    kept for the process's life like the SDK's entities (see ``DdsRobot.close``)."""

    def __init__(self, domain_id: int, topic: str, idl_type: Any) -> None:
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self._dp = DomainParticipant(int(domain_id))
        self._topic = Topic(self._dp, topic, idl_type)
        self._reader = DataReader(self._dp, self._topic, qos=Qos(Policy.History.KeepLast(1)))

    def take(self) -> Any:
        """The newest message that arrived since the last take, or None."""
        from cyclonedds.sub import InvalidSample

        got = self._reader.take(N=1)
        if not got or isinstance(got[-1], InvalidSample):
            return None
        return got[-1]


TICK_UNITS = (("ms", 1e3), ("us", 1e6))  # the Go2's (ms); Unitree's older legged SDK documents us
TICK_RATE_TOLERANCE = 0.1  # a measured rate within 10% of a unit's is taken as that unit


class TickClock:
    """The robot's state ``tick`` read against this host's monotonic clock, with its unit
    measured rather than assumed.

    The Go2's firmware counts milliseconds in ``LowState_.tick``; Unitree's older legged SDK
    documents the same field in microseconds, and a simulator may count its own steps. Over
    the first ``identify_s`` seconds of reads the tick's rate is measured (ticks per second,
    the uint32 wrap undone) and taken as ms or us when within 10% of theirs, as one tick per
    published state when within 10% of ``state_hz``, else as the measured rate itself (and
    logged). From it: ``skipped``, the states published between two reads that were never
    read (when the tick counts at least as fast as states come), and ``delay_ms()``, how
    late each state was read after the robot stamped it. The two clocks' offset is unknown,
    so the earliest read of the run counts as 0; their drift (tens of ppm: a few ms per
    minute) adds to the figure over long runs. Neither number controls anything: they are
    reported (``DdsRobot.stats``)."""

    def __init__(self, state_hz: float, *, identify_s: float = 1.0, keep: int = 1 << 18) -> None:
        self.state_hz = float(state_hz)
        self.identify_s = float(identify_s)
        self.hz: float | None = None  # ticks per second, once identified
        self.unit: str | None = None  # "ms", "us", "per state", "N Hz (measured)" or "not counting"
        self.skipped = 0
        self._prev: int | None = None  # the last raw tick
        self._ticks = 0  # ticks since the first read (unwrapped)
        self._t0 = 0.0
        self._gaps: list[int] = []  # tick gaps read before the unit was known
        self._reads: deque[tuple[float, int]] = deque(maxlen=keep)  # (read time, unwrapped tick)

    def add(self, tick: int, now: float) -> None:
        raw = int(tick) & 0xFFFFFFFF
        if self._prev is None:
            self._t0 = now
        else:
            gap = (raw - self._prev) & 0xFFFFFFFF
            self._ticks += gap
            if self.hz is not None:
                self.skipped += self._missed(gap)
            elif self.unit is None:
                self._gaps.append(gap)
        self._prev = raw
        self._reads.append((now, self._ticks))
        if self.unit is None and now - self._t0 >= self.identify_s:
            self._identify(self._ticks / (now - self._t0))

    def _identify(self, rate: float) -> None:
        known = (*TICK_UNITS, ("per state", self.state_hz))
        for name, hz in known:
            if abs(rate / hz - 1.0) <= TICK_RATE_TOLERANCE:
                self.unit, self.hz = name, hz
                break
        else:
            if rate <= 0:
                self.unit = "not counting"
                self._gaps.clear()
                log.warning("the robot's state tick did not advance in %.1f s: no state delay or "
                            "skipped-state count", self.identify_s)
                return
            self.unit, self.hz = f"{rate:.0f} Hz (measured)", rate
            log.info("the robot's state tick counts %.0f per second (not ms, us or one per "
                     "state): using the measured rate", rate)
        self.skipped += sum(self._missed(g) for g in self._gaps)
        self._gaps.clear()

    @property
    def resolves_states(self) -> bool:
        """Whether the tick tells consecutive states apart (it counts at least as fast as
        states come), so that ``skipped`` means something."""
        return self.hz is not None and self.hz >= self.state_hz * (1.0 - TICK_RATE_TOLERANCE)

    def _missed(self, gap: int) -> int:
        if not self.resolves_states:
            return 0
        assert self.hz is not None
        return max(0, int(round(gap * self.state_hz / self.hz)) - 1)

    def delay_ms(self) -> dict[str, float]:
        """How late each state was read after the robot stamped it, beyond the earliest of
        the run: median / p99 / max in ms ({} before the unit is known)."""
        from planner_runtime.bench.stats import summary

        if self.hz is None or not self._reads:
            return {}
        r = np.asarray(self._reads)
        d = r[:, 0] - r[:, 1] / self.hz
        return summary(d - d.min(), scale=1e3)


@functools.cache
def _crc():
    """The SDK's CRC, made once: its constructor reloads the compiled CRC library each time
    (about 0.6 ms), too slow for every state of a 500 Hz loop. ``Crc`` keeps no state."""
    from unitree_sdk2py.utils.crc import CRC

    return CRC()


def new_lowcmd_msg() -> Any:
    """A LowCmd_ framed for Go2 low-level control, all motors passive."""
    from unitree_sdk2py.idl.default import unitree_go_msg_dds__LowCmd_

    msg = unitree_go_msg_dds__LowCmd_()
    msg.head[0], msg.head[1] = go2.LOWCMD_HEAD
    msg.level_flag = go2.LOWCMD_LEVEL_FLAG
    msg.gpio = go2.LOWCMD_GPIO
    for i in range(NUM_MOTOR_SLOTS):
        m = msg.motor_cmd[i]
        m.mode = go2.MOTOR_MODE_SERVO if i < go2.NUM_JOINTS else 0
        m.q = go2.POS_STOP_F
        m.dq = go2.VEL_STOP_F
        m.kp = 0.0
        m.kd = 0.0
        m.tau = 0.0
    return msg


class LowCmdCrc:
    """The SDK's CRC-32 of a LowCmd_ whose only changing fields are the 12 leg motors'
    q, dq, tau, kp, kd: the frame is packed once in the C layout the SDK's CRC uses
    (812 bytes, 202 words covered), the motor floats are written into it with numpy, and
    the SDK's compiled ``crc32_core`` runs on it. About 10x cheaper than ``CRC().Crc``,
    which packs ~260 fields in Python; equal to it by test (random commands).
    ``matches(msg)`` says whether a message has the framing this packer assumes."""

    _FLOATS = ("q", "dq", "tau", "kp", "kd")  # C order inside MotorCmd_ after mode + 3 pad

    def __init__(self, template: Any) -> None:
        import ctypes

        self._lib = getattr(_crc(), "crc_lib", None)
        self._ptr_t = ctypes.POINTER(ctypes.c_uint32)
        self.buf = np.zeros(203, dtype="<u4")  # 812 bytes
        b = self.buf.view(np.uint8)
        b[0:2] = list(template.head)
        b[2], b[3] = template.level_flag, template.frame_reserve
        self.buf[1:3] = template.sn
        self.buf[3:5] = template.version
        b[20:22] = np.array([template.bandwidth], "<u2").view(np.uint8)
        f = self.buf.view("<f4")
        for i, m in enumerate(template.motor_cmd):
            b[24 + 36 * i] = m.mode
            f[7 + 9 * i:12 + 9 * i] = [getattr(m, k) for k in self._FLOATS]
            self.buf[12 + 9 * i:15 + 9 * i] = m.reserve
        b[744] = template.bms_cmd.off
        b[745:748] = list(template.bms_cmd.reserve)
        b[748:788] = list(template.wireless_remote)
        b[788:800] = list(template.led)
        b[800:802] = list(template.fan)
        b[802] = template.gpio
        self.buf[201] = template.reserve
        motors = [SDK_TO_OURS[j] for j in range(go2.NUM_JOINTS)]
        # float32 index of field k of our joint j
        self._idx = np.array([[7 + 9 * int(m) + k for k in range(5)] for m in motors])
        self._f = f

    def crc(self, cmd: LowCmd) -> int:
        vals = np.stack([cmd.q, cmd.dq, cmd.tau, cmd.kp, cmd.kd], axis=1).astype("<f4")
        self._f[self._idx] = vals
        if self._lib is None:  # non-Linux: the SDK's own pure-Python routine
            return int(_crc()._crc_py(self.buf[:202].tolist()))
        return int(self._lib.crc32_core(self.buf.ctypes.data_as(self._ptr_t), 202))


def fill_lowcmd(msg: Any, cmd: LowCmd, packer: LowCmdCrc | None = None) -> Any:
    """Write our LowCmd (SDK order) into a LowCmd_ and stamp its CRC: with ``packer`` (a
    ``LowCmdCrc`` built from this message's framing, which must not change between calls,
    as in ``DdsRobot``) the fast path, otherwise the SDK's ``CRC().Crc``."""
    for i in range(go2.NUM_JOINTS):
        m = msg.motor_cmd[int(SDK_TO_OURS[i])]
        m.mode = go2.MOTOR_MODE_SERVO
        m.q = float(cmd.q[i])
        m.dq = float(cmd.dq[i])
        m.kp = float(cmd.kp[i])
        m.kd = float(cmd.kd[i])
        m.tau = float(cmd.tau[i])
    msg.crc = packer.crc(cmd) if packer is not None else _crc().Crc(msg)
    return msg


def lowcmd_from_msg(msg: Any) -> LowCmd:
    n = go2.NUM_JOINTS
    mc = [msg.motor_cmd[int(SDK_TO_OURS[i])] for i in range(n)]
    return LowCmd(q=np.array([m.q for m in mc]), dq=np.array([m.dq for m in mc]),
                  kp=np.array([m.kp for m in mc]), kd=np.array([m.kd for m in mc]),
                  tau=np.array([m.tau for m in mc]))


def check_lowcmd(msg: Any) -> str | None:
    """Why a received LowCmd_ must not be applied (None when it is fine)."""
    if msg.crc != _crc().Crc(msg):
        return "bad_crc"
    if tuple(msg.head) != go2.LOWCMD_HEAD or msg.level_flag != go2.LOWCMD_LEVEL_FLAG:
        return "bad_header"
    return None


def new_lowstate_msg() -> Any:
    from unitree_sdk2py.idl.default import unitree_go_msg_dds__LowState_

    msg = unitree_go_msg_dds__LowState_()
    msg.head[0], msg.head[1] = go2.LOWCMD_HEAD
    msg.level_flag = go2.LOWCMD_LEVEL_FLAG
    return msg


def fill_lowstate(msg: Any, st: LowState, packer: LowStateCrc | None = None) -> Any:
    """Write our LowState into a LowState_ (what the robot publishes) and stamp its CRC:
    with ``packer`` (built from this message's framing) the fast path, else ``CRC().Crc``."""
    imu = msg.imu_state
    imu.quaternion = [float(v) for v in st.quaternion]
    imu.gyroscope = [float(v) for v in st.gyroscope]
    imu.accelerometer = [float(v) for v in st.accelerometer]
    w, x, y, z = (float(v) for v in st.quaternion)
    rpy = [math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)),
           math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x)))),
           math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))]
    imu.rpy = rpy
    for i in range(go2.NUM_JOINTS):
        m = msg.motor_state[int(SDK_TO_OURS[i])]
        m.mode = go2.MOTOR_MODE_SERVO
        m.q = float(st.q[i])
        m.dq = float(st.dq[i])
        m.tau_est = float(st.tau_est[i])
    msg.foot_force = [max(-32768, min(32767, round(float(f)))) for f in st.foot_force]
    msg.tick = int(st.tick) & 0xFFFFFFFF
    msg.wireless_remote = list(bytes(st.wireless_remote))
    msg.crc = packer.crc(st, rpy, msg.foot_force) if packer is not None else _crc().Crc(msg)
    return msg


class LowStateCrc:
    """The SDK's CRC-32 of the LowState_ a simulator publishes, computed from our LowState
    without the SDK's Python packing: the frame (everything ``fill_lowstate`` does not
    write) is packed once from ``template`` in the SDK's C layout (1180 bytes, 294 words
    covered); per message the IMU, the 12 motors' mode/q/dq/tau_est, foot force, tick and
    wireless_remote are written with numpy and the SDK's compiled ``crc32_core`` runs.
    Equal to ``CRC().Crc`` by test; only for messages filled by ``fill_lowstate``."""

    def __init__(self, template: Any) -> None:
        import ctypes

        self._lib = getattr(_crc(), "crc_lib", None)
        self._ptr_t = ctypes.POINTER(ctypes.c_uint32)
        self.buf = np.zeros(295, dtype="<u4")  # 1180 bytes
        b = self.buf.view(np.uint8)
        self._b = b
        self._f = self.buf.view("<f4")
        self._h = self.buf.view("<i2")
        b[0:2] = list(template.head)
        b[2], b[3] = template.level_flag, template.frame_reserve
        self.buf[1:3] = template.sn
        self.buf[3:5] = template.version
        b[20:22] = np.array([template.bandwidth], "<u2").view(np.uint8)
        imu = template.imu_state
        b[76] = np.array([imu.temperature], np.int8).view(np.uint8)[0]
        for i, m in enumerate(template.motor_state):
            off = 80 + 48 * i
            b[off] = m.mode
            self._f[off // 4 + 1:off // 4 + 8] = [m.q, m.dq, m.ddq, m.tau_est, m.q_raw, m.dq_raw, m.ddq_raw]
            b[off + 32] = np.array([m.temperature], np.int8).view(np.uint8)[0]
            self.buf[off // 4 + 9] = m.lost
            self.buf[off // 4 + 10:off // 4 + 12] = m.reserve
        bms = template.bms_state
        b[1040:1044] = [bms.version_high, bms.version_low, bms.status, bms.soc]
        b[1044:1048] = np.array([bms.current], "<i4").view(np.uint8)
        b[1048:1050] = np.array([bms.cycle], "<u2").view(np.uint8)
        b[1050:1054] = np.array(list(bms.bq_ntc) + list(bms.mcu_ntc), np.int8).view(np.uint8)
        b[1054:1084] = np.array(bms.cell_vol, "<u2").view(np.uint8)
        b[1092:1100] = np.array(template.foot_force_est, "<i2").view(np.uint8)
        b[1144] = template.bit_flag
        b[1148:1152] = np.array([template.adc_reel], "<f4").view(np.uint8)
        b[1152:1154] = np.array([template.temperature_ntc1, template.temperature_ntc2], np.int8).view(np.uint8)
        b[1156:1164] = np.array([template.power_v, template.power_a], "<f4").view(np.uint8)
        b[1164:1172] = np.array(template.fan_frequency, "<u2").view(np.uint8)
        self.buf[293] = template.reserve
        motors = np.array([int(SDK_TO_OURS[j]) for j in range(go2.NUM_JOINTS)])
        base = (80 + 48 * motors) // 4
        self._mode_idx = 80 + 48 * motors
        self._q_idx, self._dq_idx, self._tau_idx = base + 1, base + 2, base + 4

    def crc(self, st: LowState, rpy: list[float], msg_foot_force: list[int]) -> int:
        f, b = self._f, self._b
        f[6:10] = st.quaternion
        f[10:13] = st.gyroscope
        f[13:16] = st.accelerometer
        f[16:19] = rpy
        b[self._mode_idx] = go2.MOTOR_MODE_SERVO
        f[self._q_idx] = st.q
        f[self._dq_idx] = st.dq
        f[self._tau_idx] = st.tau_est
        self._h[542:546] = msg_foot_force
        self.buf[275] = int(st.tick) & 0xFFFFFFFF
        b[1104:1144] = np.frombuffer(bytes(st.wireless_remote), np.uint8)
        if self._lib is None:
            return int(_crc()._crc_py(self.buf[:294].tolist()))
        return int(self._lib.crc32_core(self.buf.ctypes.data_as(self._ptr_t), 294))


def lowstate_from_msg(msg: Any) -> LowState:
    imu = msg.imu_state
    ms = [msg.motor_state[int(SDK_TO_OURS[i])] for i in range(go2.NUM_JOINTS)]
    return LowState(
        quaternion=np.array(imu.quaternion, dtype=np.float64),
        gyroscope=np.array(imu.gyroscope, dtype=np.float64),
        accelerometer=np.array(imu.accelerometer, dtype=np.float64),
        q=np.array([m.q for m in ms]), dq=np.array([m.dq for m in ms]),
        tau_est=np.array([m.tau_est for m in ms]),
        foot_force=np.array(msg.foot_force, dtype=np.float64),
        tick=int(msg.tick), wireless_remote=bytes(bytearray(msg.wireless_remote)),
    )


def sleep_until(deadline: float, spin_s: float = 0.0) -> None:
    """Sleep until an absolute ``time.monotonic()`` deadline (optionally spinning the last
    ``spin_s`` for precision; spinning costs a core, so it is off by default)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0.0:
            return
        if left > spin_s:
            time.sleep(left - spin_s)
        elif spin_s <= 0.0:
            return


class DeadlinePacer:
    """Absolute deadlines start + k * period; never accumulates sleep error.

    A late iteration runs at once; periods that passed entirely while the process was not
    scheduled are skipped (counted in ``missed``), not replayed in a burst: a motor only
    needs the newest command, and the grid's phase is kept."""

    def __init__(self, period: float, spin_s: float = 0.0) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period = period
        self.spin_s = spin_s
        self.start = time.monotonic()
        self.k = 0
        self.overruns = 0
        self.missed = 0

    def wait(self) -> None:
        self.k += 1
        deadline = self.start + self.k * self.period
        now = time.monotonic()
        if now >= deadline:
            self.overruns += 1
            skipped = int((now - deadline) // self.period)
            self.missed += skipped
            self.k += skipped
            return
        sleep_until(deadline, self.spin_s)


class DdsRobot(RobotInterface):
    """The Go2 (or a stand-in) over DDS. ``dry_run`` creates no publisher at all, so no
    motor command can leave the process; the commands that would have gone are counted."""

    paces_itself = True

    def __init__(self, domain_id: int = 0, iface: str = "lo", *, dry_run: bool = False,
                 control_dt: float = go2.CONTROL_DT, check_state_crc: bool = True,
                 spin_s: float = 0.0, lowcmd_check_s: float = 1.0) -> None:
        from unitree_sdk2py.core.channel import ChannelPublisher
        from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_, LowState_

        init_channels(domain_id, iface)
        self.control_dt = control_dt
        self.dry_run = dry_run
        self.check_state_crc = check_state_crc
        self._lock = threading.Lock()
        self._state: LowState | None = None
        self._state_time = 0.0
        self._closed = False
        self.states_received = 0  # new states read (the loop reads the newest; see NewestReader)
        self.states_bad_crc = 0
        self.ticks = TickClock(1.0 / control_dt)  # states skipped and read delays, by the robot's tick
        self.commands_published = 0
        self.commands_dry_run = 0
        self.last_command: LowCmd | None = None
        self._msg = new_lowcmd_msg()
        self._crc = LowCmdCrc(self._msg)
        self._pub = None
        self.other_lowcmd_publishers: list[dict[str, str]] = []
        if lowcmd_check_s > 0:
            others = self.other_lowcmd_publishers = topic_publishers(TOPIC_LOWCMD, domain_id, lowcmd_check_s)
            if others:
                what = ", ".join(f"participant {o['participant']} ({o['type']})" for o in others)
                msg = (f"another process already publishes {TOPIC_LOWCMD} on DDS domain {domain_id} "
                       f"iface {iface!r}: {what}. Two processes commanding the motors fight each other. "
                       "Stop it first: if it is another controller (a second `planner-runtime "
                       "controller`, a Unitree example), end it; if it is the Go2's sport mode, "
                       "release it (`--release-sport-mode`, or the Unitree app).")
                if not dry_run:
                    raise DdsError(msg + " Refusing to publish motor commands.")
                log.warning("%s (dry run: nothing is published, so going on)", msg)
        if not dry_run:
            self._pub = ChannelPublisher(TOPIC_LOWCMD, LowCmd_)
            self._pub.Init()
        # rt/lowstate polled for its newest message (NewestReader): never a backlog of old states
        self._states = NewestReader(domain_id, TOPIC_LOWSTATE, LowState_)
        self.pacer = DeadlinePacer(control_dt, spin_s=spin_s)
        log.info("DDS robot on domain %d iface %s%s", domain_id, iface,
                 " (dry run: no motor commands are published)" if dry_run else "")

    def _poll(self) -> None:
        """Take the newest rt/lowstate, if one arrived since the last poll (CRC checked)."""
        msg = self._states.take()
        if msg is None or self._closed:
            return
        now = time.monotonic()
        if self.check_state_crc and msg.crc != _crc().Crc(msg):
            self.states_bad_crc += 1
            return
        st = lowstate_from_msg(msg)
        with self._lock:
            self._state = st
            self._state_time = now
            self.states_received += 1
            self.ticks.add(st.tick, now)

    def wait_for_state(self, timeout: float) -> LowState:
        deadline = time.monotonic() + timeout
        while True:
            self._poll()
            if self._state is not None:
                return self._state
            if time.monotonic() >= deadline:
                raise DdsError(f"no valid {TOPIC_LOWSTATE} within {timeout:.1f} s "
                               f"({self.states_bad_crc} dropped for a bad CRC): is the robot "
                               "(or `planner-runtime sim --dds`) running on this domain and interface?")
            time.sleep(0.001)

    def read_state(self) -> LowState:
        """The newest state the robot published (polled now)."""
        self._poll()
        with self._lock:
            if self._state is None:
                raise DdsError(f"no {TOPIC_LOWSTATE} received yet")
            return self._state

    def state_age(self) -> float:
        with self._lock:
            return float("inf") if self._state is None else time.monotonic() - self._state_time

    def write_command(self, cmd: LowCmd) -> None:
        if not cmd.is_finite():
            # The controller's filter never sends this; refuse as the last line of defence.
            raise ValueError("LowCmd contains NaN or inf; refusing to publish it")
        fill_lowcmd(self._msg, cmd, self._crc)
        self.last_command = cmd
        if self._pub is None:
            self.commands_dry_run += 1
            return
        if self._pub.Write(self._msg):
            self.commands_published += 1

    def wait_tick(self) -> None:
        self.pacer.wait()

    def now(self) -> float:
        return time.monotonic()

    def stats(self) -> dict:
        return {"states_received": self.states_received, "states_bad_crc": self.states_bad_crc,
                "commands_published": self.commands_published,
                "commands_dry_run": self.commands_dry_run, "overruns": self.pacer.overruns,
                "missed_periods": self.pacer.missed, "dry_run": self.dry_run,
                "other_lowcmd_publishers": len(self.other_lowcmd_publishers),
                "states_skipped": self.states_skipped if self.ticks.resolves_states else None,
                "state_delay_ms": self.state_delay_ms(),
                "tick_unit": self.ticks.unit}

    @property
    def states_skipped(self) -> int:
        """States the robot published between two reads, never read (by its tick)."""
        return self.ticks.skipped

    def state_delay_ms(self) -> dict[str, float]:
        """How late each state was read after the robot stamped it (``TickClock.delay_ms``).
        Up to a 2 ms loop period is the polling itself; more is a loop that ran late."""
        return self.ticks.delay_ms()

    def close(self) -> None:
        # The DDS entities are deliberately not deleted: deleting a reader or writer while
        # cyclonedds runs a listener callback deadlocks in the Python binding (seen with
        # cyclonedds 11). They live as long as the process's channel factory does; the
        # handler ignores everything after close().
        self._closed = True
