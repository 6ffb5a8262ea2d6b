"""The Go2 in Isaac Lab behind ``robot.interface.RobotInterface`` (GPU, vectorized, headless).

Runs Isaac Lab's Go2 velocity task (``Isaac-Velocity-Flat-Unitree-Go2-v0``: its scene, flat
terrain, robot asset and contact sensors) but not its managers: the task's policy action
(joint position targets through the actuator's own PD at 50 Hz) is replaced by the Go2
firmware's motor law evaluated by this harness every control period, so the controller,
data collection and evaluation see the same command semantics as on the robot and in MuJoCo:

- physics at ``CONTROL_DT`` (500 Hz); per step, per motor,
  tau = kp (q* - q) + kd (dq* - dq) + tau_ff clamped to the Go2 torque limits
  (``sim.isaac_mapping.firmware_pd_torque`` on the GPU for all envs), applied as joint
  effort through an ideal PD actuator with zero gains (Isaac Lab adds nothing of its own);
- state as the robot reports it (``robot.types.LowState``, SDK motor order): IMU quaternion
  (w, x, y, z) from the root orientation, gyroscope = root angular velocity in the body
  frame, accelerometer = specific force in the body frame (finite-differenced root velocity
  minus gravity), motor q/dq/tau_est mapped BY NAME from Isaac Lab's type-grouped joint
  order, foot contact force magnitudes (N) from the task's contact sensor; privileged base
  velocity (body frame) and position (relative to the env origin);
- the planner state through the one observation builder, ``robot.observation.build_state``.

Vectorized: ``IsaacGo2Sim`` steps ``num_envs`` robots at once (``read_states`` /
``write_commands`` / ``step`` on batches); ``IsaacGo2Robot`` is the single-robot
``RobotInterface`` view of one env (what the controller drives).

Works with Isaac Lab 2.x (torch tensors, (w, x, y, z)) and 3.x (warp-backed arrays with a
``.torch`` view, (x, y, z, w), ``*_index`` writers); the quaternion order is taken from the
version and checked against the articulation's own projected gravity on every read.

Isaac Lab must be launched before its other modules are imported: ``launch_app()`` does it
(``isaaclab.app.AppLauncher``, headless by default); ``IsaacGo2Sim`` calls it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INSTALL_HINT = (
    "sim.isaac_harness needs Isaac Lab (the `isaaclab` package, with Isaac Sim), which is not "
    "installed in this Python environment. It needs Linux and an NVIDIA RTX GPU. Install it "
    "with pip (Isaac Lab 2.2: Python 3.11, Isaac Sim 5.0):\n"
    "    pip install 'isaaclab[isaacsim,all]==2.2.*' --extra-index-url https://pypi.nvidia.com\n"
    "or from source (git clone https://github.com/isaac-sim/IsaacLab; ./isaaclab.sh --install), "
    "following the installation guide at https://isaac-sim.github.io/IsaacLab ; then install "
    "this project into the same environment (pip install -e '.[sim]') and run e.g. "
    "`python -m sim.isaac_collect --num-envs 256 --episodes 512 --out data/go2_isaac.h5`."
)

try:
    import isaaclab  # noqa: F401  (importable before the app is launched)
    from isaaclab.app import AppLauncher
except ImportError as _exc:  # pragma: no cover - exercised where Isaac Lab is absent
    raise ImportError(INSTALL_HINT) from _exc

from robot.go2_constants import (  # noqa: E402
    CONTROL_DT,
    DEFAULT_JOINT_POS,
    FOOT_NAMES,
    NUM_JOINTS,
    POLICY_DT,
    TORQUE_LIMIT,
)
from robot.interface import RobotInterface  # noqa: E402
from robot.observation import projected_gravity  # noqa: E402
from robot.types import LowCmd, LowState  # noqa: E402
from sim.isaac_mapping import (  # noqa: E402
    ISAAC_GO2_JOINT_EXPR,
    IsaacJointMap,
    LowStateBatch,
    firmware_pd_torque,
    quat_order_for_version,
    rotate_world_to_body,
    to_wxyz,
)

TASK = "Isaac-Velocity-Flat-Unitree-Go2-v0"
GRAVITY = 9.81
_APP: AppLauncher | None = None


def launch_app(headless: bool = True, device: str = "cuda:0", **kwargs: Any) -> AppLauncher:
    """Start Isaac Sim once per process (must precede importing isaaclab.envs, tasks, ...)."""
    global _APP
    if _APP is None:
        _APP = AppLauncher(headless=headless, device=device, **kwargs)
    return _APP


def close_app() -> None:
    """Shut Isaac Sim down (end of a script; the process cannot launch it again)."""
    global _APP
    if _APP is not None:
        _APP.app.close()
        _APP = None


def isaaclab_version() -> str:
    try:
        return importlib.metadata.version("isaaclab")
    except importlib.metadata.PackageNotFoundError:  # source installs register the extension
        return str(getattr(isaaclab, "__version__", "2"))


@dataclass
class IsaacConfig:
    """Options of the Isaac Lab Go2. ``randomize`` keeps the task's startup randomization
    (base mass, center of mass); the task's friction setting is kept either way."""

    task: str = TASK
    num_envs: int = 1
    device: str = "cuda:0"
    headless: bool = True
    physics_dt: float = CONTROL_DT
    seed: int = 0
    randomize: bool = False
    fall_gravity_z: float = -0.5  # fallen when projected gravity z is above this (~60 deg tilt)
    fall_height: float = 0.15  # or when the trunk is below this height (m)
    quat_order: str = "auto"  # "wxyz" (Isaac Lab 2.x), "xyzw" (3.x) or "auto" (by version)
    app_kwargs: dict = field(default_factory=dict)

    def validate(self) -> IsaacConfig:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if not 0 < self.physics_dt <= POLICY_DT:
            raise ValueError(f"physics_dt must be in (0, {POLICY_DT}], got {self.physics_dt}")
        if abs(POLICY_DT / self.physics_dt - round(POLICY_DT / self.physics_dt)) > 1e-6:
            raise ValueError(f"physics_dt {self.physics_dt} must divide the policy period {POLICY_DT}")
        if self.quat_order not in ("auto", "wxyz", "xyzw"):
            raise ValueError(f"quat_order must be auto, wxyz or xyzw, got {self.quat_order!r}")
        return self


