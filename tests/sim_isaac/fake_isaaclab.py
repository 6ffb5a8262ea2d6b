"""A stand-in for the slice of Isaac Lab's API that ``sim.isaac_harness`` uses, backed by real
MuJoCo Go2s (``sim.mujoco_harness``), for tests on machines without Isaac Sim or a GPU.

This does NOT test Isaac Lab: it tests the harness's own logic (joint mapping by name from
Isaac Lab's type-grouped order, the motor law applied as joint efforts, state assembly,
resets, quaternion-order handling, the 2.x and 3.x API variants) against real physics.
Only the API shapes are imitated, from Isaac Lab's documentation: the articulation lists
joints as all hips, then thighs, then calves (legs FL, FR, RL, RR); data are (N, ...)
tensors (2.x) or objects with a ``.torch`` view (3.x); quaternions are (w, x, y, z) in 2.x
and (x, y, z, w) in 3.x; the contact sensor lists bodies in its own order.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import torch

from robot.go2_constants import JOINT_NAMES, NUM_JOINTS
from robot.types import LowCmd

ISAAC_ORDER = [f"{leg}_{j}_joint" for j in ("hip", "thigh", "calf") for leg in ("FL", "FR", "RL", "RR")]
# The contact sensor's own body order (not the SDK's foot order): base first, feet FL FR RL RR.
SENSOR_BODIES = ["base", "FL_foot", "FR_foot", "RL_foot", "RR_foot", "FL_calf"]
_SDK_FROM_ISAAC = np.array([ISAAC_ORDER.index(n) for n in JOINT_NAMES])
_ISAAC_FROM_SDK = np.array([JOINT_NAMES.index(n) for n in ISAAC_ORDER])


def _rot(quat_wxyz: np.ndarray) -> np.ndarray:
    import mujoco

    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(quat_wxyz, dtype=np.float64))
    return m.reshape(3, 3)


class Proxy:
    """Isaac Lab 3.x style data: an array object whose ``.torch`` is the tensor view."""

    def __init__(self, t: torch.Tensor):
        self.torch = t


class FakeData:
    def __init__(self, art: FakeArticulation):
        self._a = art

    def _wrap(self, x: np.ndarray):
        t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return Proxy(t) if self._a.v3 else t

    def _rows(self, fn):
        return self._wrap(np.stack([fn(r) for r in self._a.robots]))

    @property
    def root_pos_w(self):
        return self._rows(lambda r: r.data.qpos[0:3])

    @property
    def root_quat_w(self):
        q = self._rows(lambda r: r.data.qpos[3:7])
        t = q.torch if self._a.v3 else q
        if self._a.reported_order == "xyzw":
            t = t[:, [1, 2, 3, 0]]
        return Proxy(t) if self._a.v3 else t

    @property
    def root_lin_vel_w(self):
        return self._rows(lambda r: r.data.qvel[0:3])

    @property
    def root_lin_vel_b(self):
        return self._rows(lambda r: _rot(r.data.qpos[3:7]).T @ r.data.qvel[0:3])

    @property
    def root_ang_vel_b(self):
        return self._rows(lambda r: r.data.qvel[3:6])  # MuJoCo's free joint: body frame

    @property
    def projected_gravity_b(self):
        # MuJoCo's own quaternion -> matrix (not the project's code), from the current pose.
        return self._rows(lambda r: _rot(r.data.qpos[3:7]).T @ np.array([0.0, 0.0, -1.0]))

    @property
    def joint_pos(self):
        return self._rows(lambda r: r.data.qpos[r.qadr][_ISAAC_FROM_SDK])

    @property
    def joint_vel(self):
        return self._rows(lambda r: r.data.qvel[r.vadr][_ISAAC_FROM_SDK])

    @property
    def applied_torque(self):
        return self._rows(lambda r: r.data.actuator_force[r.act][_ISAAC_FROM_SDK])

    def _default_root(self) -> np.ndarray:
        n = len(self._a.robots)
        yaw = self._a.spawn_yaw
        q = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        if self._a.reported_order == "xyzw":
            q = q[[1, 2, 3, 0]]
        return np.tile(np.concatenate([[0.0, 0.0, 0.33], q, np.zeros(6)]), (n, 1))

    def __getattr__(self, name):
        if name == "default_root_state" and not self._a.v3:
            return torch.as_tensor(self._default_root(), dtype=torch.float32)
        if name == "default_root_pose" and self._a.v3:
            return Proxy(torch.as_tensor(self._default_root()[:, :7], dtype=torch.float32))
        if name == "default_root_vel" and self._a.v3:
            return Proxy(torch.as_tensor(self._default_root()[:, 7:], dtype=torch.float32))
        raise AttributeError(name)


class FakeArticulation:
    def __init__(self, n: int, v3: bool, reported_order: str, spawn_yaw: float):
        from sim.mujoco_harness import MujocoGo2, SimConfig

        self.robots = [MujocoGo2(SimConfig(seed=i)) for i in range(n)]
        self.v3, self.reported_order, self.spawn_yaw = v3, reported_order, spawn_yaw
        self.joint_names = list(ISAAC_ORDER)
        self.device = "cpu"
        self.data = FakeData(self)
        self.effort = torch.zeros(n, NUM_JOINTS)
        self.calls: list[str] = []
        if v3:  # Isaac Lab 3.x writers (keyword-only)
            self.write_root_pose_to_sim_index = self._pose_kw
            self.write_root_velocity_to_sim_index = self._vel_kw
            self.write_joint_position_to_sim_index = self._jpos_kw
            self.write_joint_velocity_to_sim_index = self._jvel_kw
            self.set_joint_effort_target_index = self._effort_kw
        else:
            self.write_root_pose_to_sim = self._pose
            self.write_root_velocity_to_sim = self._vel
            self.write_joint_state_to_sim = self._jstate
            self.set_joint_effort_target = self._effort

    # -- writers
    def _pose(self, root_pose, env_ids=None):
        self.calls.append("pose")
        for row, i in zip(root_pose.numpy(), np.asarray(env_ids), strict=True):
            d = self.robots[i].data
            q = row[3:7] if self.reported_order == "wxyz" else row[[6, 3, 4, 5]]
            d.qpos[0:3], d.qpos[3:7] = row[:3], q

    def _vel(self, root_velocity, env_ids=None):
        self.calls.append("vel")
        for row, i in zip(root_velocity.numpy(), np.asarray(env_ids), strict=True):
            d = self.robots[i].data
            d.qvel[0:3] = row[:3]
            q = d.qpos[3:7]
            d.qvel[3:6] = _rot(q).T @ row[3:6]

    def _jstate(self, position, velocity, env_ids=None):
        self.calls.append("joints")
        for p, v, i in zip(position.numpy(), velocity.numpy(), np.asarray(env_ids), strict=True):
            r = self.robots[i]
            r.data.qpos[r.qadr] = p[_SDK_FROM_ISAAC]
            r.data.qvel[r.vadr] = v[_SDK_FROM_ISAAC]

    def _effort(self, target, joint_ids=None, env_ids=None):
        assert tuple(target.shape) == (len(self.robots), NUM_JOINTS)
        self.effort = target.clone()

    def _pose_kw(self, *, root_pose, env_ids=None):
        self._pose(root_pose, env_ids)

    def _vel_kw(self, *, root_velocity, env_ids=None):
        self._vel(root_velocity, env_ids)

    def _jpos_kw(self, *, position, env_ids=None):
        for p, i in zip(position.numpy(), np.asarray(env_ids), strict=True):
            r = self.robots[i]
            r.data.qpos[r.qadr] = p[_SDK_FROM_ISAAC]

    def _jvel_kw(self, *, velocity, env_ids=None):
        for v, i in zip(velocity.numpy(), np.asarray(env_ids), strict=True):
            r = self.robots[i]
            r.data.qvel[r.vadr] = v[_SDK_FROM_ISAAC]

    def _effort_kw(self, *, target, joint_ids=None, env_ids=None):
        self._effort(target)

    def reset(self, env_ids=None):
        self.calls.append("reset")

    # -- what PhysX would do with the targets
    def apply(self):
        for i, r in enumerate(self.robots):
            r.write_command(LowCmd(tau=self.effort[i].numpy().astype(np.float64)[_SDK_FROM_ISAAC]))


class FakeContactSensor:
    def __init__(self, art: FakeArticulation):
        self._a = art
        self.data = self

    def find_bodies(self, expr):
        import re

        ids = [i for i, n in enumerate(SENSOR_BODIES) if re.fullmatch(expr, n)]
        return ids, [SENSOR_BODIES[i] for i in ids]

    @property
    def net_forces_w(self):
        out = np.zeros((len(self._a.robots), len(SENSOR_BODIES), 3))
        for k, r in enumerate(self._a.robots):
            f = r.read_state().foot_force  # FR, FL, RR, RL
            for name, val in zip(("FR_foot", "FL_foot", "RR_foot", "RL_foot"), f, strict=True):
                out[k, SENSOR_BODIES.index(name), 2] = val
        t = torch.as_tensor(out, dtype=torch.float32)
        return Proxy(t) if self._a.v3 else t


class FakeScene:
    def __init__(self, art: FakeArticulation, with_sensor: bool):
        self.art = art
        self._items = {"robot": art}
        if with_sensor:
            self._items["contact_forces"] = FakeContactSensor(art)
        self.num_envs = len(art.robots)
        self.env_origins = torch.zeros(self.num_envs, 3)

    def __getitem__(self, key):
        if key not in self._items:
            raise KeyError(f"Scene entity with key '{key}' not found")
        return self._items[key]

    def write_data_to_sim(self):
        self.art.apply()

    def update(self, dt):
        pass


class FakeSimContext:
    def __init__(self, art: FakeArticulation, dt: float):
        self.art, self.dt, self.steps = art, dt, 0

    def step(self, render=True):
        for r in self.art.robots:
            r.step(1)
        self.steps += 1

    def forward(self):
        for r in self.art.robots:
            r._mj.mj_forward(r.model, r.data)


class FakeEnv:
    def __init__(self, cfg, v3, order, yaw, with_sensor):
        assert abs(cfg.sim.dt - 0.002) < 1e-12, "the MuJoCo stand-in steps at 2 ms"
        self.cfg = cfg
        art = FakeArticulation(cfg.scene.num_envs, v3, order, yaw)
        self.unwrapped = SimpleNamespace(scene=FakeScene(art, with_sensor), sim=FakeSimContext(art, cfg.sim.dt))
        self.closed = False

    def reset(self, seed=None):
        return {}, {}

    def close(self):
        self.closed = True


def install(monkeypatch, *, version: str = "2.2.0", reported_order: str = "wxyz", spawn_yaw: float = 0.0,
            with_sensor: bool = True) -> SimpleNamespace:
    """Put fake isaaclab / isaaclab_tasks / gymnasium modules in sys.modules and return a
    namespace that records what the harness asked for."""
    rec = SimpleNamespace(app_kwargs=None, env=None, cfg=None, closed_app=False)
    v3 = int(version.split(".")[0]) >= 3

    isaaclab = types.ModuleType("isaaclab")
    isaaclab.__version__ = version
    app_mod = types.ModuleType("isaaclab.app")

    class AppLauncher:
        def __init__(self, **kw):
            rec.app_kwargs = kw
            self.app = SimpleNamespace(close=lambda: setattr(rec, "closed_app", True))

    app_mod.AppLauncher = AppLauncher
    act_mod = types.ModuleType("isaaclab.actuators")

    class IdealPDActuatorCfg(SimpleNamespace):
        pass

    act_mod.IdealPDActuatorCfg = IdealPDActuatorCfg
    tasks = types.ModuleType("isaaclab_tasks")
    tasks_utils = types.ModuleType("isaaclab_tasks.utils")

    def parse_env_cfg(task, device="cuda:0", num_envs=None, use_fabric=None):
        events = SimpleNamespace(physics_material=object(), add_base_mass=object(), base_com=object(),
                                 base_external_force_torque=object(), push_robot=None,
                                 reset_base=object(), reset_robot_joints=object())
        rec.cfg = SimpleNamespace(
            task=task, device=device, seed=None, decimation=4, sim=SimpleNamespace(dt=0.005),
            scene=SimpleNamespace(num_envs=num_envs, robot=SimpleNamespace(actuators={"base_legs": "DCMotorCfg"}),
                                  contact_forces=SimpleNamespace(update_period=0.005)),
            events=events)
        return rec.cfg

    tasks_utils.parse_env_cfg = parse_env_cfg
    gym = types.ModuleType("gymnasium")

    def make(task, cfg=None, **kw):
        rec.env = FakeEnv(cfg, v3, reported_order, spawn_yaw, with_sensor)
        return rec.env

    gym.make = make
    for name, mod in {"isaaclab": isaaclab, "isaaclab.app": app_mod, "isaaclab.actuators": act_mod,
                      "isaaclab_tasks": tasks, "isaaclab_tasks.utils": tasks_utils, "gymnasium": gym}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "sim.isaac_harness", raising=False)
    return rec
