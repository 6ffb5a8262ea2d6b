"""`planner-runtime dataset import` / `info`: D4RL-style flat arrays and Minari HDF5 -> the format."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from planner_runtime.cli import main
from planner_runtime.dataset import DatasetError, load_dataset
from planner_runtime.dataset_import import import_dataset


def _flat(rng, lengths=(5, 4, 3), terminal=(True, False, False), tail=2, S=3, A=2):
    """Episodes of the given lengths flagged as D4RL does, then ``tail`` unflagged samples."""
    n = sum(lengths) + tail
    obs = rng.normal(size=(n, S)).astype(np.float32)
    obs[:, 0] = np.arange(n)  # sample index, to check the order
    term, tout = np.zeros(n, bool), np.zeros(n, bool)
    end = 0
    for T, is_term in zip(lengths, terminal, strict=True):
        end += T
        (term if is_term else tout)[end - 1] = True
    return {"observations": obs, "actions": rng.normal(size=(n, A)).astype(np.float32),
            "rewards": rng.normal(size=(n, 1)).astype(np.float32),  # [N, 1] as some files store it
            "terminals": term, "timeouts": tout,
            "next_observations": obs + 1}  # ignored


def test_import_npz_without_conditions_or_costs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = _flat(rng)
    src = tmp_path / "d4rl.npz"
    np.savez(src, **arrays)
    out = tmp_path / "pend.h5"
    assert main(["dataset", "import", str(src), "-o", str(out), "--dt", "0.05", "--robot", "pendulum",
                 "--state-names", "th,thdot,x", "--action-names", "tau,f", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["episodes"] == 4 and rep["samples"] == 14 and rep["tail_samples"] == 2
    assert rep["terminal_episodes"] == 1 and rep["costs"] is False
    ds = load_dataset(out)
    assert ds.dt == 0.05 and ds.robot == "pendulum" and ds.has_costs is False
    assert ds.state_names == ["th", "thdot", "x"] and ds.action_names == ["tau", "f"]
    assert ds.condition_names == ["none"] and not ds.conditions.any() and ds.conditions.shape == (14, 1)
    assert ds.episode_bounds().tolist() == [[0, 5], [5, 9], [9, 12], [12, 14]]
    assert ds.terminals.tolist().count(True) == 1 and bool(ds.terminals[4])
    assert bool(ds.timeouts[13])  # the tail was closed as a timeout
    np.testing.assert_array_equal(ds.observations[:, 0], np.arange(14))
    np.testing.assert_allclose(ds.rewards, arrays["rewards"][:, 0])
    # info reads it back
    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "system      pendulum  dt 0.05 s  S=3 A=2 C=1  costs no" in text and "states      th, thdot, x" in text
    # the tail dropped instead
    ds2 = load_dataset(import_dataset(src, tmp_path / "drop.h5", dt=0.05, robot="p", tail="drop")["out"])
    assert len(ds2) == 12 and ds2.state_names == ["obs0", "obs1", "obs2"]


def test_import_hdf5_with_conditions_costs_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    arrays = _flat(rng, tail=0)
    del arrays["timeouts"]  # older D4RL files: only failures (and the end of the data) end episodes
    arrays["conditions"] = rng.normal(size=(12, 2)).astype(np.float32)
    arrays["costs"] = (rng.random(12) > 0.5).astype(np.float32)
    src = tmp_path / "flat.hdf5"
    with h5py.File(src, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        f["infos/qpos"] = np.zeros((12, 3))  # ignored
    rep = import_dataset(src, tmp_path / "o.h5", dt=0.1, robot="sys", condition_names=["g0", "g1"])
    assert rep["episodes"] == 2 and rep["timeouts_given"] is False  # [0,5) failure, [5,12) the rest
    ds = load_dataset(tmp_path / "o.h5")
    assert ds.has_costs and np.array_equal(ds.costs, arrays["costs"])
    assert ds.condition_names == ["g0", "g1"] and np.array_equal(ds.conditions, arrays["conditions"])
    with pytest.raises(DatasetError, match="exists"):
        import_dataset(src, tmp_path / "o.h5", dt=0.1, robot="sys")
    with pytest.raises(DatasetError, match="1 state names given for 3 columns"):
        import_dataset(src, tmp_path / "x.h5", dt=0.1, robot="sys", state_names=["a"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, observations=arrays["observations"], actions=arrays["actions"][:5],
             rewards=arrays["rewards"], terminals=arrays["terminals"])
    with pytest.raises(DatasetError, match="actions has 5 rows, observations 12"):
        import_dataset(bad, tmp_path / "y.h5", dt=0.1, robot="sys")
    nan = dict(arrays)
    nan["observations"] = arrays["observations"].copy()
    nan["observations"][7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(DatasetError, match="episode 1 .*NaN"):
        import_dataset(tmp_path / "nan.npz", tmp_path / "z.h5", dt=0.1, robot="sys")
    assert main(["dataset", "import", str(bad), "-o", str(tmp_path / "w.h5"), "--dt", "0",
                 "--robot", "s"]) == 2
    assert "error:" in capsys.readouterr().err


def test_import_minari_hdf5(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "pointmaze-v0"
    (root / "data").mkdir(parents=True)
    lengths, terms = (6, 4), (False, True)
    with h5py.File(root / "data" / "main_data.hdf5", "w") as f:
        f.attrs["total_episodes"] = 2
        for i, (T, term) in enumerate(zip(lengths, terms, strict=True)):
            g = f.create_group(f"episode_{i}")
            g["observations"] = rng.normal(size=(T + 1, 4))
            g["actions"] = rng.normal(size=(T, 2))
            g["rewards"] = rng.normal(size=T)
            t = np.zeros(T, bool)
            t[-1] = term
            g["terminations"] = t
            g["truncations"] = ~t & (np.arange(T) == T - 1)
    rep = import_dataset(root, tmp_path / "m.h5", dt=0.02, robot="pointmaze")
    assert rep["source_format"] == "minari" and rep["episodes"] == 2 and rep["samples"] == 10
    ds = load_dataset(tmp_path / "m.h5")
    assert ds.episode_bounds().tolist() == [[0, 6], [6, 10]]
    assert not ds.terminals[5] and ds.timeouts[5] and ds.terminals[9]
    with h5py.File(root / "data" / "main_data.hdf5", "r") as f:
        np.testing.assert_allclose(ds.observations[6:], f["episode_1/observations"][:4], rtol=1e-6)
