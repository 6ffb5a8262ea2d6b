"""A batch of real MuJoCo Go2s with the vectorized-sim interface of sim.isaac_harness.

Isaac Lab cannot run here (no GPU, no Isaac Sim): ``sim.isaac_collect.collect`` is exercised
on this stand-in instead, which has the same batch interface (reset / read_states /
write_commands / step / now / fallen / num_envs / decimation) and real physics.
"""

from __future__ import annotations

import numpy as np
import pytest

from robot.types import LowCmd


class MujocoBatch:
    decimation = 10

    def __init__(self, n: int, seed: int = 0):
        from sim.mujoco_harness import MujocoGo2, SimConfig

        self.robots = [MujocoGo2(SimConfig(seed=seed + i)) for i in range(n)]
        self.num_envs = n
        self.physics_dt = 0.002
        self.tick = 0
        self.resets: list[list[int]] = []

    def reset(self, env_ids=None):
        ids = range(self.num_envs) if env_ids is None else [int(i) for i in env_ids]
        self.resets.append(list(ids))
        for i in ids:
            self.robots[i].reset()

    def now(self) -> float:
        return self.tick * self.physics_dt

    def read_states(self, env_ids=None):
        from sim.isaac_mapping import LowStateBatch

        ss = [r.read_state() for r in self.robots]
        st = lambda name: np.stack([getattr(s, name) for s in ss])  # noqa: E731
        return LowStateBatch(quaternion=st("quaternion"), gyroscope=st("gyroscope"),
                             accelerometer=st("accelerometer"), q=st("q"), dq=st("dq"), tau_est=st("tau_est"),
                             foot_force=st("foot_force"), base_lin_vel=st("base_lin_vel"),
                             base_pos=st("base_pos"), tick=self.tick)

    def write_commands(self, q, dq, kp, kd, tau, env_ids=None):
        for i, r in enumerate(self.robots):
            r.write_command(LowCmd(q=q[i], dq=dq[i], kp=kp[i], kd=kd[i], tau=tau[i]))

    def step(self, n: int = 1):
        for r in self.robots:
            r.step(n)
        self.tick += n

    def fallen(self, states=None):
        return np.array([r.fallen() for r in self.robots])


@pytest.fixture
def mujoco_batch():
    pytest.importorskip("mujoco")
    return MujocoBatch