def _torch_view(x: Any) -> Any:
    """Isaac Lab 3.x data are warp-backed arrays with a ``.torch`` view; 2.x are tensors."""
    t = getattr(x, "torch", None)
    if t is not None:
        return t
    if type(x).__module__.startswith("warp"):
        import warp as wp

        return wp.to_torch(x)
    return x


class IsaacGo2Sim:
    """N simulated Go2s in one Isaac Lab scene, driven with the firmware's motor law."""

    def __init__(self, config: IsaacConfig | None = None):
        self.config = c = (config or IsaacConfig()).validate()
        launch_app(headless=c.headless, device=c.device, **c.app_kwargs)
        # Only importable once the app runs.
        import gymnasium as gym
        import isaaclab_tasks  # noqa: F401  (registers the Isaac-* tasks)
        import torch
        from isaaclab.actuators import IdealPDActuatorCfg
        from isaaclab_tasks.utils import parse_env_cfg

        self.torch = torch
        env_cfg = parse_env_cfg(c.task, device=c.device, num_envs=c.num_envs)
        env_cfg.seed = c.seed
        env_cfg.sim.dt = c.physics_dt
        env_cfg.decimation = int(round(POLICY_DT / c.physics_dt))
        # The task ties the contact sensor's period to its own 5 ms step: refresh it every step.
        contact_cfg = getattr(env_cfg.scene, "contact_forces", None)
        if contact_cfg is not None:
            contact_cfg.update_period = c.physics_dt
        # Efforts come from firmware_pd_torque; the actuator adds no PD of its own and clips
        # at the Go2's limits (hip/thigh 23.7 N m, calf 45.43 N m).
        limits = {ISAAC_GO2_JOINT_EXPR[0]: float(TORQUE_LIMIT[0]), ISAAC_GO2_JOINT_EXPR[1]: float(TORQUE_LIMIT[1]),
                  ISAAC_GO2_JOINT_EXPR[2]: float(TORQUE_LIMIT[2])}
        env_cfg.scene.robot.actuators = {
            "legs": IdealPDActuatorCfg(joint_names_expr=list(ISAAC_GO2_JOINT_EXPR), stiffness=0.0,
                                       damping=0.0, effort_limit=limits, velocity_limit=30.0),
        }
        if not c.randomize:
            for name in ("add_base_mass", "base_com", "push_robot", "base_external_force_torque"):
                if hasattr(env_cfg.events, name):
                    setattr(env_cfg.events, name, None)
        self.env = gym.make(c.task, cfg=env_cfg)
        self.env.reset(seed=c.seed)
        u = self.env.unwrapped
        self.scene, self.sim = u.scene, u.sim
        self.robot = self.scene["robot"]
        self.device = self.robot.device
        self.num_envs = int(self.scene.num_envs)
        self.physics_dt = float(c.physics_dt)
        self.decimation = int(env_cfg.decimation)
        self.jmap = IsaacJointMap(list(self.robot.joint_names))
        dev = self.device
        self._sdk_from_isaac = torch.as_tensor(self.jmap.sdk_from_isaac, device=dev)
        self._isaac_from_sdk = torch.as_tensor(self.jmap.isaac_from_sdk, device=dev)
        self._limit = torch.as_tensor(TORQUE_LIMIT, dtype=torch.float32, device=dev)
        self.quat_order = quat_order_for_version(isaaclab_version()) if c.quat_order == "auto" else c.quat_order
        # Commands (SDK order) held between writes, as the firmware holds the last LowCmd.
        z = torch.zeros(self.num_envs, NUM_JOINTS, device=dev)
        self._cmd = {k: z.clone() for k in ("q", "dq", "kp", "kd", "tau")}
        self._feet = self._find_feet()
        self._prev_vel_w: Any = None
        self._acc_w = torch.zeros(self.num_envs, 3, device=dev)
        self.tick = 0
        self.reset()

    # ------------------------------------------------------------------ Isaac Lab access
    def _data(self, name: str) -> Any:
        return _torch_view(getattr(self.robot.data, name))

    def _np(self, name: str) -> np.ndarray:
        return self._data(name).detach().cpu().numpy().astype(np.float64)

    def _find_feet(self) -> tuple[Any, Any] | None:
        """(contact sensor, body indices in FR, FL, RR, RL order), or None without a sensor."""
        try:
            sensor = self.scene["contact_forces"]
        except KeyError:
            return None
        ids, names = sensor.find_bodies(".*_foot")
        by_name = dict(zip(names, ids, strict=True))
        missing = [f for f in FOOT_NAMES if f not in by_name]
        if missing:
            raise ValueError(f"contact sensor lacks foot bodies {missing}; it has {names}")
        return sensor, [by_name[f] for f in FOOT_NAMES]

    def _all_ids(self, env_ids: Any) -> Any:
        torch = self.torch
        if env_ids is None:
            return torch.arange(self.num_envs, device=self.device)
        return torch.as_tensor(env_ids, dtype=torch.long, device=self.device).reshape(-1)

    def _write_root(self, pose: Any, vel: Any, ids: Any) -> None:
        r = self.robot
        if hasattr(r, "write_root_pose_to_sim_index"):  # Isaac Lab 3.x
            r.write_root_pose_to_sim_index(root_pose=pose, env_ids=ids)
            r.write_root_velocity_to_sim_index(root_velocity=vel, env_ids=ids)
        else:
            r.write_root_pose_to_sim(pose, env_ids=ids)
            r.write_root_velocity_to_sim(vel, env_ids=ids)

    def _write_joints(self, q: Any, dq: Any, ids: Any) -> None:
        r = self.robot
        if hasattr(r, "write_joint_position_to_sim_index"):  # Isaac Lab 3.x
            r.write_joint_position_to_sim_index(position=q, env_ids=ids)
            r.write_joint_velocity_to_sim_index(velocity=dq, env_ids=ids)
        else:
            r.write_joint_state_to_sim(q, dq, env_ids=ids)

    def _set_effort(self, tau_isaac: Any) -> None:
        r = self.robot
        if hasattr(r, "set_joint_effort_target_index"):  # Isaac Lab 3.x
            r.set_joint_effort_target_index(target=tau_isaac)
        else:
            r.set_joint_effort_target(tau_isaac)

    def _default_root(self, ids: Any) -> Any:
        d = self.robot.data
        if getattr(d, "default_root_state", None) is not None:
            root = _torch_view(d.default_root_state)[ids].clone()
        else:  # Isaac Lab 3.x keeps pose and velocity apart
            root = self.torch.cat([_torch_view(d.default_root_pose)[ids], _torch_view(d.default_root_vel)[ids]], dim=-1)
        root[:, :3] += _torch_view(self.scene.env_origins)[ids]
        return root  # the native quaternion order: copied, never reinterpreted

    # ------------------------------------------------------------------ episode control
    def reset(self, env_ids: Any = None, joint_pos: np.ndarray | None = None) -> None:
        """Put the selected robots at their spawn pose (task default, env origin), joints at
        ``joint_pos`` (SDK order; default pose), at rest, with a zero-torque command."""
        torch = self.torch
        ids = self._all_ids(env_ids)
        q_sdk = DEFAULT_JOINT_POS if joint_pos is None else np.asarray(joint_pos, dtype=np.float64)
        if q_sdk.shape != (NUM_JOINTS,):
            raise ValueError(f"joint_pos must have {NUM_JOINTS} entries (SDK order), got {q_sdk.shape}")
        root = self._default_root(ids)
        self._write_root(root[:, :7], root[:, 7:13], ids)
        q = torch.as_tensor(self.jmap.to_isaac(q_sdk), dtype=torch.float32, device=self.device)
        q = q.expand(len(ids), NUM_JOINTS).contiguous()
        self._write_joints(q, torch.zeros_like(q), ids)
        self.robot.reset(ids)
        for v in self._cmd.values():
            v[ids] = 0.0
        self._set_effort(torch.zeros(self.num_envs, NUM_JOINTS, device=self.device))
        self.scene.write_data_to_sim()
        if hasattr(self.sim, "forward"):
            self.sim.forward()
        self.scene.update(dt=0.0)
        self._prev_vel_w = None
        self._acc_w[ids] = 0.0

    def write_commands(self, q: Any, dq: Any, kp: Any, kd: Any, tau: Any, env_ids: Any = None) -> None:
        """Set the held command (SDK order) of the selected envs: arrays [n, 12] or [12]."""
        torch = self.torch
        ids = self._all_ids(env_ids)
        vals = {}
        for name, v in (("q", q), ("dq", dq), ("kp", kp), ("kd", kd), ("tau", tau)):
            t = torch.as_tensor(np.asarray(v, dtype=np.float32) if not torch.is_tensor(v) else v,
                                dtype=torch.float32, device=self.device)
            if t.shape[-1] != NUM_JOINTS or t.dim() > 2 or (t.dim() == 2 and t.shape[0] not in (1, len(ids))):
                raise ValueError(f"command {name} must have shape [{len(ids)}, {NUM_JOINTS}] or "
                                 f"[{NUM_JOINTS}], got {tuple(t.shape)}")
            t = t.expand(len(ids), NUM_JOINTS)
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"command {name} contains NaN or inf; refusing to apply it")
            vals[name] = t
        if bool((vals["kp"] < 0).any()) or bool((vals["kd"] < 0).any()):
            raise ValueError("command gains kp, kd must be >= 0")
        for name, t in vals.items():
            self._cmd[name][ids] = t

    def step(self, nsteps: int = 1) -> None:
        """Advance ``nsteps`` control periods, evaluating the motor law before each."""
        c = self._cmd
        for _ in range(nsteps):
            q = self._data("joint_pos")[:, self._sdk_from_isaac]
            dq = self._data("joint_vel")[:, self._sdk_from_isaac]
            tau = firmware_pd_torque(q, dq, c["q"], c["dq"], c["kp"], c["kd"], c["tau"], self._limit)
            self._set_effort(tau[:, self._isaac_from_sdk].contiguous())
            self.scene.write_data_to_sim()
            self.sim.step(render=False)
            self.scene.update(dt=self.physics_dt)
            self.tick += 1
            # Accelerometer: finite difference of the world-frame velocity over one period
            # (on the device: no host sync per physics step).
            vel = self._data("root_lin_vel_w").clone()
            if self._prev_vel_w is not None:
                self._acc_w = (vel - self._prev_vel_w) / self.physics_dt
            self._prev_vel_w = vel

    def now(self) -> float:
        return self.tick * self.physics_dt

    # ------------------------------------------------------------------ state
    def read_states(self, env_ids: Any = None) -> LowStateBatch:
        """The robots' state (numpy, SDK order) as the Go2 would report it."""
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64).reshape(-1)
        quat = to_wxyz(self._np("root_quat_w")[ids], self.quat_order)
        grav_b = self._np("projected_gravity_b")[ids]
        # Wrong quaternion order makes the IMU lie: refuse rather than train on it.
        mine = projected_gravity(quat[0])
        if not np.allclose(mine, grav_b[0], atol=1e-3):
            raise RuntimeError(
                f"quaternion order {self.quat_order!r} disagrees with Isaac Lab's projected gravity "
                f"({mine} vs {grav_b[0]}); set IsaacConfig.quat_order explicitly (Isaac Lab {isaaclab_version()})")
        acc_w = self._acc_w.detach().cpu().numpy().astype(np.float64)[ids]
        acc_b = rotate_world_to_body(quat, acc_w + np.array([0.0, 0.0, GRAVITY]))  # specific force
        base_pos = self._np("root_pos_w")[ids] - _torch_view(self.scene.env_origins).detach().cpu().numpy()[ids]
        foot = np.zeros((len(ids), 4))
        if self._feet is not None:
            sensor, body_ids = self._feet
            f = _torch_view(sensor.data.net_forces_w)[:, body_ids].detach().cpu().numpy()
            foot = np.linalg.norm(f, axis=-1)[ids]
        to_sdk = self.jmap.to_sdk
        return LowStateBatch(
            quaternion=quat, gyroscope=self._np("root_ang_vel_b")[ids], accelerometer=acc_b,
            q=to_sdk(self._np("joint_pos"))[ids], dq=to_sdk(self._np("joint_vel"))[ids],
            tau_est=to_sdk(self._np("applied_torque"))[ids], foot_force=foot,
            base_lin_vel=self._np("root_lin_vel_b")[ids], base_pos=base_pos, tick=self.tick)

    def fallen(self, states: LowStateBatch | None = None) -> np.ndarray:
        """[N] bool: tilted past ``fall_gravity_z`` or trunk below ``fall_height``."""
        s = states if states is not None else self.read_states()
        gz = np.array([projected_gravity(qq)[2] for qq in s.quaternion])
        return (gz > self.config.fall_gravity_z) | (s.base_pos[:, 2] < self.config.fall_height)

    def close(self) -> None:
        self.env.close()


