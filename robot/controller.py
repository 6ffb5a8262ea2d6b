"""The Go2 controller loop: 500 Hz PD commands, a 50 Hz policy tick, chunks from a planner.

Works against any ``robot.interface.RobotInterface``: the DDS bridge (real robot or the
simulator standing in for it; its ``wait_tick`` sleeps until the next absolute monotonic
deadline) or an in-process simulator (its ``wait_tick`` advances physics; with
``realtime=True`` the loop is additionally paced on absolute deadlines).

Every control tick: read the state, (every ``policy_decimation`` ticks) send an observation
built by ``robot.observation`` to the planner, take the newest valid chunk, pick the action
that applies now, let the safety state machine decide the command, pass it through the
command filter and write it. Which action applies, how a late chunk takes over and which
committed actions go out with an observation are the runtime's chunk rules
(``planner_runtime.chunking.ChunkExecutor``; ``ControllerConfig.merge``), not code here.

All times are the robot's clock (``robot.now()``): monotonic seconds over DDS, simulated
seconds in-process. Observation stamps use the same clock, and the service only echoes
them, so chunk stamps need no clock synchronization.

Negotiation with the planner service (``ServiceLink``): before any motion the controller
sends its robot profile (``go2_profile``: ordered joint names, control and policy dt, the
action semantics it can execute) in a ``hello`` and checks the reply both ways (the
service's ``profile_check`` and ``check_planner_metadata``); then it claims the planner and
keeps the engine's identity (graph checksum, method, dataset sha256). Every later claim
(after the service restarted, or after its session lapsed while the robot was damped) must
return the same identity; a different one, a mismatch, or a planner owned by another
client keeps the robot out of PLANNING (it stands, and the stand watchdog damps it) with a
log line saying why. Identity and negotiation are in ``summary()["planner"]``.

Latched faults (``robot.safety``): once a fault has taken the robot to DAMPING, only an
operator resumes it: the wireless remote's L2 + A (``robot.wireless_remote``), the local
control endpoint (``robot.control_endpoint``), or ``request_resume``. The loop keeps running
in DAMPING meanwhile when ``run(damping_linger_s=None)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from planner_runtime.bench.stats import summary
from planner_runtime.chunking import DEFAULT_MERGE, ChunkAdmissionError, ChunkConfig, ChunkExecutor
from planner_runtime.link import PlannerLink
from planner_runtime.protocol import ActionChunk, Observation
from robot import go2_constants as go2
from robot import wireless_remote
from robot.actions import PROJECT, ActionSemantics, go2_execution_profile
from robot.interface import RobotInterface
from robot.live_command import LiveCommand
from robot.observation import ACTION_DIM, CONDITION_NAMES, ConditionBuilder, build_state
from robot.safety import CommandFilter, Mode, SafetyConfig, SafetyStateMachine, damping_command
from robot.types import LowCmd, LowState

if TYPE_CHECKING:
    from robot.control_endpoint import ControlEndpoint
    from robot.recording import ClosedLoopRecorder

log = logging.getLogger("robot.controller")


class Series:
    """The newest ``capacity`` values of a measurement (a float64 ring buffer) and how many
    were ever added: the controller runs for hours at 500 Hz, so its per-tick records must
    not grow (a list of every loop period grew ~60 MB an hour). ``len()`` counts every value
    ever added; ``values()`` and ``since(n)`` return what is still held, oldest first."""

    def __init__(self, capacity: int = 1 << 18) -> None:
        # written once now, so the buffer is resident from the start (np.empty / np.zeros
        # pages would become resident as it fills: a slow rise a soak run mistakes for a leak)
        self.buf = np.full(int(capacity), np.nan)
        self.count = 0

    def append(self, v: float) -> None:
        self.buf[self.count % len(self.buf)] = v
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def since(self, n: int) -> np.ndarray:
        """The values added after the first ``n`` (those still held)."""
        cap = len(self.buf)
        lo = max(int(n), self.count - cap, 0)
        if lo >= self.count:
            return np.empty(0)
        a, b = lo % cap, self.count % cap
        if a < b:
            return self.buf[a:b].copy()
        return np.concatenate([self.buf[a:], self.buf[:b]])

    def values(self) -> np.ndarray:
        return self.since(0)


class CommandSchedule:
    """Piecewise-constant velocity command [vx, vy, yaw] over time since planning began: the
    one schedule of the controller, collection and evaluation (``sim.commands`` draws random
    ones). ``times[i]`` is when ``commands[i]`` starts; before the first segment the command
    is zero."""

    def __init__(self, segments: list[tuple[float, float, float, float]] | None = None) -> None:
        segs = sorted(segments or [(0.0, 0.0, 0.0, 0.0)], key=lambda s: s[0])
        for s in segs:
            if len(s) != 4 or not all(np.isfinite(v) for v in s):
                raise ValueError(f"command segment must be (t, vx, vy, yaw) finite numbers, got {s}")
        if segs[0][0] > 0.0:
            segs.insert(0, (0.0, 0.0, 0.0, 0.0))
        self.segments = [tuple(float(v) for v in s) for s in segs]
        self.times = np.array([s[0] for s in self.segments], np.float64)
        self.commands = np.array([s[1:] for s in self.segments], np.float64).reshape(-1, 3)

    @classmethod
    def constant(cls, vx: float, vy: float, yaw: float) -> CommandSchedule:
        return cls([(0.0, vx, vy, yaw)])

    @classmethod
    def from_arrays(cls, times: Any, commands: Any) -> CommandSchedule:
        """From start times [K] and commands [K, 3]."""
        c = np.asarray(commands, np.float64).reshape(-1, 3)
        return cls([(float(t), float(vx), float(vy), float(yaw))
                    for t, (vx, vy, yaw) in zip(np.asarray(times).reshape(-1), c, strict=True)])

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

    @classmethod
    def from_options(cls, command: Sequence[float] | None, schedule: str | None) -> CommandSchedule | None:
        """The schedule of a ``--command VX VY YAW`` or ``--schedule TEXT`` option (not both:
        ValueError); None when neither is given (the caller has its own default)."""
        if schedule is not None and command is not None:
            raise ValueError("give --command or --schedule, not both")
        if schedule is not None:
            return cls.parse(schedule)
        if command is not None:
            return cls.constant(*command)
        return None

    def __call__(self, t: float) -> np.ndarray:
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return self.commands[max(i, 0)].copy()

    at = __call__


@dataclass
class ControllerConfig:
    policy_decimation: int = 10  # control ticks per policy tick (500 Hz / 50 Hz)
    max_actions: int = go2.CHUNK_SIZE  # actions executed per plan (the chunk size)
    # Real-time chunking (planner_runtime.chunking): how a late chunk takes over, what the
    # plan starts from, and the delay planned for (None: measured turnaround).
    # merge None: inpaint when the planner can hold a committed prefix, else aligned (logged)
    merge: str | None = None
    start_state: str = "measured"
    fixed_delay: int | None = None
    horizon: int | None = None  # rows the engine plans (the admission rule); None: unchecked
    # Policy ticks between observations sent; None: the chunk rules' default
    # (planner_runtime.chunking.ChunkConfig.interval: continuous with a committed prefix,
    # every max_actions ticks otherwise, the paper's c = 4 of Appendix O).
    replan_every: int | None = None
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
        if not self.lockstep_timeout_s > 0:
            raise ValueError(f"lockstep_timeout_s must be > 0, got {self.lockstep_timeout_s}")
        ConditionBuilder(self.condition_names)  # refuses a layout it cannot build
        self.chunking(self.merge or DEFAULT_MERGE)  # refuses a merge, start state or replan interval it cannot run
        bad = self.semantics.check()
        if bad:
            raise ValueError("action semantics the Go2 controller cannot execute: " + "; ".join(bad))
        self.safety = replace(self.safety, planning_kp=self.semantics.kp, planning_kd=self.semantics.kd)
        self.safety.validate()
        return self

    def chunking(self, merge: str) -> ChunkConfig:
        return ChunkConfig(merge=merge, execute=self.max_actions, replan_every=self.replan_every,
                           start_state=self.start_state,
                           fixed_delay=self.fixed_delay, max_future_s=self.max_future_s).validate()


@dataclass
class TickRecord:
    t: float
    wall: float
    mode: str
    q_target: np.ndarray
    kp: float
    q: np.ndarray | None  # None: no state on this tick
    base_lin_vel: np.ndarray | None


class Controller:
    """One controller instance drives one robot; ``run`` blocks until done or stopped."""

    def __init__(self, robot: RobotInterface, planner: PlannerLink | None = None,
                 command: CommandSchedule | LiveCommand | None = None,
                 config: ControllerConfig | None = None, velocity_estimator=None) -> None:
        self.robot = robot
        # Optional robot.velocity_estimator.VelocityEstimator: where the robot has no velocity
        # sensor, tracking is reported against its estimate (updated at the policy rate).
        self.velocity_estimator = velocity_estimator
        # velocity tracking while planning: running sums (command, estimate, ground truth)
        self._trk = {"n": 0, "se_est": 0.0, "vx_est": 0.0, "n_true": 0, "se_true": 0.0, "se_est_true": 0.0}
        self.planner = planner
        # A schedule over time since planning began, or a live source (robot.live_command):
        # the wireless remote's sticks or a program over the control endpoint.
        self.command: CommandSchedule | LiveCommand = command or CommandSchedule()
        self.config = (config or ControllerConfig()).validate()
        self.safety = SafetyStateMachine(self.config.safety)
        self.condition = ConditionBuilder(self.config.condition_names)
        # The previous policy tick's state and executed action (history conditions).
        self._hist: tuple[np.ndarray, np.ndarray] | None = None
        self._tick_state: np.ndarray | None = None
        self.filter = CommandFilter(damping_kd=self.config.safety.damping_kd)
        self.tick = 0
        self.seq = 0
        self.merge = self._choose_merge()
        self.executor = self._new_executor()
        self._t_planning: float | None = None
        self.planning_tick: int | None = None  # the loop tick planning first began
        self._counts = {"obs_sent": 0, "chunks_accepted": 0, "send_errors": 0, "remote_bad": 0}
        self.latencies = Series(1 << 16)  # plan receipt - observation stamp (s)
        self.periods = Series()  # wall-clock period of each loop iteration (s), the newest 262144
        self._window = (0, 0)  # (periods, latencies) counts at the last window_stats()
        self.trace: list[TickRecord] = []
        # Optional robot.recording.ClosedLoopRecorder (``controller --record``): the state at
        # every policy tick with its command and base velocity, and the action executed there
        self.recorder: ClosedLoopRecorder | None = None
        self._last_wall: float | None = None
        self._pacer = None
        if self.config.realtime and not getattr(robot, "paces_itself", False):
            from robot.dds_bridge import DeadlinePacer

            self._pacer = DeadlinePacer(robot.control_dt)
        self.last_command: LowCmd | None = None
        self.t_start: float | None = None
        self._remote_resume_prev = False
        # Optional local control endpoint: polled once per tick, after the state is read.
        self.control: ControlEndpoint | None = None

    # -------------------------------------------------------------------- control
    def request_stop(self, reason: str, resumable: bool = True) -> None:
        """Go to DAMPING on the next tick (safe from a signal handler). ``resumable=False``:
        the controller is ending (a signal), no resume can leave that damping."""
        self.safety.request_stop(reason, resumable)

    def request_resume(self, reason: str) -> None:
        """An operator's resume: leave a latched DAMPING on the next tick if the state allows
        (``robot.safety``); safe from a signal handler."""
        self.safety.request_resume(reason)

    @property
    def mode(self) -> Mode:
        return self.safety.mode

    def run(self, duration: float | None = None, damping_linger_s: float | None = 0.5,
            stop_when=None) -> dict:
        """Run until ``duration`` (robot clock), ``stop_when`` or a stop. After DAMPING keep
        sending the damping command for ``damping_linger_s`` so the robot settles, then
        return; with ``damping_linger_s=None`` stay in the latched DAMPING (an operator may
        resume) until ``duration`` or a stop that ends the controller (a signal: then 0.5 s)."""
        t0 = self.robot.now()
        t_damp: float | None = None
        while True:
            self.step()
            t = self.robot.now()
            if self.safety.mode is Mode.DAMPING:
                t_damp = t if t_damp is None else t_damp
                linger = damping_linger_s
                if linger is None and not self.safety.fault_resumable:
                    linger = 0.5  # a signal's stop ends the controller even when faults latch
                if linger is not None and t - t_damp >= linger:
                    break
            else:
                t_damp = None
            if duration is not None and t - t0 >= duration:
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
                remote = wireless_remote.decode(state.wireless_remote)
            except ValueError:
                remote = None
            if remote is not None:
                if remote.stop_pressed:
                    self.safety.request_stop("wireless remote stop (L2+B)")
                # resume on the combination's press (not while held): one press, one resume
                pressed = remote.resume_pressed
                if pressed and not self._remote_resume_prev and self.safety.mode is Mode.DAMPING:
                    self.safety.request_resume("wireless remote " + "+".join(wireless_remote.RESUME_COMBO))
                self._remote_resume_prev = pressed
                if isinstance(self.command, LiveCommand) and self.command.source == "remote":
                    try:
                        self.command.from_remote(remote, t)
                    except ValueError:  # garbled sticks (NaN): the last command stands, then lapses
                        self._counts["remote_bad"] += 1
        if self.control is not None:
            try:
                self.control.poll(self, state, age)
            except Exception as exc:  # a broken control request must never stop the loop
                log.warning("control endpoint: %s", exc)
        was_damping = self.safety.mode is Mode.DAMPING

        v_est = None
        if (self.velocity_estimator is not None and state is not None
                and self.tick % self.config.policy_decimation == 0):
            try:
                v_est = self.velocity_estimator.update(state)
            except ValueError as exc:  # e.g. an IMU quaternion of zeros: skip, never stop the loop
                log.debug("velocity estimate skipped: %s", exc)
                v_est = None
            if v_est is not None and self.safety.mode is Mode.PLANNING:
                self._track(self._command_at(t), np.asarray(v_est, np.float64), state.base_lin_vel)
        fresh = False
        if self.planner is not None and state is not None:
            dec = self.config.policy_decimation
            planning_modes = self.safety.mode in (Mode.STAND, Mode.PLANNING, Mode.HOLD)
            if self.tick % dec == 0 and not planning_modes and hasattr(self.planner, "keepalive"):
                self.planner.keepalive()  # hold the planner's ownership while not observing
            if not self.config.lockstep:  # an answer that arrived since: before deciding to observe
                fresh = self._receive(t, 0.0)
            if (self.tick % dec == 0 and planning_modes
                    and self.executor.due(self.tick // dec, t - age)):
                # Stamped when the state was measured (received), so chunk rows line up with it.
                sent = self._send_observation(t - age, state)
                if sent and self.config.lockstep:
                    fresh = self._receive(t, self.config.lockstep_timeout_s, want_seq=self.seq - 1)
            fresh = self._receive(t, 0.0) or fresh
        target = self._current_target(t)
        if self.recorder is not None and state is not None and self.tick % self.config.policy_decimation == 0:
            self._record_tick(t, state, v_est)
        cmd = self.safety.step(t, state, target, fresh, age)
        if was_damping and self.safety.mode is not Mode.DAMPING:
            self._after_resume()
        if self.safety.mode is Mode.PLANNING and self._t_planning is None:
            self._t_planning = t
            if self.planning_tick is None:
                self.planning_tick = self.tick
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

    def _record_tick(self, t: float, state: LowState, v_est: np.ndarray | None) -> None:
        """This policy tick for ``recorder``: the state and command, the base velocity (the
        robot's, else the estimator's; without either the tick is left out, which ends the
        stretch) and the action the executor recorded for it (while planning)."""
        v = state.base_lin_vel if state.base_lin_vel is not None else v_est
        if v is None or self.recorder is None:
            return
        x = self._tick_state if self._tick_state is not None else build_state(state)  # as sent, when sent
        self.recorder.sample(t, x, self._command_at(t), np.asarray(v, np.float64),
                             fallen=self.safety.fallen, tick=self.tick // self.config.policy_decimation)
        self.recorder.executed(self.executor.records)

    def _new_executor(self) -> ChunkExecutor:
        dt = self.robot.control_dt * self.config.policy_decimation
        return ChunkExecutor(self.config.chunking(self.merge), dt=dt, horizon=self.config.horizon)

    def _choose_merge(self) -> str:
        """The configured merge, or (None) inpaint when the planner can hold a committed
        prefix and aligned when it cannot; asking for inpaint from one that cannot is an error."""
        can = bool(getattr(self.planner, "inpaints", False))
        m = self.config.merge
        if m == "inpaint" and not can and self.planner is not None:
            raise ValueError("merge 'inpaint' needs an engine with the committed-prefix inputs; this "
                             "planner's engine has none (re-export it, or use --merge aligned)")
        if m is None:
            m = DEFAULT_MERGE if can or self.planner is None else "aligned"
            if m != DEFAULT_MERGE:
                log.warning("the planner's engine cannot hold a committed prefix (exported before "
                            "real-time chunking): chunks merge 'aligned'")
        return m

    @property
    def chunk(self) -> ActionChunk | None:
        """The chunk being executed."""
        return self.executor.current

    @property
    def rejected(self) -> dict[str, int]:
        return self.executor.rejected

    @property
    def counts(self) -> dict[str, int]:
        """Observations sent, chunks accepted, send errors, and the chunk rules' executed and
        skipped actions."""
        return {**self._counts, "actions_executed": self.executor.stats["executed"],
                "actions_skipped": self.executor.stats["skipped"]}

    def _after_resume(self) -> None:
        """An operator resumed from DAMPING: nothing of the old plan is used again."""
        old = self.executor
        self.executor = self._new_executor()
        self.executor.rejected.update(old.rejected)
        self.executor.delay.samples.extend(old.delay.samples)  # the measured turnaround still holds
        self._hist = None
        self._t_planning = None

    def _current_action(self) -> np.ndarray:
        """The action now commanded, in the engine's semantics (the stand pose before planning)."""
        sem = self.config.semantics
        last = self.last_command
        q = last.q if last is not None and np.all(last.kp > 0) else go2.DEFAULT_JOINT_POS
        return sem.to_action(q).astype(np.float32)

    # -------------------------------------------------------------------- planner I/O
    def _command_at(self, t: float) -> np.ndarray:
        if isinstance(self.command, LiveCommand):
            return self.command.at(t)
        since = 0.0 if self._t_planning is None else t - self._t_planning
        return self.command(since)

    def planning_s(self) -> float | None:
        """Seconds since the loop began planning (what a schedule's time counts from); None
        before it has."""
        return None if self._t_planning is None else float(self.robot.now() - self._t_planning)

    def set_velocity(self, cmd: Any) -> tuple[np.ndarray, bool]:
        """A velocity command from the control endpoint (``--command-source endpoint``):
        clamped to the limits; ValueError when the controller takes its command elsewhere or
        the command is not 3 finite numbers."""
        if not (isinstance(self.command, LiveCommand) and self.command.source == "endpoint"):
            src = self.command.source if isinstance(self.command, LiveCommand) else "schedule"
            raise ValueError(f"this controller's command source is {src!r}: velocity commands over the "
                             "control endpoint need `controller --command-source endpoint`")
        return self.command.set(cmd, self.robot.now())

    def _linked_planner(self) -> PlannerLink:
        if self.planner is None:
            raise RuntimeError("Controller: no planner link (constructed with planner=None)")
        return self.planner

    def _send_observation(self, t: float, state: LowState) -> bool:
        planner = self._linked_planner()
        try:
            x = build_state(state)
            self._tick_state = x
            prev = self._hist if self._hist is not None else (x, self._current_action())
            try:
                d, committed, forecast = self.executor.observation_plan(t, x)
            except ChunkAdmissionError as exc:
                self.safety.request_stop(f"planner too slow for this engine: measured turnaround "
                                         f"{self.executor.delay.seconds() or 0.0:.3f} s; {exc}")
                return False
            stamp, x_plan = t, x
            if forecast is not None:  # plan from the state forecast for the plan's first tick
                stamp, x_plan = t + d * self.executor.dt, forecast
            obs = Observation(seq=self.seq, stamp=stamp, state=x_plan,
                              cond=self.condition(self._command_at(t), prev[0], prev[1]),
                              committed=committed)
            self.executor.sent(self.seq, t, self.tick // self.config.policy_decimation, x_plan)
            planner.send_observation(obs)
            self.seq += 1
            self._counts["obs_sent"] += 1
            return True
        except Exception as exc:  # a planner problem must never stop the loop
            self._counts["send_errors"] += 1
            log.debug("observation not sent: %s", exc)
            return False

    def _receive(self, t: float, timeout: float, want_seq: int | None = None) -> bool:
        planner = self._linked_planner()
        accepted = False
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            try:
                chunk = planner.poll_chunk(left)
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
        return self.executor._reject(reason)

    def _accept(self, t: float, chunk: ActionChunk) -> bool:
        if not self.executor.offer(chunk, t, next_seq=self.seq, action_dim=ACTION_DIM):
            return False
        self._counts["chunks_accepted"] += 1
        self.latencies.append(t - chunk.t0)
        return True

    def _current_target(self, t: float) -> np.ndarray | None:
        a = self.executor.action(t)
        if self.tick % self.config.policy_decimation == 0 and self.safety.mode is Mode.PLANNING:
            self.executor.record(t, a)  # one record per policy tick: switch jumps, jerk
        return None if a is None else self.config.semantics.to_target(a)

    # -------------------------------------------------------------------- report
    def summary(self) -> dict:
        s = self.safety
        per = self.periods.values() if self.periods else np.zeros(1)
        err = np.abs(per - self.robot.control_dt)
        lat = self.latencies.values() if self.latencies else None
        return {
            "ticks": self.tick,
            "mode": s.mode.value,
            "transitions": [tr.as_dict() for tr in s.transitions],
            "counts": self.counts,
            "chunks_rejected": dict(self.rejected),
            "chunking": {"merge": self.merge, "start_state": self.config.start_state,
                         "delay_ticks": self.executor.delay.ticks(),
                         **self.executor.switch_metrics(self.config.semantics.scale)},
            "filter": self.filter.stats.as_dict(),
            "period_ms": summary(per, scale=1e3),
            "period_samples": int(per.size) if self.periods else 0,  # the newest (Series capacity)
            "period_error_ms": summary(err, scale=1e3),
            "plan_age_ms": None if lat is None else summary(lat, scale=1e3),
            "tracking": self._tracking_summary(),
            "command": self.command.stats() if isinstance(self.command, LiveCommand) else None,
            "fault": {"latched": s.fault, "resumable": s.fault_resumable if s.fault else None,
                      "resumes": list(s.resumes)},
            "planner": (self.planner.summary()
                        if self.planner is not None and hasattr(self.planner, "summary") else None),
        }

    def timing(self) -> dict[str, np.ndarray]:
        """The run's real-time timing, for replay in lockstep (``planner-runtime eval
        --timing-trace``, sim/timing_replay.py): every held loop period (wall s) and the loop
        tick its iteration began (``period_tick0`` for the first), each accepted plan's
        turnaround (receipt - its state's measurement, s) in order, and the tick planning first
        began (-1: never)."""
        per = self.periods.values()
        return {"period_s": per, "period_tick0": np.array(self.periods.count - per.size + 1),
                "turnaround_s": self.latencies.values(),
                "planning_tick": np.array(-1 if self.planning_tick is None else self.planning_tick),
                "control_dt": np.array(self.robot.control_dt)}

    def _track(self, cmd: np.ndarray, est: np.ndarray, true: np.ndarray | None) -> None:
        k = self._trk
        k["n"] += 1
        k["se_est"] += float(np.sum((est[:2] - cmd[:2]) ** 2))
        k["vx_est"] += float(est[0])
        if true is not None:
            true = np.asarray(true, np.float64)
            k["n_true"] += 1
            k["se_true"] += float(np.sum((true[:2] - cmd[:2]) ** 2))
            k["se_est_true"] += float(np.sum((true[:2] - est[:2]) ** 2))

    def _tracking_summary(self) -> dict | None:
        """Velocity tracking while planning, against the estimator (and ground truth when a
        simulator provides it)."""
        k = self._trk
        if not k["n"]:
            return None
        out = {"samples": k["n"], "rmse_xy_estimated": float(np.sqrt(k["se_est"] / (2 * k["n"]))),
               "mean_vx_estimated": k["vx_est"] / k["n"]}
        if k["n_true"] == k["n"]:
            out["rmse_xy_true"] = float(np.sqrt(k["se_true"] / (2 * k["n"])))
            out["estimator_rmse_xy"] = float(np.sqrt(k["se_est_true"] / (2 * k["n"])))
        return out

    def window_stats(self) -> dict:
        """Loop period and plan age since the previous call (for long runs: robot/soak.py
        samples it through the control endpoint), with the counters so far."""
        p0, l0 = self._window
        per, lat = self.periods.since(p0), self.latencies.since(l0)
        self._window = (len(self.periods), len(self.latencies))

        return {"ticks": self.tick, "mode": self.safety.mode.value,
                "period_ms": summary(per, scale=1e3) or None, "plan_age_ms": summary(lat, scale=1e3) or None, "counts": dict(self.counts),
                "rejected": sum(self.rejected.values()), "transitions": len(self.safety.transitions)}


def go2_profile(condition_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The one Go2 robot profile (planner_runtime.manifest.profile_problems is the check): what
    this controller feeds a planner and what it can execute. The controller sends it in its
    hello / claim; the exporter stores it in a Go2 engine's manifest with the engine's own
    ``condition_names`` (the controller builds any layout ``ConditionBuilder`` knows, so it
    sends none)."""
    from robot.observation import STATE_DIM, STATE_NAMES

    profile: dict[str, Any] = {
        "name": go2.ROBOT_NAME, "state_dim": STATE_DIM, "action_dim": ACTION_DIM,
        "state_names": list(STATE_NAMES), "policy_dt": go2.POLICY_DT, "control_dt": go2.CONTROL_DT,
        **go2_execution_profile(),  # joint_names and action: what it can execute
    }
    if condition_names is not None:
        names = list(ConditionBuilder(tuple(condition_names)).names)
        profile.update(condition_dim=len(names), condition_names=names)
    return profile


def identity_line(identity: dict | None) -> str:
    """The engine identity in one log line."""
    if not identity:
        return "unknown (the service sent no identity)"
    gs = identity.get("graph_sha256") or "?"
    ds = identity.get("dataset_sha256") or "none recorded"
    return (f"method {identity.get('method')}, graph sha256 {gs[:16]}, dataset sha256 {ds[:16]}, "
            f"created {identity.get('created_utc') or '?'}")


@dataclass
class Negotiation:
    """The outcome of ``ServiceLink.negotiate``."""

    ok: bool
    problems: list[str]
    identity: dict | None
    meta: dict
    contract: PlannerContract | None = None
    owner: str = "unclaimed"  # "owner" | "busy" | "unclaimed"

    def as_dict(self) -> dict:
        return {"ok": self.ok, "problems": list(self.problems), "owner_at_start": self.owner}


class ServiceLink:
    """``PlannerLink`` over ZeroMQ to ``planner-runtime serve`` (planner_runtime.client),
    with the ownership and negotiation rules of the module docstring.

    ``send_observation`` raises when this link may not plan now: ``refused`` (negotiation
    failed: never plans), or no session yet (a claim has been sent without waiting; the
    observation waits for its grant). A claim is retried every ``claim_retry_s`` while
    another client owns the planner."""

    def __init__(self, endpoint: str, timeout: float = 1.0, profile: dict | None = None,
                 claim_retry_s: float = 0.5, clock=time.monotonic) -> None:
        from planner_runtime.client import PlannerClient

        self.endpoint = endpoint
        self.client = PlannerClient(endpoint, timeout=timeout)
        self.profile = profile
        self.claim_retry_s = float(claim_retry_s)
        self.clock = clock
        # The robot's clock (``robot.now``), when it is not the client's (a simulated Go2 runs on
        # its own time): a chunk's receipt time is moved onto it, so turnarounds compare like
        # with like. None: the robot's clock is the client's (monotonic, as over DDS).
        self.robot_clock: Callable[[], float] | None = None
        self.expected_identity: dict | None = None  # from the negotiation; every claim must match
        self.refused: str | None = None
        self.negotiation: Negotiation | None = None
        self._t_claim = -float("inf")
        self._t_busy_log = -float("inf")
        self.stats = {"claims_sent": 0, "claims_granted": 0, "renewals": 0, "busy": 0,
                      "session_lost": 0, "not_owner_drops": 0}

    def hello(self, timeout: float | None = None) -> dict:
        return self.client.hello(timeout, profile=self.profile)

    @property
    def inpaints(self) -> bool:
        """Whether the negotiated engine holds a committed prefix (real-time chunking)."""
        return bool(self.negotiation is not None and self.negotiation.meta.get("inpaints"))

    def negotiate(self, timeout: float = 10.0) -> Negotiation:
        """Before any motion: hello with the robot profile, check the engine both ways, then
        claim the planner. Raises PlannerTimeout when the service does not answer; a mismatch
        sets ``refused`` (the link never plans) and is returned, not raised."""
        from planner_runtime.client import PlannerBusy, ProfileMismatch

        meta = self.hello(timeout)
        problems = [f"service: {p}" for p in (meta.get("profile_check") or [])]
        contract = None
        try:
            contract = check_planner_metadata(meta)
        except ValueError as exc:
            problems.append(f"controller: {exc}")
        identity = meta.get("identity") if isinstance(meta.get("identity"), dict) else None
        if identity is None:
            problems.append("the service sent no engine identity (an older planner-runtime serve?)")
        neg = Negotiation(not problems, problems, identity, meta, contract)
        self.expected_identity = identity
        if problems:
            self.refuse("negotiation failed: " + "; ".join(problems))
        else:
            try:
                got = self.client.claim(self.profile, timeout)
                self.stats["claims_sent"] += 1
                self._check_identity(got.get("identity"))
                neg.owner = "owner" if self.refused is None else "unclaimed"
                self.stats["claims_granted"] += 1
            except PlannerBusy as exc:
                neg.owner = "busy"
                self.stats["busy"] += 1
                log.warning("planner service %s is busy: %s; the robot will not plan while another "
                            "client owns it (claims are retried)", self.endpoint, exc.message)
            except ProfileMismatch as exc:
                neg.ok = False
                neg.problems.append(f"service: {exc.message}")
                self.refuse(f"claim refused: {exc.message}")
        self.negotiation = neg
        return neg

    def refuse(self, why: str) -> None:
        if self.refused is None:
            self.refused = why
            log.error("planner %s will not be used: %s. The robot stays out of planning (it stands; "
                      "the stand watchdog damps it).", self.endpoint, why)

    def _check_identity(self, identity: Any) -> None:
        if self.expected_identity is not None and identity != self.expected_identity:
            self.client.session = None
            self.refuse(f"engine identity changed: negotiated {identity_line(self.expected_identity)}; "
                        f"now {identity_line(identity if isinstance(identity, dict) else None)}")

    def keepalive(self) -> None:
        """While the controller sends no observations (passive, stand-up, damping): renew the
        claim a few times per owner timeout so the planner stays this robot's, or claim it
        when this link holds no session. Never waits."""
        c = self.client
        if self.refused is not None:
            return
        if c.session is None:
            self._claim_if_due()
            return
        every = (c.owner_timeout or 1.0) / 3.0
        now = self.clock()
        if not c.claim_pending and now - self._t_claim >= every and c.claim_nowait(self.profile) is not None:
            self._t_claim = now
            self.stats["renewals"] += 1

    def _claim_if_due(self) -> None:
        c = self.client
        now = self.clock()
        if c.claim_pending or now - self._t_claim < self.claim_retry_s:
            return
        if c.claim_nowait(self.profile) is not None:
            self._t_claim = now
            self.stats["claims_sent"] += 1

    def send_observation(self, obs: Observation) -> None:
        if self.refused is not None:
            raise PermissionError(self.refused)
        if self.client.session is None:
            self._claim_if_due()
            self.stats["not_owner_drops"] += 1
            raise PermissionError(f"observation {obs.seq} not sent: waiting for the planner claim")
        if self.client.send_observation(obs.state, obs.cond, stamp=obs.stamp, seq=obs.seq,
                                        committed=obs.committed) is None:
            raise ConnectionError(f"observation {obs.seq} dropped: no connection to {self.endpoint}")

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        from planner_runtime.client import PlannerBusy, SessionLost

        c = self.client
        had = c.stats["claims"]
        try:
            ch = c.poll_chunk(timeout)
        except (PlannerBusy, SessionLost) as exc:
            busy = isinstance(exc, PlannerBusy)
            self.stats["busy" if busy else "session_lost"] += 1
            now = self.clock()
            if now - self._t_busy_log > 5.0:  # a clear line, not one per tick
                self._t_busy_log = now
                log.warning("planner %s: %s", self.endpoint, exc.message)
            raise
        finally:
            if c.stats["claims"] != had:  # a claim was granted (or renewed) while draining
                if not (c.last_claimed or {}).get("renewed"):
                    self.stats["claims_granted"] += 1
                self._check_identity(c.identity)
        if self.refused is not None:
            return None  # chunks that were already in flight are not used
        if ch is not None and ch.received_at is not None and self.robot_clock is not None:
            ch.received_at = self.robot_clock() - (c.clock() - ch.received_at)
        return ch

    def summary(self) -> dict:
        neg = self.negotiation
        return {"endpoint": self.endpoint,
                "identity": self.expected_identity,
                "negotiation": None if neg is None else neg.as_dict(),
                "refused": self.refused, "owner": self.client.session is not None,
                **self.stats}

    def close(self) -> None:
        from planner_runtime.client import PlannerError

        if self.client.session is not None:
            try:
                self.client.release(timeout=0.3)
            except PlannerError:
                pass  # the service is gone: nothing to release
        self.client.close()


@dataclass(frozen=True)
class PlannerContract:
    """What the controller takes from an engine: its action semantics and condition layout."""

    semantics: ActionSemantics
    condition_names: tuple[str, ...]


def check_planner_metadata(meta: dict) -> PlannerContract:
    """``check_engine`` on the manifest a service's hello reply carries (its public part)."""
    return check_engine(meta.get("manifest"))


def check_engine(manifest: Any) -> PlannerContract:
    """Refuse an engine this controller cannot run (ValueError naming every mismatch);
    ``manifest``: a ``planner_runtime.manifest.Manifest`` or its (public) JSON object.

    The rule is the engine-vs-robot one, ``planner_runtime.manifest.profile_problems``, against
    ``go2_profile()``: dimensions (state_dim, action_dim), policy dt (and the 500 Hz command
    period), state names, and the action semantics (joint order, default pose within the
    joint limits, scale and PD gains in the ranges this controller executes). Besides, the
    engine's condition layout must be one ``ConditionBuilder`` can build. Returns the
    semantics (``robot.actions.ActionSemantics``) and condition layout to run it with."""
    from planner_runtime import manifest as mf

    try:
        m = mf.parse(manifest, public=True)
    except mf.ManifestError as exc:
        raise ValueError(f"planner engine does not match the Go2 controller: {exc}") from exc
    bad = []
    cond_names = m.observation.condition_names
    try:
        ConditionBuilder(cond_names)
    except ValueError as exc:
        bad.append(str(exc))
    bad += mf.profile_problems(m, go2_profile())
    sem = None
    if not bad:
        try:
            sem = ActionSemantics.from_dict(m.action.to_dict(), "engine manifest 'action'")
        except ValueError as exc:
            bad.append(str(exc))
    if bad or sem is None:
        raise ValueError("planner engine does not match the Go2 controller: " + "; ".join(bad))
    return PlannerContract(sem, cond_names)
