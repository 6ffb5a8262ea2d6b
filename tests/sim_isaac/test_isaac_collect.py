"""sim.isaac_collect.collect on a batch of real MuJoCo Go2s (the Isaac Lab sim cannot run here:
see conftest.py), writing and re-reading a real dataset file."""

from __future__ import annotations

import numpy as np
import pytest

from planner_runtime.dataset import DatasetWriter, load_dataset
from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES
from robot.types import LowCmd
from sim.isaac_collect import CollectConfig, collect, load_expert, main, raw_shapes


def _run(tmp_path, batch, make_policy, cfg, name="d.h5"):
    path = tmp_path / name
    with DatasetWriter(path, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES), 0.02,
                       robot="go2", raw_shapes=raw_shapes()) as w:
        report = collect(batch, w, make_policy, cfg)
    return report, load_dataset(path)


def test_expert_episodes_are_written_in_the_dataset_format(tmp_path, mujoco_batch):
    from sim.expert import TrotExpert

    batch = mujoco_batch(2)
    cfg = CollectConfig(episodes=3, episode_duration=0.4, action_noise=0.05, seed=7)
    report, ds = _run(tmp_path, batch, TrotExpert, cfg)
    assert report["episodes"] == 3 and report["num_envs"] == 2
    eps = list(ds.episodes())
    assert len(eps) == 3 and ds.dims == (30, 12, 3)
    assert all(len(e) == 20 and not e.terminal for e in eps)  # 0.4 s at 50 Hz, time limit
    assert int(ds.timeouts.sum()) == 3 and int(ds.terminals.sum()) == 0
    assert np.all((ds.rewards >= 0) & (ds.rewards <= 1.5)) and set(np.unique(ds.costs)) <= {0.0, 1.0}
    assert set(ds.raw) == set(raw_shapes())
    # the executed target is the clean one plus noise; the label is the clean target
    from robot.go2_constants import action_to_target
    diff = ds.raw["target_executed"] - action_to_target(ds.actions)
    assert 0.02 < float(np.std(diff)) < 0.08
    # the first observation of an episode is the builder's state of the reset robot
    assert np.allclose(ds.observations[0, 6:18], 0.0, atol=1e-3)  # default pose: q_rel = 0
    assert np.allclose(ds.raw["time"][:20], np.arange(20) * 0.02, atol=1e-9)
    # the third episode ran on a robot reset after its first episode ended
    assert batch.resets[0] == [0, 1] and sorted(sum(batch.resets[1:], [])) == [0, 1]


def test_same_seed_same_data(tmp_path, mujoco_batch):
    from sim.expert import TrotExpert

    cfg = CollectConfig(episodes=2, episode_duration=0.2, action_noise=0.05, seed=3)
    _, a = _run(tmp_path, mujoco_batch(2), TrotExpert, cfg, "a.h5")
    _, b = _run(tmp_path, mujoco_batch(2), TrotExpert, cfg, "b.h5")
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.conditions, b.conditions)
    cfg.seed = 4
    _, c = _run(tmp_path, mujoco_batch(2), TrotExpert, cfg, "c.h5")
    assert not np.array_equal(a.conditions, c.conditions)


def test_falls_end_episodes_as_terminal(tmp_path, mujoco_batch):
    def limp(state, command, t):  # plain callable policy: motors off, the robot collapses
        return LowCmd.zero_torque()

    cfg = CollectConfig(episodes=1, episode_duration=5.0, action_noise=0.0)
    report, ds = _run(tmp_path, mujoco_batch(1), lambda: limp, cfg)
    e = next(ds.episodes())
    assert e.terminal and len(e) < 250 and report["falls"] == 1
    assert bool(ds.terminals[-1]) and not bool(ds.timeouts[-1])


def test_bad_config_and_expert_spec_are_refused(tmp_path):
    with pytest.raises(ValueError):
        CollectConfig(episodes=0).validate()
    with pytest.raises(ValueError):
        CollectConfig(action_noise=-1).validate()
    with pytest.raises(ValueError, match="module:attr"):
        load_expert("sim.expert")
    assert load_expert("sim.expert:TrotExpert").__name__ == "TrotExpert"
    assert main(["--out", str(tmp_path / "x.h5"), "--expert", "nope"]) == 2
