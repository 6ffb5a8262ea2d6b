"""The Go2 controller loop: 500 Hz PD commands, a 50 Hz policy tick, chunks from a planner.

Works against any ``robot.interface.RobotInterface``: the DDS bridge (real robot or the
simulator standing in for it; its ``wait_tick`` sleeps until the next absolute monotonic
deadline) or an in-process simulator (its ``wait_tick`` advances physics; with
``realtime=True`` the loop is additionally paced on absolute deadlines).

Every control tick: read the state, (every ``policy_decimation`` ticks) send an observation
built by ``robot.observation`` to the planner, take the newest valid chunk, pick the action
whose time slot contains now (actions stamped t0 + i*dt; earlier ones are skipped, at most
``max_actions`` of a chunk are executed, then the last is held), let the safety state
machine decide the command, pass it through the command filter and write it.

All times are the robot's clock (``robot.now()``): monotonic seconds over DDS, simulated
seconds in-process. Observation stamps use the same clock, and the service only echoes
them, so chunk stamps need no clock synchronization.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from planner_runtime.protocol import ActionChunk, Observation
from robot import go2_constants as go2
from robot import wireless_remote
from robot.actions import PROJECT, ActionSemantics
from robot.interface import RobotInterface
from robot.observation import ACTION_DIM, CONDITION_NAMES, ConditionBuilder, build_state
from robot.safety import CommandFilter, Mode, SafetyConfig, SafetyStateMachine, damping_command
from robot.types import LowCmd, LowState

log = logging.getLogger("robot.controller")


class PlannerLink(Protocol):
    """What the controller needs from a planner connection (non-blocking)."""

    def send_observation(self, obs: Observation) -> None: ...

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        """The newest chunk received (waiting up to ``timeout`` s), or None."""
        ...

    def close(self) -> None: ...


class CommandSchedule:
    """Piecewise-constant velocity command [vx, vy, yaw] over time since planning began."""

    def __init__(self, segments: list[tuple[float, float, float, float]] | None = None) -> None:
        segs = sorted(segments or [(0.0, 0.0, 0.0, 0.0)], key=lambda s: s[0])
        for s in segs:
            if len(s) != 4 or not all(np.isfinite(v) for v in s):
                raise ValueError(f"command segment must be (t, vx, vy, yaw) finite numbers, got {s}")
        if segs[0][0] > 0.0:
            segs.insert(0, (0.0, 0.0, 0.0, 0.0))
        self.segments = [tuple(float(v) for v in s) for s in segs]

    @classmethod
    def constant(cls, vx: float, vy: float, yaw: float) -> CommandSchedule:
        return cls([(0.0, vx, vy, yaw)])

    @classmethod
    def parse(cls, text: str) -> CommandSchedule:
        """'T:vx,vy,yaw;T:vx,vy,yaw;...' e.g. '0:0.5,0,0;5:0,0,0.5'."""
        segs = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            try:
                t, vals = part.split(":")
                vx, vy, yaw = (float(v) for v in vals.split(","))
                segs.append((float(t), vx, vy, yaw))
            except ValueError as exc:
                raise ValueError(f"bad schedule segment {part!r}: expected T:vx,vy,yaw") from exc
        if not segs:
            raise ValueError(f"empty command schedule {text!r}")
        return cls(segs)

    def __call__(self, t: float) -> np.ndarray:
        cur = self.segments[0]
        for s in self.segments:
            if s[0] <= t:
                cur = s
        return np.array(cur[1:], dtype=np.float64)


@dataclass
class ControllerConfig:
    policy_decimation: int = 10  # control ticks per policy tick (500 Hz / 50 Hz)
    max_actions: int = go2.CHUNK_SIZE  # actions of one chunk executed before holding
    # Policy ticks between observations sent: the paper's action chunking executes c = 4
    # actions per plan while the next plan is computed (Appendix O). 1 replans every tick.
    replan_every: int = go2.CHUNK_SIZE
    realtime: bool = False  # pace an in-process simulator on absolute wall-clock deadlines
    lockstep: bool = False  # in-process: wait for the chunk answering each observation
    lockstep_timeout_s: float = 0.5
    max_future_s: float = 0.05  # a chunk stamped further in the future is refused
    record: bool = False  # keep a per-tick trace (tests, plots)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    # What an action means (pose, scale, PD gains): the engine's, from its manifest
    # (check_planner_metadata); the planning PD gains of the safety machine follow it.
    semantics: ActionSemantics = PROJECT
    # The engine's condition layout (manifest observation.condition_names): the command, then
    # the history blocks it was trained with (robot.observation.ConditionBuilder).
    condition_names: tuple[str, ...] = CONDITION_NAMES

    def validate(self) -> ControllerConfig:
        if self.policy_decimation < 1:
            raise ValueError(f"policy_decimation must be >= 1, got {self.policy_decimation}")
        if self.max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {self.max_actions}")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if not self.lockstep_timeout_s > 0:
            raise ValueError(f"lockstep_timeout_s must be > 0, got {self.lockstep_timeout_s}")
        ConditionBuilder(self.condition_names)  # refuses a layout it cannot build
        bad = self.semantics.check()
        if bad:
            raise ValueError("action semantics the Go2 controller cannot execute: " + "; ".join(bad))
        self.safety = replace(self.safety, planning_kp=self.semantics.kp, planning_kd=self.semantics.kd)
        self.safety.validate()
        return self


@dataclass
class TickRecord:
    t: float
    wall: float
    mode: str
    q_target: np.ndarray
    kp: float
    q: np.ndarray
    base_lin_vel: np.ndarray | None


class Controller:
    """One controller instance drives one robot; ``run`` blocks until done or stopped."""

    def __init__(self, robot: RobotInterface, planner: PlannerLink | None = None,
                 command: CommandSchedule | None = None,
                 config: ControllerConfig | None = None, velocity_estimator=None) -> None:
        self.robot = robot
        # Optional robot.velocity_estimator.VelocityEstimator: where the robot has no velocity
        # sensor, tracking is reported against its estimate (updated at the policy rate).
        self.velocity_estimator = velocity_estimator
        self.tracking: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.planner = planner
        self.command = command or CommandSchedule()
        self.config = (config or ControllerConfig()).validate()
        self.safety = SafetyStateMachine(self.config.safety)
        self.condition = ConditionBuilder(self.config.condition_names)
        # The previous policy tick's state and executed action (history conditions).
        self._hist: tuple[np.ndarray, np.ndarray] | None = None
        self._tick_state: np.ndarray | None = None
        self.filter = CommandFilter(damping_kd=self.config.safety.damping_kd)
        self.tick = 0
        self.seq = 0
        self.chunk: ActionChunk | None = None
        self._chunk_last_index = -1
        self._t_planning: float | None = None
        self.counts = {"obs_sent": 0, "chunks_accepted": 0, "actions_executed": 0,
                       "actions_skipped": 0, "send_errors": 0}
        self.rejected: dict[str, int] = {}
        self.latencies: list[float] = []  # plan receipt - observation stamp (s)
        self.periods: list[float] = []  # wall-clock period of each loop iteration (s)
        self.trace: list[TickRecord] = []
        self._last_wall: float | None = None
        self._pacer = None
        if self.config.realtime and not getattr(robot, "paces_itself", False):
            from robot.dds_bridge import DeadlinePacer

            self._pacer = DeadlinePacer(robot.control_dt)
        self.last_command: LowCmd | None = None
        self.t_start: float | None = None

    # -------------------------------------------------------------------- control
    def request_stop(self, reason: str) -> None:
        self.safety.request_stop(reason)

    @property
    def mode(self) -> Mode:
        return self.safety.mode

    def run(self, duration: float | None = None, damping_linger_s: float = 0.5,
            stop_when=None) -> dict:
        """Run until ``duration`` (robot clock) or a stop; after DAMPING keep sending the
        damping command for ``damping_linger_s`` so the robot settles, then return."""
        t0 = self.robot.now()
        t_damp: float | None = None
        while True:
            self.step()
            t = self.robot.now()
            if self.safety.mode is Mode.DAMPING:
                t_damp = t if t_damp is None else t_damp
                if t - t_damp >= damping_linger_s:
                    break
            elif duration is not None and t - t0 >= duration:
                break
            if stop_when is not None and stop_when(self):
                break
        return self.summary()

    def step(self) -> LowCmd:
        """One control tick."""
        wall = time.monotonic()
        if self._last_wall is not None:
            self.periods.append(wall - self._last_wall)
        self._last_wall = wall
        robot = self.robot
        t = robot.now()
        if self.t_start is None:
            self.t_start = t
        try:
            state: LowState | None = robot.read_state()
        except Exception as exc:  # no state (yet): the safety machine decides
            log.debug("no state: %s", exc)
            state = None
        age_fn = getattr(robot, "state_age", None)
        age = float(age_fn()) if age_fn is not None and state is not None else 0.0
        if state is not None:
            try:
                if wireless_remote.decode(state.wireless_remote).stop_pressed:
                    self.safety.request_stop("wireless remote stop (L2+B)")
            except ValueError:
                pass

        if (self.velocity_estimator is not None and state is not None
                and self.tick % self.config.policy_decimation == 0):
            try:
                v_est = self.velocity_estimator.update(state)
            except ValueError as exc:  # e.g. an IMU quaternion of zeros: skip, never stop the loop
                log.debug("velocity estimate skipped: %s", exc)
                v_est = None
            if v_est is not None and self.safety.mode is Mode.PLANNING:
                self.tracking.append((self._command_at(t), v_est, None if state.base_lin_vel is None
                                      else np.array(state.base_lin_vel)))
        fresh = False
        if self.planner is not None and state is not None:
            dec = self.config.policy_decimation
            if (self.tick % dec == 0 and (self.tick // dec) % self.config.replan_every == 0
                    and self.safety.mode in (Mode.STAND, Mode.PLANNING, Mode.HOLD)):
                # Stamped when the state was measured (received), so chunk rows line up with it.
                sent = self._send_observation(t - age, state)
                if sent and self.config.lockstep:
                    fresh = self._receive(t, self.config.lockstep_timeout_s, want_seq=self.seq - 1)
            fresh = self._receive(t, 0.0) or fresh
        target = self._current_target(t)
        cmd = self.safety.step(t, state, target, fresh, age)
        if self.safety.mode is Mode.PLANNING and self._t_planning is None:
            self._t_planning = t
        safe, ok = self.filter.apply(cmd, state)
        if not ok and self.safety.mode is not Mode.DAMPING:
            self.safety.request_stop("command filter: non-finite command or state")
            self.safety.step(t, state, None, False, age)
            safe = damping_command(self.config.safety.damping_kd)
        robot.write_command(safe)
        self.last_command = safe
        if self.condition.history and state is not None and self.tick % self.config.policy_decimation == 0:
            # this policy tick becomes the next one's history: the state it started from and
            # the action it executes (what was sent, in the engine's semantics)
            x = self._tick_state if self._tick_state is not None else build_state(state)
            held = safe.kp > 0
            a = self.config.semantics.to_action(np.where(held, safe.q, self.config.semantics.default_joint_pos))
            self._hist = (x, a.astype(np.float32))
        self._tick_state = None
        if self.config.record:
            self.trace.append(TickRecord(
                t=t, wall=wall, mode=self.safety.mode.value, q_target=safe.q.copy(),
                kp=float(safe.kp[0]), q=None if state is None else np.array(state.q),
                base_lin_vel=None if state is None or state.base_lin_vel is None
                else np.array(state.base_lin_vel)))
        self.tick += 1
        robot.wait_tick()
        if self._pacer is not None:
            self._pacer.wait()
        return safe

    def _current_action(self) -> np.ndarray:
        """The action now commanded, in the engine's semantics (the stand pose before planning)."""
        sem = self.config.semantics
        last = self.last_command
        q = last.q if last is not None and np.all(last.kp > 0) else go2.DEFAULT_JOINT_POS
        return sem.to_action(q).astype(np.float32)

    # -------------------------------------------------------------------- planner I/O
    def _command_at(self, t: float) -> np.ndarray:
        since = 0.0 if self._t_planning is None else t - self._t_planning
        return self.command(since)

    def _send_observation(self, t: float, state: LowState) -> bool:
        try:
            x = build_state(state)
            self._tick_state = x
            prev = self._hist if self._hist is not None else (x, self._current_action())
            obs = Observation(seq=self.seq, stamp=t, state=x,
                              cond=self.condition(self._command_at(t), prev[0], prev[1]))
            self.planner.send_observation(obs)
            self.seq += 1
            self.counts["obs_sent"] += 1
            return True
        except Exception as exc:  # a planner problem must never stop the loop
            self.counts["send_errors"] += 1
            log.debug("observation not sent: %s", exc)
            return False

    def _receive(self, t: float, timeout: float, want_seq: int | None = None) -> bool:
        accepted = False
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                chunk = self.planner.poll_chunk(left)
            except Exception as exc:
                self._reject(f"receive_error:{type(exc).__name__}")
                log.debug("chunk receive failed: %s", exc)
                chunk = None
            if chunk is None:
                return accepted
            accepted = self._accept(t, chunk) or accepted
            if want_seq is None or (self.chunk is not None and self.chunk.obs_seq >= want_seq):
                if timeout == 0.0 or accepted:
                    return accepted

    def _reject(self, reason: str) -> bool:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return False

    def _accept(self, t: float, chunk: ActionChunk) -> bool:
        a = np.asarray(chunk.actions)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != ACTION_DIM:
            return self._reject("bad_shape")
        if not np.all(np.isfinite(a)):
            return self._reject("non_finite")
        if not (np.isfinite(chunk.t0) and np.isfinite(chunk.dt) and chunk.dt > 0):
            return self._reject("bad_timing")
        if chunk.obs_seq >= self.seq:
            return self._reject("unknown_seq")
        if self.chunk is not None and chunk.obs_seq < self.chunk.obs_seq:
            return self._reject("older_than_current")
        if chunk.t0 > t + self.config.max_future_s:
            return self._reject("from_future")
        if chunk.expired(t):
            return self._reject("expired")
        if chunk.index_at(t) is None:
            return self._reject("no_action_for_now")
        self.chunk = chunk
        self._chunk_last_index = -1
        self.counts["chunks_accepted"] += 1
        self.latencies.append(t - chunk.t0)
        return True

    def _current_target(self, t: float) -> np.ndarray | None:
        c = self.chunk
        if c is None:
            return None
        if c.expired(t):
            self.chunk = None
            return None
        i = int((t - c.t0) / c.dt + 1e-9)
        i = max(0, min(i, self.config.max_actions - 1, len(c.actions) - 1))
        if i > self._chunk_last_index:
            # Actions whose slot passed before they could run are skipped, not replayed.
            self.counts["actions_skipped"] += max(0, i - self._chunk_last_index - 1)
            self.counts["actions_executed"] += 1
            self._chunk_last_index = i
        return self.config.semantics.to_target(c.actions[i])

    # -------------------------------------------------------------------- report
    def summary(self) -> dict:
        s = self.safety
        per = np.asarray(self.periods) if self.periods else np.zeros(1)
        err = np.abs(per - self.robot.control_dt)
        lat = np.asarray(self.latencies) if self.latencies else None
        return {
            "ticks": self.tick,
            "mode": s.mode.value,
            "transitions": [tr.as_dict() for tr in s.transitions],
            "counts": dict(self.counts),
            "chunks_rejected": dict(self.rejected),
            "filter": self.filter.stats.as_dict(),
            "period_ms": {"median": float(np.median(per) * 1e3),
                          "p99": float(np.percentile(per, 99) * 1e3)},
            "period_error_ms": {"median": float(np.median(err) * 1e3),
                                "p99": float(np.percentile(err, 99) * 1e3),
                                "max": float(err.max() * 1e3)},
            "plan_age_ms": None if lat is None else {
                "median": float(np.median(lat) * 1e3), "p99": float(np.percentile(lat, 99) * 1e3)},
            "tracking": self._tracking_summary(),
        }

    def _tracking_summary(self) -> dict | None:
        """Velocity tracking while planning, against the estimator (and ground truth when a
        simulator provides it)."""
        if not self.tracking:
            return None
        cmd = np.array([c for c, _, _ in self.tracking])
        est = np.array([e for _, e, _ in self.tracking])
        out = {"samples": len(self.tracking),
               "rmse_xy_estimated": float(np.sqrt(np.mean((est[:, :2] - cmd[:, :2]) ** 2))),
               "mean_vx_estimated": float(est[:, 0].mean())}
        if all(v is not None for _, _, v in self.tracking):
            true = np.array([v for _, _, v in self.tracking])
            out["rmse_xy_true"] = float(np.sqrt(np.mean((true[:, :2] - cmd[:, :2]) ** 2)))
            out["estimator_rmse_xy"] = float(np.sqrt(np.mean((true[:, :2] - est[:, :2]) ** 2)))
        return out


