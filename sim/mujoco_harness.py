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

Seeded options (``SimConfig``): sensor noise, friction and base-mass randomization,
random pushes. ``MENAGERIE_ROOT`` is not needed: the project ships its own MJCF; a
different model file can be passed as ``model_path`` (its joints must carry the Go2 names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

ASSET = Path(__file__).with_name("assets") / "go2.xml"
PHYSICS_DT = 0.002


def default_model_path() -> Path:
    """The project's MJCF, unless ``PLANNER_RUNTIME_GO2_XML`` names another Go2 model file."""
    p = os.environ.get("PLANNER_RUNTIME_GO2_XML")
    return Path(p) if p else ASSET


def menagerie_model_path() -> Path:
    """``$MENAGERIE_ROOT/unitree_go2/scene.xml`` (a local MuJoCo Menagerie checkout)."""
    root = os.environ.get("MENAGERIE_ROOT")
    if not root:
        raise FileNotFoundError("model 'menagerie' needs MENAGERIE_ROOT set to a mujoco_menagerie checkout")
    return Path(root) / "unitree_go2" / "scene.xml"


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
    friction: tuple[float, float] = (0.8, 0.8)  # foot/floor sliding friction
    base_mass_delta: tuple[float, float] = (0.0, 0.0)  # kg added to the trunk
    sensor_noise: float = 0.0  # scale: 1.0 = typical Go2 IMU/encoder noise levels
    push_interval: tuple[float, float] | None = None  # s between random pushes; None = off
    push_force: tuple[float, float] = (30.0, 100.0)  # N, horizontal, random direction
    push_duration: float = 0.1  # s
    fall_gravity_z: float = -0.5  # fallen when projected gravity z is above this (~60 deg)
    fall_height: float = 0.15  # or when the trunk is below this height (m)
    model: str = "project"  # "project" (sim/assets/go2.xml), "menagerie" ($MENAGERIE_ROOT), or a path
    extra: dict = field(default_factory=dict)

    def validate(self) -> SimConfig:
        for name in ("friction", "base_mass_delta", "push_force"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"SimConfig.{name} must be a (low, high) range, got {(lo, hi)}")
        if self.friction[0] <= 0:
            raise ValueError(f"SimConfig.friction must be positive, got {self.friction}")
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
        if model_path:
            path = Path(model_path)
        elif self.config.model == "project":
            path = default_model_path()
        elif self.config.model == "menagerie":
            path = menagerie_model_path()
        else:
            path = Path(self.config.model)
        if not path.is_file():
            raise FileNotFoundError(f"Go2 model file not found: {path}")
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
        self._floor = m.geom("floor").id
        self._feet_geoms = np.array([m.geom(n).id for n in FOOT_NAMES])
        self._sens = {n: (m.sensor_adr[m.sensor(n).id], m.sensor_dim[m.sensor(n).id])
                      for n in ("imu_quat", "imu_gyro", "imu_acc")}
        self._touch = np.array([m.sensor_adr[m.sensor(f"{f}_touch").id] for f in FOOT_NAMES])
        self._base_mass0 = float(m.body_mass[self._base])
        self._base_inertia0 = m.body_inertia[self._base].copy()
        self.rng = np.random.default_rng(self.config.seed)
        self._push_end = -1.0
        self._next_push = np.inf
        self.friction = float(self.config.friction[0])
        self.base_mass_delta = 0.0
        self.pushes: list[tuple[float, np.ndarray]] = []
        self.reset()

    # ---------------------------------------------------------------- episode control
    def reset(self, joint_pos: np.ndarray | None = None, height: float | None = None,
              yaw: float = 0.0, randomize: bool = True) -> LowState:
        """Put the robot at rest at ``joint_pos`` (SDK order; default pose) with its feet near
        the floor, re-sample the randomized parameters, and hold a zero command."""
        mj, m, d, c = self._mj, self.model, self.data, self.config
        mj.mj_resetData(m, d)
        if randomize:
            self.friction = float(self.rng.uniform(*c.friction))
            self.base_mass_delta = float(self.rng.uniform(*c.base_mass_delta))
        m.geom_friction[self._feet_geoms, 0] = self.friction
        m.geom_friction[self._floor, 0] = self.friction
        m.body_mass[self._base] = self._base_mass0 + self.base_mass_delta
        m.body_inertia[self._base] = self._base_inertia0 * (m.body_mass[self._base] / self._base_mass0)
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
        self.write_command(LowCmd.zero_torque())
        d.xfrc_applied[:] = 0.0
        self._push_end = -1.0
        self.pushes = []
        self._schedule_next_push()
        mj.mj_forward(m, d)
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
        m, a = self.model, self.act
        kp = np.asarray(cmd.kp, dtype=np.float64)
        kd = np.asarray(cmd.kd, dtype=np.float64)
        q = np.asarray(cmd.q, dtype=np.float64)
        dq = np.asarray(cmd.dq, dtype=np.float64)
        tau = np.asarray(cmd.tau, dtype=np.float64)
        if not np.isfinite(q.sum() + dq.sum() + kp.sum() + kd.sum() + tau.sum()):  # one check for all
            raise ValueError("LowCmd contains NaN or inf; refusing to apply it")
        if kp.min() < 0 or kd.min() < 0:
            raise ValueError("LowCmd gains kp, kd must be >= 0")
        m.actuator_biasprm[a, 1] = -kp
        m.actuator_biasprm[a, 2] = -kd
        # kp = 0 / kd = 0 make the (sentinel) targets irrelevant, as on the firmware.
        pos = kp * q if kp.all() else np.where(kp > 0, kp * q, 0.0)
        vel = kd * dq if kd.all() else np.where(kd > 0, kd * dq, 0.0)
        self.data.ctrl[a] = pos + vel + tau

    def wait_tick(self) -> None:
        self.step(1)

    def now(self) -> float:
        return float(self.data.time)

    def step(self, nsteps: int) -> None:
        """Advance ``nsteps`` physics steps holding the current command (pushes handled)."""
        mj, m, d = self._mj, self.model, self.data
        end = d.time + nsteps * PHYSICS_DT - 1e-9
        while d.time < end:
            left = int(round((end - d.time) / PHYSICS_DT + 1e-6))
            if d.time >= self._next_push - 1e-9:
                ang = self.rng.uniform(-np.pi, np.pi)
                mag = self.rng.uniform(*self.config.push_force)
                self.apply_push(mag * np.array([np.cos(ang), np.sin(ang)]))
                self._schedule_next_push()
            n = left
            if self._push_end > d.time:
                n = min(n, max(1, int(round((self._push_end - d.time) / PHYSICS_DT))))
            if np.isfinite(self._next_push):
                n = min(n, max(1, int(np.ceil((self._next_push - d.time) / PHYSICS_DT - 1e-6))))
            mj.mj_step(m, d, nstep=n)
            if self._push_end >= 0 and d.time >= self._push_end - 1e-9:
                d.xfrc_applied[self._base, :] = 0.0
                self._push_end = -1.0

    def step_policy(self, cmd: LowCmd, nsteps: int = 10) -> None:
        """Fast path for collection: hold ``cmd`` for one 50 Hz policy tick (10 physics steps)."""
        self.write_command(cmd)
        self.step(nsteps)

    def read_state(self) -> LowState:
        d = self.data
        s = d.sensordata
        qa, qd = self._sens["imu_quat"][0], self._sens["imu_gyro"][0]
        qacc = self._sens["imu_acc"][0]
        quat = s[qa:qa + 4].copy()
        gyro = s[qd:qd + 3].copy()
        acc = s[qacc:qacc + 3].copy()
        q = d.qpos[self.qadr].copy()
        dq = d.qvel[self.vadr].copy()
        sn = self.config.sensor_noise
        if sn > 0:
            r = self.rng
            q += r.normal(0, sn * _NOISE["q"], 12)
            dq += r.normal(0, sn * _NOISE["dq"], 12)
            gyro += r.normal(0, sn * _NOISE["gyro"], 3)
            acc += r.normal(0, sn * _NOISE["acc"], 3)
            quat += r.normal(0, sn * _NOISE["quat"], 4)
            quat /= np.linalg.norm(quat)
        return LowState(
            quaternion=quat, gyroscope=gyro, accelerometer=acc, q=q, dq=dq,
            tau_est=d.actuator_force[self.act].copy(), foot_force=s[self._touch].copy(),
            tick=int(round(d.time / PHYSICS_DT)),
            base_lin_vel=self.base_lin_vel(), base_pos=d.qpos[0:3].copy(),
        )

    # ---------------------------------------------------------------- privileged helpers
    def base_lin_vel(self) -> np.ndarray:
        """True trunk linear velocity in the body frame (m/s)."""
        d = self.data
        R = d.xmat[self._base].reshape(3, 3)
        return R.T @ d.qvel[0:3]

    def projected_gravity_z(self) -> float:
        return float(-self.data.xmat[self._base].reshape(3, 3)[2, 2])

    def fallen(self) -> bool:
        """Tipped over (projected gravity z above the threshold) or trunk too low."""
        c = self.config
        return self.projected_gravity_z() > c.fall_gravity_z or float(self.data.qpos[2]) < c.fall_height

    def total_mass(self) -> float:
        return float(self.model.body_mass.sum())

    def close(self) -> None:
        pass
