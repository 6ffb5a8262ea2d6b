"""The robot interface: one small boundary that the controller loop drives.

Implemented by the in-process MuJoCo harness (``sim.mujoco_harness``), the Isaac Lab
harness (``sim.isaac_harness``) and the DDS bridge to the real robot or to the simulator
standing in for it (``robot.dds_bridge``). Commands follow the Go2 firmware semantics:
per motor, tau = kp (q* - q) + kd (dq* - dq) + tau_ff, clamped to the torque limits,
evaluated at the 500 Hz control rate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from robot.types import LowCmd, LowState


class RobotInterface(ABC):
    control_dt: float = 0.002

    @abstractmethod
    def read_state(self) -> LowState:
        """The latest state, as the robot reports it (SDK motor order)."""

    @abstractmethod
    def write_command(self, cmd: LowCmd) -> None:
        """Set the motor command held until the next one (SDK motor order)."""

    @abstractmethod
    def wait_tick(self) -> None:
        """Advance to the next control period: a simulator steps its physics by control_dt;
        a real robot sleeps until the next absolute deadline."""

    @abstractmethod
    def now(self) -> float:
        """The robot's clock in seconds (simulated time for a simulator)."""

    def close(self) -> None:  # noqa: B027
        """Release resources."""


SIMULATOR_GROUP = "planner_runtime.simulators"


def load_simulator(name: str = "mujoco"):
    """A simulated Go2 factory registered under the ``planner_runtime.simulators`` entry-point
    group (pyproject.toml: ``mujoco = "sim.mujoco_harness:simulated_go2"``). The robot stack
    names no simulator module: the simulator registers itself, so ``controller --sim`` works
    where the ``[sim]`` extra is installed and says what is missing elsewhere."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=SIMULATOR_GROUP)}
    if name not in found:
        raise RuntimeError(f"no simulated robot {name!r} is installed (entry points in {SIMULATOR_GROUP}: "
                           f"{sorted(found) or 'none'}); install the [sim] extra: pip install -e '.[sim]'")
    return found[name].load()