class ServiceLink:
    """``PlannerLink`` over ZeroMQ to ``planner-runtime serve`` (planner_runtime.client)."""

    def __init__(self, endpoint: str, timeout: float = 1.0) -> None:
        from planner_runtime.client import PlannerClient

        self.endpoint = endpoint
        self.client = PlannerClient(endpoint, timeout=timeout)

    def hello(self, timeout: float | None = None) -> dict:
        return self.client.hello(timeout)

    def send_observation(self, obs: Observation) -> None:
        if self.client.send_observation(obs.state, obs.cond, stamp=obs.stamp, seq=obs.seq) is None:
            raise ConnectionError(f"observation {obs.seq} dropped: no connection to {self.endpoint}")

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        return self.client.poll_chunk(timeout)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class PlannerContract:
    """What the controller takes from an engine: its action semantics and condition layout."""

    semantics: ActionSemantics
    condition_names: tuple[str, ...]


def check_planner_metadata(meta: dict) -> PlannerContract:
    """Refuse a planner whose engine does not match this robot profile (ValueError naming
    every mismatch): dimensions, policy dt, observation and condition layout, and the action
    semantics (joint order, default pose, scale, PD gains) this controller must execute."""
    from robot.observation import STATE_DIM, STATE_NAMES

    bad = []
    man = meta.get("manifest") or {}
    obs = man.get("observation") or {}
    cond_names = tuple(obs.get("condition_names") or CONDITION_NAMES)
    try:
        cond_dim = ConditionBuilder(cond_names).dim
    except ValueError as exc:
        bad.append(str(exc))
        cond_dim = len(CONDITION_NAMES)
    for key, want in (("state_dim", STATE_DIM), ("action_dim", ACTION_DIM), ("cond_dim", cond_dim)):
        if meta.get(key) != want:
            bad.append(f"{key} {meta.get(key)!r} != {want}")
    dt = meta.get("dt")
    if not isinstance(dt, (int, float)) or abs(float(dt) - go2.POLICY_DT) > 1e-6:
        bad.append(f"dt {dt!r} != {go2.POLICY_DT}")
    sem = None
    try:
        sem = ActionSemantics.from_dict(man.get("action"), "engine manifest 'action'")
        bad += sem.check()
    except ValueError as exc:
        bad.append(str(exc))
    if "state_names" in obs and list(obs["state_names"]) != list(STATE_NAMES):
        bad.append("observation state_names differ from robot.observation.STATE_NAMES")
    if bad or sem is None:
        raise ValueError("planner engine does not match the Go2 controller: " + "; ".join(bad))
    return PlannerContract(sem, cond_names)
