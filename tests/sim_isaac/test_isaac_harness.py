"""sim.isaac_harness: the clear error without Isaac Lab (runs here), and the harness itself on
Isaac Lab (marked `isaac`; skipped here: no Isaac Sim, no GPU)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

HAVE_ISAACLAB = importlib.util.find_spec("isaaclab") is not None
needs_isaac = pytest.mark.skipif(not HAVE_ISAACLAB, reason="Isaac Lab (isaaclab + Isaac Sim, NVIDIA GPU) is not installed")


@pytest.mark.skipif(HAVE_ISAACLAB, reason="Isaac Lab is installed: the guard does not fire")
def test_import_without_isaaclab_says_how_to_install():
    r = subprocess.run([sys.executable, "-c", "import sim.isaac_harness"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "ImportError: sim.isaac_harness needs Isaac Lab" in r.stderr
    assert "pip install 'isaaclab[isaacsim,all]" in r.stderr and "isaaclab.sh --install" in r.stderr
    # the mapping and the collector stay importable for tests and tooling
    r = subprocess.run([sys.executable, "-c", "import sim.isaac_mapping, sim.isaac_collect"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(HAVE_ISAACLAB, reason="Isaac Lab is installed: the guard does not fire")
def test_collect_cli_without_isaaclab_exits_2_with_the_hint(tmp_path):
    out = tmp_path / "d.h5"
    r = subprocess.run([sys.executable, "-m", "sim.isaac_collect", "--episodes", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs Isaac Lab" in r.stderr
    assert not out.exists()


# ---------------------------------------------------------------- on Isaac Lab (GPU machine)

@pytest.fixture(scope="module")
def isaac_sim():
    from sim.isaac_harness import IsaacConfig, IsaacGo2Sim

    sim = IsaacGo2Sim(IsaacConfig(num_envs=2, seed=0))
    yield sim
    sim.close()


@pytest.mark.isaac
@needs_isaac
def test_isaac_joint_order_is_mapped_by_name(isaac_sim):
    from robot.go2_constants import JOINT_NAMES

    names = isaac_sim.jmap.isaac_names
    assert [names[i] for i in isaac_sim.jmap.sdk_from_isaac] == list(JOINT_NAMES)


@pytest.mark.isaac
@needs_isaac
def test_isaac_stands_under_firmware_pd_and_reports_a_consistent_imu(isaac_sim):
    from robot.go2_constants import DEFAULT_JOINT_POS, STAND_KD, STAND_KP

    isaac_sim.reset()
    isaac_sim.write_commands(DEFAULT_JOINT_POS, np.zeros(12), np.full(12, STAND_KP), np.full(12, STAND_KD),
                             np.zeros(12))
    isaac_sim.step(500)  # 1 s
    s = isaac_sim.read_states()  # raises if the quaternion order disagrees with projected gravity
    assert not isaac_sim.fallen(s).any()
    assert np.all(s.base_pos[:, 2] > 0.2)
    assert np.allclose(s.q, DEFAULT_JOINT_POS, atol=0.15)
    assert np.allclose(s.accelerometer[:, 2], 9.81, atol=1.0)  # at rest: gravity's reaction
    X = s.states()
    assert X.shape == (2, 30) and np.all(X[:, 5] < -0.95)


@pytest.mark.isaac
@needs_isaac
def test_isaac_robot_interface_and_collection(isaac_sim, tmp_path):
    from planner_runtime.dataset import DatasetWriter, load_dataset
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES
    from robot.types import LowCmd
    from sim.expert import TrotExpert
    from sim.isaac_collect import CollectConfig, collect, raw_shapes
    from sim.isaac_harness import IsaacGo2Robot

    robot = IsaacGo2Robot(isaac_sim, env_index=1)
    t0 = robot.now()
    robot.write_command(LowCmd.zero_torque())
    robot.wait_tick()
    assert robot.now() == pytest.approx(t0 + 0.002)
    path = tmp_path / "isaac.h5"
    with DatasetWriter(path, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES), 0.02,
                       robot="go2", raw_shapes=raw_shapes()) as w:
        rep = collect(isaac_sim, w, TrotExpert, CollectConfig(episodes=2, episode_duration=1.0))
    assert rep["episodes"] == 2
    assert len(list(load_dataset(path).episodes())) == 2
