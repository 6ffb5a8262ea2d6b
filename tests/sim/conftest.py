"""Fixtures for the MuJoCo Go2 tests (real MuJoCo, real HDF5 files)."""

from __future__ import annotations

import pytest

pytest.importorskip("mujoco", reason="the [sim] extra (mujoco) is not installed")


@pytest.fixture
def robot():
    from sim.mujoco_harness import MujocoGo2, SimConfig

    r = MujocoGo2(SimConfig(seed=0))
    yield r
    r.close()
