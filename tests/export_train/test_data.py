"""Windows, split and normalizer of export/data.py on tiny files of arbitrary dimensions."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import Normalizer, costs_to_go, make_windows, returns_to_go
from planner_runtime.dataset import DatasetWriter, Episode, load_dataset, split_episodes

from .conftest import write_random_dataset


def test_window_layout_and_padding(tmp_path):
    ds = load_dataset(write_random_dataset(tmp_path / "d.h5", S=3, A=2, C=2, episodes=(7, 5, 9, 6)))
    wd = make_windows(ds, horizon=4, normalizer="identity", val_fraction=0.0)
    assert (wd.S, wd.A, wd.C, wd.H) == (3, 2, 2, 4)
    assert len(wd.train) == 27  # every sample starts a window
    b = wd.train.batch(np.arange(len(wd.train)))
    assert b["x0"].shape == (27, 3) and b["traj"].shape == (27, 4, 5) and b["cond"].shape == (27, 2)
    # first episode (samples 0..6): window at t = 2 -> x0 = x_2, rows [x_{3+i}, u_{2+i}]
    obs, act = ds.observations, ds.actions
    np.testing.assert_allclose(b["x0"][2], obs[2], atol=1e-6)
    np.testing.assert_allclose(b["traj"][2, :, :3], obs[3:7], atol=1e-6)
    np.testing.assert_allclose(b["traj"][2, :, 3:], act[2:6], atol=1e-6)
    # window at the last sample (t = 6) is padded by repeating the episode's last row
    np.testing.assert_allclose(b["traj"][6, :, :3], np.repeat(obs[6:7], 4, 0), atol=1e-6)
    np.testing.assert_allclose(b["traj"][6, :, 3:], np.repeat(act[6:7], 4, 0), atol=1e-6)
    np.testing.assert_array_equal(b["valid"][6], [1, 0, 0, 0])
    np.testing.assert_array_equal(b["rewards"][6], [1, 0, 0, 0])
    # no window reads across an episode boundary: windows of episode 2 only see its samples
    t0 = 7  # episode 2 starts at sample 7
    assert np.all(b["traj"][t0 + 4, :, 0] >= 7) and np.all(b["traj"][t0 + 4, :, 0] < 12)


def test_split_by_episode_and_normalizer_on_train_only(tmp_path):
    ds = load_dataset(write_random_dataset(tmp_path / "d.h5", episodes=(10, 10, 10, 10, 10)))
    tr, va = split_episodes(5, 0.4, seed=3)
    assert len(va) == 2 and set(tr).isdisjoint(va) and len(tr) + len(va) == 5
    wd = make_windows(ds, horizon=3, normalizer="minmax", val_fraction=0.4, seed=3)
    assert len(wd.train) == 30 and len(wd.val) == 20
    bounds = ds.episode_bounds()
    train_rows = np.concatenate([np.concatenate([ds.observations[s:e], ds.actions[s:e]], 1)
                                 for s, e in bounds[tr]])
    ref = Normalizer.fit(train_rows, "minmax")
    np.testing.assert_allclose(wd.norms.traj.shift, ref.shift)
    np.testing.assert_allclose(wd.norms.traj.scale, ref.scale)
    z = wd.train.batch(np.arange(len(wd.train)))["traj"]
    assert z.min() >= -1 - 1e-5 and z.max() <= 1 + 1e-5


def test_normalizer_kinds_roundtrip_and_constant_dims():
    x = np.random.default_rng(0).normal(3, 2, (500, 4)).astype(np.float32)
    x[:, 2] = 5.0  # constant column must stay finite
    for kind in ("std", "minmax", "identity"):
        n = Normalizer.fit(x, kind)
        z = n.normalize(x)
        assert np.all(np.isfinite(z))
        np.testing.assert_allclose(n.unnormalize(z), x, atol=1e-4)
        m = Normalizer.from_dict(n.to_dict())
        np.testing.assert_array_equal(m.shift, n.shift)
        # the constant column is recorded (its scale 1 is a placeholder, not its spread)
        assert m.constant == n.constant == ((2,) if kind != "identity" else ())
    mm = Normalizer.fit(x, "minmax")
    assert mm.slice(1, 4).constant == (1,) and mm.slice(0, 2).constant == () and mm.slice(2, 3).constant == (0,)
    assert "constant" not in Normalizer.fit(x[:, :2], "minmax").to_dict()  # older files stay the same
    assert Normalizer.fit(x, "std").clip is None and Normalizer.fit(x, "minmax").clip == 1.0
    with pytest.raises(ValueError, match="unknown normalizer"):
        Normalizer.fit(x, "cdf")


def test_returns_to_go_and_condition_extra(tmp_path):
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 1.0, 1.0]), 0.5), [1.75, 1.5, 1.0])
    ds = load_dataset(write_random_dataset(tmp_path / "d.h5", C=2, episodes=(6, 4)))
    wd = make_windows(ds, horizon=2, normalizer="identity", val_fraction=0.0, cond_extras=("return",),
                      gamma=1.0)
    assert wd.C == 3
    c = wd.train.batch(np.arange(len(wd.train)))["cond"][:, 2]
    np.testing.assert_allclose(c[0], 1.0)  # largest episode-start return scales to 1
    np.testing.assert_allclose(c[6], 4 / 6, rtol=1e-5)


def test_history_condition_extras_are_the_previous_tick(tmp_path):
    """prev_state / prev_action append the previous sample's state and action (the first
    sample of an episode repeats its own), never reading across an episode boundary; a
    return extra after them still finds its own column."""
    ds = load_dataset(write_random_dataset(tmp_path / "d.h5", S=3, A=2, C=2, episodes=(6, 4)))
    wd = make_windows(ds, horizon=2, normalizer="identity", val_fraction=0.0,
                      cond_extras=("prev_state", "prev_action", "return"), gamma=1.0)
    assert wd.C == 2 + 3 + 2 + 1
    c = wd.train.batch(np.arange(len(wd.train)))["cond"]
    obs, act = ds.observations, ds.actions
    np.testing.assert_allclose(c[:, :2], ds.conditions, atol=1e-6)
    for t in range(10):
        prev = t if t in (0, 6) else t - 1  # episodes start at samples 0 and 6
        np.testing.assert_allclose(c[t, 2:5], obs[prev], atol=1e-6)
        np.testing.assert_allclose(c[t, 5:7], act[prev], atol=1e-6)
    np.testing.assert_allclose(c[0, 7], 1.0)  # the return column, scaled as without history


def _cost_dataset(path, costs_per_episode, with_costs=True):
    with DatasetWriter(path, ["s0", "s1"], ["a0"], ["c0"], dt=0.1, robot="test", costs=with_costs) as w:
        for e, c in enumerate(costs_per_episode):
            T = len(c)
            w.append(Episode(np.full((T, 2), e, np.float32), np.full((T, 1), -e, np.float32),
                             np.zeros((T, 1), np.float32), np.ones(T, np.float32),
                             np.asarray(c, np.float32) if with_costs else None, terminal=e == 1))
    return path


def test_cost_to_go_condition_extra_is_the_plans_discounted_cost(tmp_path):
    """cost_to_go: the discounted cost over the next H samples (the plan's rows), the last
    cost repeated past the episode's end, never reading the next episode; before a history
    extra its own column; a dataset without costs is refused by name."""
    np.testing.assert_allclose(costs_to_go(np.array([0.0, 1.0, 1.0, 0.0]), 0.5, 2), [0.5, 1.5, 1.0, 0.0])
    np.testing.assert_allclose(costs_to_go(np.array([0.0, 1.0]), 1.0, 3), [2.0, 3.0])  # a fall stays tilted
    with pytest.raises(ValueError, match="horizon"):
        costs_to_go(np.zeros(3), 1.0, 0)
    eps = ([0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [1, 0, 0, 0])
    ds = load_dataset(_cost_dataset(tmp_path / "c.h5", eps))
    wd = make_windows(ds, horizon=3, normalizer="identity", val_fraction=0.0,
                      cond_extras=("cost_to_go", "prev_action"), gamma=1.0)
    assert wd.C == 1 + 1 + 1 and wd.provenance()["condition_names"] == ["c0", "cost_to_go", "prev_a0"]
    b = wd.train.batch(np.arange(len(wd.train)))
    got = b["cond"][:, 1]
    want = np.concatenate([costs_to_go(np.asarray(c, np.float32), 1.0, 3) for c in eps])
    np.testing.assert_allclose(got, want)
    # spot values by hand: episode 0 at t=1 sees costs [0, 1, 1]; episode 2 (timeout, last 0) ends at 0
    assert got[1] == 2.0 and got[-1] == 0.0
    assert got[6 + 3] == 3.0  # episode 1 (samples 6..10, a fall) at t=3: [1, 1, then its last 1 repeated]
    # the windows' own cost rows are the ones the condition sums
    np.testing.assert_allclose(b["costs"][1], [0, 1, 1])
    with pytest.raises(ValueError, match="needs per-step costs"):
        make_windows(load_dataset(_cost_dataset(tmp_path / "n.h5", eps, with_costs=False)), horizon=3,
                     cond_extras=("cost_to_go",))


def test_fall_cut_drops_windows_before_a_fall_only(tmp_path):
    """Windows starting in the last fall_cut samples of an episode that ended in a fall are
    not trained on; episodes that timed out keep all; the normalizers see every sample."""
    ds = load_dataset(write_random_dataset(tmp_path / "d.h5", episodes=(10, 8, 6), terminal=(1,)))
    full = make_windows(ds, horizon=3, normalizer="std", val_fraction=0.0)
    cut = make_windows(ds, horizon=3, normalizer="std", val_fraction=0.0, fall_cut=5)
    assert len(full.train) == 24 and len(cut.train) == 24 - 5
    x0 = cut.norms.traj.unnormalize(np.concatenate(
        [cut.train.batch(np.arange(len(cut.train)))["x0"], np.zeros((len(cut.train), 2), np.float32)], 1))[:, 0]
    starts = np.round(x0).astype(int)
    assert set(range(10, 13)) <= set(starts) and not set(range(13, 18)) & set(starts)  # episode 2: 10..17
    assert set(range(18, 24)) <= set(starts)  # the timeout episode keeps its end
    np.testing.assert_allclose(cut.norms.traj.shift, full.norms.traj.shift)
    with pytest.raises(ValueError, match="fall_cut"):
        make_windows(ds, horizon=3, fall_cut=-1)
