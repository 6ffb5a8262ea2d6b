"""sim.isaac_harness's own logic on a stand-in for Isaac Lab's API backed by real MuJoCo Go2s
(fake_isaaclab.py). Isaac Lab itself cannot run here; this checks what the harness does with
its API: configuration, joint mapping by name, the motor law as efforts, state assembly,
resets, quaternion orders and the 2.x / 3.x variants. The real thing: test_isaac_harness.py
(`isaac` marker)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from robot.go2_constants import DEFAULT_JOINT_POS, JOINT_NAMES, STAND_KD, STAND_KP, TORQUE_LIMIT
from robot.interface import RobotInterface
from robot.observation import projected_gravity
from robot.types import LowCmd

from . import fake_isaaclab as fake

pytest.importorskip("mujoco")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _forget_fake_backed_harness():
    """The harness module imported against the fakes must not outlive the test."""
    yield
    import sys

    import sim

    sys.modules.pop("sim.isaac_harness", None)
    if hasattr(sim, "isaac_harness"):
        delattr(sim, "isaac_harness")


def harness(monkeypatch, **kw):
    rec = fake.install(monkeypatch, **kw)
    ih = importlib.import_module("sim.isaac_harness")
    monkeypatch.setattr(ih, "_APP", None)
    return ih, rec


def stand(sim, steps=400):
    sim.write_commands(DEFAULT_JOINT_POS, np.zeros(12), np.full(12, STAND_KP), np.full(12, STAND_KD), np.zeros(12))
    sim.step(steps)
    return sim.read_states()


@pytest.mark.parametrize("version,order", [("2.2.0", "wxyz"), ("3.0.0", "xyzw")], ids=["isaaclab2", "isaaclab3"])
def test_configures_the_task_for_firmware_semantics_and_stands(monkeypatch, version, order):
    ih, rec = harness(monkeypatch, version=version, reported_order=order, spawn_yaw=0.6)
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=2, device="cpu"))
    cfg = rec.cfg
    assert rec.app_kwargs == {"headless": True, "device": "cpu"}
    assert cfg.task == "Isaac-Velocity-Flat-Unitree-Go2-v0" and cfg.scene.num_envs == 2
    assert cfg.sim.dt == 0.002 and cfg.decimation == 10 and cfg.scene.contact_forces.update_period == 0.002
    act = cfg.scene.robot.actuators["legs"]
    assert act.stiffness == 0.0 and act.damping == 0.0
    assert act.effort_limit == {".*_hip_joint": 23.7, ".*_thigh_joint": 23.7, ".*_calf_joint": 45.43}
    assert cfg.events.add_base_mass is None and cfg.events.base_com is None
    assert cfg.events.physics_material is not None  # friction stays the task's
    assert sim.quat_order == order
    assert [sim.jmap.isaac_names[i] for i in sim.jmap.sdk_from_isaac] == list(JOINT_NAMES)

    s = stand(sim)
    art = rec.env.unwrapped.scene.art
    assert not sim.fallen(s).any()
    assert np.all(s.base_pos[:, 2] > 0.22)
    assert np.allclose(s.q, DEFAULT_JOINT_POS, atol=0.1)
    # the quaternion is reported (w, x, y, z) whatever Isaac Lab's order, and it is MuJoCo's
    for i, r in enumerate(art.robots):
        assert np.allclose(s.quaternion[i], r.data.qpos[3:7], atol=1e-6)
        assert np.allclose(s.q[i], r.data.qpos[r.qadr], atol=1e-6)  # SDK order by name
        assert np.allclose(s.tau_est[i], r.data.actuator_force[r.act], atol=1e-4)
    yaw = 2 * np.arctan2(s.quaternion[:, 3], s.quaternion[:, 0])
    assert np.allclose(yaw, 0.6, atol=0.05)  # spawned from the task's default root state
    assert np.allclose(s.accelerometer[:, 2], 9.81, atol=0.5)  # at rest: specific force
    assert np.allclose(s.foot_force.sum(axis=1), 15.2 * 9.81, rtol=0.15)  # feet carry the robot
    X = s.states()
    assert X.shape == (2, 30) and np.all(X[:, 5] < -0.99)


def test_effort_is_the_firmware_law_in_isaac_order(monkeypatch):
    from sim.isaac_mapping import firmware_pd_torque

    ih, rec = harness(monkeypatch)
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=2, device="cpu"))
    art = rec.env.unwrapped.scene.art
    rng = np.random.default_rng(0)
    q_des = DEFAULT_JOINT_POS + rng.normal(0, 0.4, (2, 12))
    kp = np.where(rng.random((2, 12)) > 0.3, 50.0, 0.0)
    ff = rng.normal(0, 5, (2, 12))
    s0 = sim.read_states()
    sim.write_commands(q_des, np.zeros((2, 12)), kp, np.full((2, 12), 1.0), ff)
    sim.step(1)
    want = firmware_pd_torque(s0.q, s0.dq, q_des, np.zeros((2, 12)), kp, np.ones((2, 12)), ff, TORQUE_LIMIT)
    got_isaac = art.effort.numpy().astype(np.float64)
    got_sdk = got_isaac[:, fake._SDK_FROM_ISAAC]
    assert np.allclose(got_sdk, want, atol=1e-4)
    # and in Isaac order: the first four columns are the hips FL, FR, RL, RR
    hips = [JOINT_NAMES.index(n) for n in ("FL_hip_joint", "FR_hip_joint", "RL_hip_joint", "RR_hip_joint")]
    assert np.allclose(got_isaac[:, :4], want[:, hips], atol=1e-4)


def test_wrong_quaternion_order_is_refused(monkeypatch):
    ih, _ = harness(monkeypatch, version="2.2.0", reported_order="xyzw", spawn_yaw=0.6)
    with pytest.raises(RuntimeError, match="quaternion order"):
        ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=1, device="cpu")).read_states()
    ih, _ = harness(monkeypatch, version="2.2.0", reported_order="xyzw", spawn_yaw=0.6)
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=1, device="cpu", quat_order="xyzw"))
    q = sim.read_states().quaternion[0]
    assert np.allclose(projected_gravity(q), [0, 0, -1], atol=0.05)


def test_bad_commands_and_configs_are_refused(monkeypatch):
    ih, _ = harness(monkeypatch)
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=2, device="cpu"))
    z = np.zeros(12)
    with pytest.raises(ValueError, match="NaN"):
        sim.write_commands(np.full(12, np.nan), z, z, z, z)
    with pytest.raises(ValueError, match="kp, kd"):
        sim.write_commands(z, z, np.full(12, -1.0), z, z)
    with pytest.raises(ValueError, match="shape"):
        sim.write_commands(np.zeros((3, 12)), z, z, z, z)
    with pytest.raises(ValueError, match="shape"):
        sim.write_commands(np.zeros(11), z, z, z, z)
    with pytest.raises(ValueError):
        sim.reset(joint_pos=np.zeros(5))
    for bad in (dict(num_envs=0), dict(physics_dt=0.003), dict(physics_dt=0.05), dict(quat_order="zyxw")):
        with pytest.raises(ValueError):
            ih.IsaacConfig(**bad).validate()


def test_partial_reset_and_no_contact_sensor(monkeypatch):
    ih, rec = harness(monkeypatch, with_sensor=False)
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=2, device="cpu"))
    limp = np.zeros(12)
    sim.write_commands(limp, limp, limp, limp, limp)
    sim.step(400)
    s = sim.read_states()
    assert sim.fallen(s).all() and np.all(s.foot_force == 0)  # no sensor: zeros, documented
    sim.reset([1])
    s2 = sim.read_states()
    assert s2.base_pos[1, 2] > 0.3 and np.allclose(s2.q[1], DEFAULT_JOINT_POS, atol=1e-6)
    assert s2.base_pos[0, 2] < 0.2  # env 0 untouched
    assert np.allclose(s2.dq[1], 0.0)


def test_robot_interface_view_drives_one_env(monkeypatch):
    ih, rec = harness(monkeypatch)
    robot = ih.IsaacGo2Robot(config=ih.IsaacConfig(num_envs=1, device="cpu"))
    assert isinstance(robot, RobotInterface) and robot.control_dt == 0.002
    s = robot.reset()
    t0 = robot.now()
    robot.write_command(LowCmd(q=DEFAULT_JOINT_POS, kp=np.full(12, STAND_KP), kd=np.full(12, STAND_KD)))
    for _ in range(300):
        robot.wait_tick()
    assert robot.now() == pytest.approx(t0 + 0.6)
    s = robot.read_state()
    assert s.tick == 300 and not robot.fallen()
    assert s.base_pos[2] > 0.22 and s.base_lin_vel is not None
    with pytest.raises(ValueError):
        ih.IsaacGo2Robot(robot.sim, env_index=1)
    robot.close()
    assert rec.env.closed
    ih.close_app()
    assert rec.closed_app


def test_collection_through_the_harness(monkeypatch, tmp_path):
    from planner_runtime.dataset import DatasetWriter, load_dataset
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES
    from sim.expert import TrotExpert
    from sim.isaac_collect import CollectConfig, collect, raw_shapes

    ih, _ = harness(monkeypatch, version="3.0.0", reported_order="xyzw")
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(num_envs=2, device="cpu"))
    path = tmp_path / "d.h5"
    with DatasetWriter(path, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES), 0.02,
                       robot="go2", raw_shapes=raw_shapes()) as w:
        rep = collect(sim, w, TrotExpert, CollectConfig(episodes=2, episode_duration=0.3, seed=1))
    ds = load_dataset(path)
    assert rep["episodes"] == 2 and len(list(ds.episodes())) == 2 and len(ds) == 30
    assert np.all(ds.observations[:, 5] < -0.9)  # upright, through the builder


def test_fakes_do_not_leak_into_later_imports():
    import sys

    assert "sim.isaac_harness" not in sys.modules
    assert "isaaclab" not in sys.modules or getattr(sys.modules["isaaclab"], "__file__", None)


def test_collect_cli_end_to_end_on_the_stand_in(monkeypatch, tmp_path, capsys):
    import json

    from planner_runtime.dataset import load_dataset
    from sim.isaac_collect import main

    rec = fake.install(monkeypatch)
    out = tmp_path / "isaac.h5"
    argv = ["--out", str(out), "--num-envs", "2", "--episodes", "2", "--episode-duration", "0.2", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and report["out"] == str(out)
    assert rec.env.closed and rec.closed_app
    ds = load_dataset(out)
    assert ds.provenance["collector"] == "sim.isaac_collect" and ds.provenance["num_envs"] == 2
    assert ds.provenance["physics_dt"] == 0.002 and ds.provenance["isaaclab_version"] == "2.2.0"
    assert main(argv) == 2  # exists: needs --append or --overwrite
    assert main([*argv, "--append"]) == 0
    capsys.readouterr()
    ds2 = load_dataset(out)
    assert len(list(ds2.episodes())) == 4
    assert not (ds2.conditions[:20] == ds2.conditions[20:]).all()  # appended episodes get new seeds