class IsaacGo2Robot(RobotInterface):
    """One env of an ``IsaacGo2Sim`` as the robot interface the controller drives.

    ``wait_tick`` steps the whole scene by one control period (other envs hold their last
    command), so drive one view per simulation (``num_envs=1``) from the controller loop.
    """

    def __init__(self, sim: IsaacGo2Sim | None = None, env_index: int = 0, config: IsaacConfig | None = None):
        self.sim = sim if sim is not None else IsaacGo2Sim(config)
        if not 0 <= env_index < self.sim.num_envs:
            raise ValueError(f"env_index {env_index} out of range for {self.sim.num_envs} envs")
        self.env_index = env_index
        self.control_dt = self.sim.physics_dt

    def reset(self, joint_pos: np.ndarray | None = None) -> LowState:
        self.sim.reset([self.env_index], joint_pos=joint_pos)
        return self.read_state()

    def read_state(self) -> LowState:
        return self.sim.read_states([self.env_index]).env(0)

    def write_command(self, cmd: LowCmd) -> None:
        self.sim.write_commands(cmd.q, cmd.dq, cmd.kp, cmd.kd, cmd.tau, env_ids=[self.env_index])

    def wait_tick(self) -> None:
        self.sim.step(1)

    def now(self) -> float:
        return self.sim.now()

    def fallen(self) -> bool:
        return bool(self.sim.fallen(self.sim.read_states([self.env_index]))[0])

    def close(self) -> None:
        self.sim.close()
