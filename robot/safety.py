"""The controller's safety layer: the mode state machine and the final command filter.

State machine (every transition is logged with a reason and kept in ``transitions``):

    PASSIVE --(state ok, passive_s)--> STAND_UP --(stand_up_s)--> STAND
    STAND --(valid chunk)--> PLANNING
    PLANNING --(no valid chunk for grace_s)--> HOLD        (hold the last target)
    HOLD --(valid chunk)--> PLANNING
    HOLD --(hold_s)--> STAND                               (ramp back to the default pose)
    STAND --(no valid chunk for stand_timeout_s)--> DAMPING
    any --(stop: SIGINT/SIGTERM, remote L2+B, non-finite target or state, a planner target
           beyond the joint limits by more than target_limit_margin, stale state, fall:
           tilt over fall_tilt_rad)--> DAMPING        (latched)
    DAMPING --(operator resume, only when the state is fresh, finite and upright)--> STAND_UP

Faults latch: once in DAMPING the machine never leaves it by itself (a planner that comes
back, a state that becomes fresh again or a robot set upright change nothing). Only an
explicit operator action leaves it (``request_resume``: the wireless remote's L2 + A or the
controller's local control command, see robot/controller.py), and only when the reason
has cleared: a stale, missing or non-finite state or a tilt over ``fall_tilt_rad`` refuses
the resume with a logged reason. A stop asked for by a signal (the process is ending) is
not resumable. After a resume the robot stands up from wherever it lies, waits in STAND for
a planner as at start (``startup_wait_s``), and plans again only on a new valid chunk.

Targets per mode: PASSIVE sends zero torque (kp = kd = tau = 0, q = PosStopF, dq = VelStopF:
the SDK's "no position / velocity control"); STAND_UP interpolates from the measured pose
to DEFAULT_JOINT_POS over ``stand_up_s`` with the stand gains; STAND ramps from wherever the
legs were commanded to the default pose (``stand_ramp_s``) with the stand gains; PLANNING and
HOLD use the planner gains; DAMPING is kp = 0 with q = PosStopF, kd = DAMPING_KD toward
dq = 0.

``CommandFilter`` is the last thing between the controller and the motors: a non-finite
command is replaced by damping (and the state machine is told), position targets are
clamped to the joint range +/- ``go2.TARGET_OVERDRIVE``, velocity targets to the velocity limit, gains to sane ranges;
a joint with kp = 0 gets q = PosStopF and one with kd = 0 gets dq = VelStopF (whatever the
command said: those targets are not used, and the SDK's convention says so on the wire),
and the PD torque predicted from the latest measured state is kept within the torque
limits by moving the position target towards the measured position (or clamping the
feed-forward torque and kd where kp = 0). Joints measured beyond the velocity limit may
only be braked. This is a prediction from the state at command time; the firmware (or the
simulator) still clamps torque at its own rate.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from robot import go2_constants as go2
from robot.types import LowCmd, LowState

log = logging.getLogger("robot.safety")
FALL = "fall"  # the reason's first word when the trunk tilted past the fall limit (SafetyStateMachine.fallen)


class Mode(str, enum.Enum):
    PASSIVE = "passive"
    STAND_UP = "stand_up"
    STAND = "stand"
    PLANNING = "planning"
    HOLD = "hold"
    DAMPING = "damping"


@dataclass(frozen=True)
class Transition:
    t: float  # controller clock (robot.now()), seconds
    src: Mode
    dst: Mode
    reason: str

    def as_dict(self) -> dict:
        return {"t": self.t, "from": self.src.value, "to": self.dst.value, "reason": self.reason}


@dataclass
class SafetyConfig:
    passive_s: float = 0.5  # zero torque after start, while the state settles
    stand_up_s: float = 2.0  # interpolation to the default pose
    grace_s: float = 0.2  # planning: no valid chunk this long -> HOLD
    hold_s: float = 0.5  # HOLD this long without a chunk -> STAND
    stand_ramp_s: float = 1.0  # STAND: ramp from the held target to the default pose
    stand_timeout_s: float = 3.0  # watchdog STAND without a chunk this long -> DAMPING
    startup_wait_s: float = 60.0  # first STAND (after stand-up) waits this long for a planner
    state_timeout_s: float = 0.1  # no fresh robot state this long -> DAMPING
    fall_tilt_rad: float = go2.FALL_TILT_RAD  # trunk tilt from upright above this -> DAMPING
    # A planner target this far (rad) beyond a joint's range is a broken plan, not a gait:
    # DAMPING. Smaller excursions are clamped by the command filter to the range +/-
    # go2.TARGET_OVERDRIVE (0.5 rad), which gaits use; this margin leaves 0.5 rad above that.
    target_limit_margin: float = 1.0
    planning_kp: float = go2.DEFAULT_KP
    planning_kd: float = go2.DEFAULT_KD
    stand_kp: float = go2.STAND_KP
    stand_kd: float = go2.STAND_KD
    damping_kd: float = go2.DAMPING_KD

    def validate(self) -> SafetyConfig:
        for name in ("passive_s", "stand_up_s", "grace_s", "hold_s", "stand_ramp_s",
                     "stand_timeout_s", "startup_wait_s", "state_timeout_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0.0):
                raise ValueError(f"SafetyConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.stand_up_s <= 0.0:
            raise ValueError(f"SafetyConfig.stand_up_s must be > 0, got {self.stand_up_s!r}")
        if self.stand_timeout_s < self.stand_ramp_s:
            raise ValueError("SafetyConfig.stand_timeout_s must be >= stand_ramp_s "
                             f"({self.stand_timeout_s} < {self.stand_ramp_s})")
        for name in ("planning_kp", "planning_kd", "stand_kp", "stand_kd", "damping_kd"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 200.0):
                raise ValueError(f"SafetyConfig.{name} must be in [0, 200], got {v!r}")
        if not 0.0 < self.fall_tilt_rad <= math.pi:
            raise ValueError(f"SafetyConfig.fall_tilt_rad must be in (0, pi], got {self.fall_tilt_rad}")
        if not self.target_limit_margin >= 0.0:
            raise ValueError(f"SafetyConfig.target_limit_margin must be >= 0, got {self.target_limit_margin}")
        return self


def _pd(q: np.ndarray, kp: float, kd: float) -> LowCmd:
    n = go2.NUM_JOINTS
    return LowCmd(q=np.array(q, dtype=np.float64), dq=np.zeros(n),
                  kp=np.full(n, kp), kd=np.full(n, kd), tau=np.zeros(n))


def damping_command(kd: float = go2.DAMPING_KD) -> LowCmd:
    """No position control (kp = 0, q = PosStopF), velocity control toward 0 with kd > 0:
    the motors only resist motion (the SDK's 'damping')."""
    n = go2.NUM_JOINTS
    return LowCmd(q=np.full(n, go2.POS_STOP_F), dq=np.zeros(n), kp=np.zeros(n), kd=np.full(n, kd),
                  tau=np.zeros(n))


def tilt_rad(quaternion: np.ndarray) -> float:
    """Angle (rad) between the trunk's z axis and the world's up, from a w, x, y, z quaternion
    (any norm): 0 upright, pi/2 on its side, pi upside down."""
    _w, x, y, _z = (float(v) for v in quaternion)
    n = float(np.dot(quaternion, quaternion))
    cos_tilt = 1.0 - 2.0 * (x * x + y * y) / max(n, 1e-12)  # = -projected gravity z
    return math.acos(min(1.0, max(-1.0, cos_tilt)))


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class SafetyStateMachine:
    """Decides the mode and the (unfiltered) command for each 500 Hz control tick.

    Feed it with ``step(t, state, planner_target, chunk_fresh)`` once per control tick,
    where ``planner_target`` is the joint target from the current chunk (None if there is
    none) and ``chunk_fresh`` says that a new valid chunk was accepted on this tick.
    """

    def __init__(self, config: SafetyConfig | None = None) -> None:
        self.config = (config or SafetyConfig()).validate()
        self.mode = Mode.PASSIVE
        self.transitions: list[Transition] = []
        self._t_mode: float | None = None  # time the current mode was entered (set by step)
        self._t_start: float | None = None
        self._t_last_chunk: float | None = None
        self._ramp_from: np.ndarray | None = None
        self._last_target: np.ndarray | None = None  # last PD target actually commanded
        self._startup = True  # the first STAND waits for a planner with startup_wait_s
        self._stop_reason: str | None = None
        self._stop_resumable = True
        self._resume_reason: str | None = None
        # Why the robot is in DAMPING (None outside it), whether an operator may resume, and
        # every resume attempt with its outcome.
        self.fault: str | None = None
        self.fault_resumable = True
        self.resumes: list[dict] = []

    # -- events -----------------------------------------------------------------------
    def request_stop(self, reason: str, resumable: bool = True) -> None:
        """Latch a stop (signal, remote, fault); applied on the next ``step``. A stop that is
        not ``resumable`` (the process is ending) can never be left by a resume."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if not resumable:
            self._stop_resumable = False
            self.fault_resumable = False

    def request_resume(self, reason: str) -> None:
        """Ask to leave DAMPING (an operator action); tried on the next ``step``, which
        logs and records the outcome in ``resumes``."""
        self._resume_reason = reason

    def resume_problem(self, state: LowState | None, state_age: float = 0.0) -> str | None:
        """Why a resume would be refused now (None: it would be accepted)."""
        if self.mode is not Mode.DAMPING:
            return f"nothing to resume: the robot is in {self.mode.value}, not damping"
        if not self.fault_resumable:
            return f"the stop ({self.fault}) ends the controller; restart it"
        if state is None:
            return "no robot state"
        if state_age > self.config.state_timeout_s:
            return f"robot state stale for {state_age:.3f} s"
        arrays = (state.quaternion, state.gyroscope, state.q, state.dq)
        if not all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays):
            return "non-finite robot state"
        tilt = tilt_rad(np.asarray(state.quaternion, dtype=np.float64))
        if tilt > self.config.fall_tilt_rad:
            return (f"the robot is tilted {tilt:.2f} rad (limit {self.config.fall_tilt_rad:.2f}): "
                    "set it upright (on its belly or feet) first")
        return None

    @property
    def stopped(self) -> bool:
        return self.mode is Mode.DAMPING

    @property
    def fallen(self) -> bool:
        """Damping because the trunk tilted past the fall limit (not an operator's or other stop)."""
        return self.mode is Mode.DAMPING and (self.fault or "").startswith(f"{FALL}:")

    def _go(self, t: float, dst: Mode, reason: str) -> None:
        if dst is self.mode:
            return
        tr = Transition(t=t, src=self.mode, dst=dst, reason=reason)
        self.transitions.append(tr)
        if dst is Mode.DAMPING:
            self.fault = reason
            self.fault_resumable = self._stop_resumable
        elif self.mode is Mode.DAMPING:
            self.fault = None
        level = logging.WARNING if dst in (Mode.DAMPING, Mode.HOLD) else logging.INFO
        log.log(level, "mode %s -> %s at t=%.3f: %s", self.mode.value, dst.value, t, reason)
        self.mode = dst
        self._t_mode = t

    def _mode_age(self, t: float) -> float:
        """Seconds since the current mode was entered."""
        if self._t_mode is None:
            raise RuntimeError("SafetyStateMachine: the mode has no start time before the first step()")
        return t - self._t_mode

    def _ramp_to_default(self, a: float) -> np.ndarray:
        """The pose the fraction ``a`` of the way from the ramp's start pose to the default pose."""
        if self._ramp_from is None:
            raise RuntimeError(f"SafetyStateMachine: {self.mode.value} has no pose to ramp from "
                               "(set when the mode is entered)")
        return (1.0 - a) * self._ramp_from + a * go2.DEFAULT_JOINT_POS

    @property
    def last_chunk_time(self) -> float | None:
        return self._t_last_chunk

    def first_time(self, dst: Mode) -> float | None:
        return next((tr.t for tr in self.transitions if tr.dst is dst), None)

    # -- the tick ---------------------------------------------------------------------
    def step(self, t: float, state: LowState | None, planner_target: np.ndarray | None,
             chunk_fresh: bool, state_age: float = 0.0) -> LowCmd:
        cfg = self.config
        if self._t_start is None:
            self._t_start = t
            self._t_mode = t
        if chunk_fresh:
            self._t_last_chunk = t

        # Stops and faults first: they win over everything else.
        if self.mode is not Mode.DAMPING:
            fault = self._stop_reason or self._check_faults(state, state_age, planner_target)
            if fault is not None:
                self._go(t, Mode.DAMPING, fault)
            self._resume_reason = None  # a resume asked for outside DAMPING means nothing
        elif self._resume_reason is not None:
            self._try_resume(t, state, state_age)
        if self.mode is Mode.DAMPING:
            return damping_command(cfg.damping_kd)
        if state is None:  # only possible in PASSIVE: wait for the first state
            self._t_mode = t
            return LowCmd.zero_torque()  # _check_faults guarantees a state outside DAMPING
        dt_mode = self._mode_age(t)

        if self.mode is Mode.PASSIVE:
            if dt_mode >= cfg.passive_s:
                self._ramp_from = np.array(state.q, dtype=np.float64)
                self._go(t, Mode.STAND_UP, f"passive for {dt_mode:.2f} s with valid state")
            else:
                return LowCmd.zero_torque()

        if self.mode is Mode.STAND_UP:
            dt_mode = self._mode_age(t)
            if dt_mode >= cfg.stand_up_s:
                self._startup = True
                self._ramp_from = go2.DEFAULT_JOINT_POS.copy()
                self._go(t, Mode.STAND, f"stand-up done after {cfg.stand_up_s:.2f} s")
            else:
                a = _smoothstep(dt_mode / cfg.stand_up_s)
                q = self._ramp_to_default(a)
                return self._emit(_pd(q, cfg.stand_kp, cfg.stand_kd))

        if self.mode is Mode.STAND:
            if chunk_fresh and planner_target is not None:
                self._go(t, Mode.PLANNING, "valid chunk received")
            else:
                dt_mode = self._mode_age(t)
                limit = cfg.startup_wait_s if self._startup else cfg.stand_timeout_s
                if dt_mode >= limit:
                    what = "no planner after stand-up" if self._startup else "watchdog"
                    self._go(t, Mode.DAMPING, f"{what}: no valid chunk for {dt_mode:.2f} s in stand")
                    return damping_command(cfg.damping_kd)
                a = _smoothstep(dt_mode / cfg.stand_ramp_s) if cfg.stand_ramp_s > 0 else 1.0
                q = self._ramp_to_default(a)
                kp = (1.0 - a) * cfg.planning_kp + a * cfg.stand_kp if not self._startup else cfg.stand_kp
                kd = (1.0 - a) * cfg.planning_kd + a * cfg.stand_kd if not self._startup else cfg.stand_kd
                return self._emit(_pd(q, kp, kd))

        if self.mode is Mode.HOLD:
            if chunk_fresh and planner_target is not None:
                self._go(t, Mode.PLANNING, "valid chunk received again")
            elif self._mode_age(t) >= cfg.hold_s:
                self._startup = False
                self._ramp_from = (self._last_target.copy() if self._last_target is not None
                                   else np.array(state.q, dtype=np.float64))
                self._go(t, Mode.STAND, f"watchdog: held for {self._mode_age(t):.2f} s, returning to stand")
                return self.step(t, state, None, False, state_age)
            else:
                q = self._last_target if self._last_target is not None else state.q
                return self._emit(_pd(q, cfg.planning_kp, cfg.planning_kd))

        # PLANNING
        since = t - self._t_last_chunk if self._t_last_chunk is not None else self._mode_age(t)
        if since > cfg.grace_s or planner_target is None:
            why = (f"watchdog: no valid chunk for {since:.3f} s (grace {cfg.grace_s:.3f} s)"
                   if planner_target is not None
                   else f"watchdog: chunk expired after {since:.3f} s with no newer valid chunk")
            self._go(t, Mode.HOLD, why)
            q = self._last_target if self._last_target is not None else state.q
            return self._emit(_pd(q, cfg.planning_kp, cfg.planning_kd))
        return self._emit(_pd(planner_target, cfg.planning_kp, cfg.planning_kd))

    def _try_resume(self, t: float, state: LowState | None, state_age: float) -> None:
        why, self._resume_reason = self._resume_reason, None
        problem = self.resume_problem(state, state_age)
        self.resumes.append({"t": t, "by": why, "accepted": problem is None,
                             "fault": self.fault, "refused": problem})
        if problem is not None:
            log.warning("resume (%s) refused at t=%.3f: %s; the robot stays in damping", why, t, problem)
            return
        assert state is not None
        fault = self.fault
        self._stop_reason = None
        self._t_last_chunk = None
        self._last_target = None
        self._startup = True
        self._ramp_from = np.array(state.q, dtype=np.float64)
        self._go(t, Mode.STAND_UP, f"operator resume ({why}) after: {fault}")

    def _emit(self, cmd: LowCmd) -> LowCmd:
        if np.all(np.isfinite(cmd.q)):
            self._last_target = cmd.q.copy()
        return cmd

    def _check_faults(self, state: LowState | None, state_age: float,
                      planner_target: np.ndarray | None) -> str | None:
        cfg = self.config
        if state is None:
            return "no robot state" if self.mode is not Mode.PASSIVE else None
        if state_age > cfg.state_timeout_s:
            return f"robot state stale for {state_age:.3f} s (limit {cfg.state_timeout_s:.3f} s)"
        arrays = (state.quaternion, state.gyroscope, state.q, state.dq)
        if not all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays):
            return "non-finite robot state"
        if planner_target is not None:
            if not np.all(np.isfinite(planner_target)):
                return "non-finite planner target"
            over = np.maximum(go2.JOINT_POS_LOWER - planner_target, planner_target - go2.JOINT_POS_UPPER)
            j = int(np.argmax(over))
            if over[j] > cfg.target_limit_margin:
                return (f"planner target for {go2.JOINT_NAMES[j]} {planner_target[j]:.3f} rad is "
                        f"{over[j]:.3f} rad beyond its joint range (margin {cfg.target_limit_margin:.2f})")
        if self.mode in (Mode.PLANNING, Mode.HOLD, Mode.STAND) and not self._startup_stand():
            tilt = tilt_rad(np.asarray(state.quaternion, dtype=np.float64))
            if tilt > cfg.fall_tilt_rad:
                return f"{FALL}: trunk tilted {tilt:.2f} rad > {cfg.fall_tilt_rad:.2f} rad"
        return None

    def _startup_stand(self) -> bool:
        # A robot standing up from lying is upright; tilt checks apply once it walks.
        return self.mode is Mode.STAND and self._startup and self._t_last_chunk is None


@dataclass
class FilterStats:
    commands: int = 0
    nonfinite: int = 0
    pos_clamped: int = 0
    vel_clamped: int = 0
    torque_clamped: int = 0
    gain_clamped: int = 0
    overspeed_braked: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CommandFilter:
    """The final gate: nothing non-finite or out of limits reaches the motors."""

    # position targets: the joint range +/- go2.TARGET_OVERDRIVE (see go2_constants)
    q_lower: np.ndarray = field(default_factory=lambda: go2.JOINT_POS_LOWER - go2.TARGET_OVERDRIVE)
    q_upper: np.ndarray = field(default_factory=lambda: go2.JOINT_POS_UPPER + go2.TARGET_OVERDRIVE)
    vel_limit: np.ndarray = field(default_factory=lambda: go2.JOINT_VEL_LIMIT.copy())
    torque_limit: np.ndarray = field(default_factory=lambda: go2.TORQUE_LIMIT.copy())
    kp_max: float = 100.0
    kd_max: float = 10.0
    damping_kd: float = go2.DAMPING_KD
    stats: FilterStats = field(default_factory=FilterStats)

    def apply(self, cmd: LowCmd, state: LowState | None) -> tuple[LowCmd, bool]:
        """Return (safe command, ok). ok is False when the input was replaced by damping
        (non-finite values anywhere); the caller must then go to DAMPING."""
        self.stats.commands += 1
        if not cmd.is_finite() or (state is not None and not (
                np.all(np.isfinite(state.q)) and np.all(np.isfinite(state.dq)))):
            self.stats.nonfinite += 1
            return damping_command(self.damping_kd), False
        kp = np.clip(cmd.kp, 0.0, self.kp_max)
        kd = np.clip(cmd.kd, 0.0, self.kd_max)
        if np.any(kp != cmd.kp) or np.any(kd != cmd.kd):
            self.stats.gain_clamped += 1
        # Targets without a gain are not used by the motor: the SDK's sentinels go there.
        pos_ctl, vel_ctl = kp > 0.0, kd > 0.0
        q = np.clip(cmd.q, self.q_lower, self.q_upper)
        if np.any((q != cmd.q) & pos_ctl):
            self.stats.pos_clamped += 1
        q = np.where(pos_ctl, q, go2.POS_STOP_F)
        dq = np.clip(cmd.dq, -self.vel_limit, self.vel_limit)
        if np.any((dq != cmd.dq) & vel_ctl):
            self.stats.vel_clamped += 1
        dq = np.where(vel_ctl, dq, go2.VEL_STOP_F)
        tau = np.clip(cmd.tau, -self.torque_limit, self.torque_limit)
        if state is None:
            # No measurement to predict torque from: refuse to drive, only damp.
            return damping_command(self.damping_kd), False
        mq = np.asarray(state.q, dtype=np.float64)
        mdq = np.asarray(state.dq, dtype=np.float64)
        tau_pd = kp * (q - mq) + kd * (dq - mdq) + tau
        lim = self.torque_limit.copy()
        # Over the velocity limit: only torque that brakes the joint is allowed.
        over = np.abs(mdq) > self.vel_limit
        if np.any(over):
            self.stats.overspeed_braked += 1
            accel = over & (np.sign(tau_pd) == np.sign(mdq))
            lim = np.where(accel, 0.0, lim)
        lo = np.where(over & (mdq < 0), 0.0, -lim)  # braking a negative speed: tau >= 0
        hi = np.where(over & (mdq > 0), 0.0, lim)
        lo = np.minimum(lo, hi)
        tau_ok = np.clip(tau_pd, lo, hi)
        bad = tau_ok != tau_pd
        if np.any(bad):
            self.stats.torque_clamped += 1
            has_kp = bad & (kp > 1e-9)
            # kp > 0: move the position target so the predicted PD torque is tau_ok.
            q = np.where(has_kp, mq + (tau_ok - kd * (dq - mdq) - tau) / np.where(kp > 1e-9, kp, 1.0), q)
            no_kp = bad & ~has_kp
            if np.any(no_kp):
                # kp = 0 (damping / torque mode): bound tau_ff, then kd, to the limit.
                tau = np.where(no_kp, np.clip(tau, lo, hi), tau)
                dv = np.abs(dq - mdq)
                room = np.maximum(np.maximum(np.abs(lo), np.abs(hi)) - np.abs(tau), 0.0)
                kd = np.where(no_kp & (dv > 1e-9), np.minimum(kd, room / np.maximum(dv, 1e-9)), kd)
        out = LowCmd(q=q, dq=dq, kp=kp, kd=kd, tau=tau)
        if not out.is_finite():  # defensive: arithmetic above must never create NaN
            self.stats.nonfinite += 1
            return damping_command(self.damping_kd), False
        return out, True
