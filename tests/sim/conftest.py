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


@pytest.fixture
def executed_actions(monkeypatch):
    """One dict per controller built (eval builds one per episode): policy tick (round(t / 20 ms))
    -> the action its chunk executor ran in that tick."""
    import robot.controller as rc

    ran: list[dict] = []

    class Ctl(rc.Controller):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            ran.append({})

        def step(self):
            out = super().step()
            r = self.executor.records
            if r:
                ran[-1][round(r[-1].t / 0.02)] = r[-1].action
            return out

    monkeypatch.setattr(rc, "Controller", Ctl)
    return ran
