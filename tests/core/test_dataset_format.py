import json

import h5py
import numpy as np
import pytest

from planner_runtime.dataset import DatasetError, DatasetWriter, Episode, load_dataset

NAMES = dict(state_names=["a", "b"], action_names=["u"], condition_names=["c0", "c1", "c2"])


def _episode(rng, T, terminal=False):
    return Episode(rng.normal(size=(T, 2)).astype(np.float32), rng.normal(size=(T, 1)).astype(np.float32),
                   rng.normal(size=(T, 3)).astype(np.float32), rng.random(T).astype(np.float32),
                   np.zeros(T, np.float32), terminal, {"extra": rng.normal(size=(T, 4))})


def test_write_read_round_trip_any_dims(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.h5"
    eps = [_episode(rng, 5), _episode(rng, 7, terminal=True)]
    with DatasetWriter(p, **NAMES, dt=0.02, robot="toy", provenance={"seed": 1},
                       raw_shapes={"extra": (4,)}) as w:
        for e in eps:
            w.append(e)
    d = load_dataset(p)
    assert len(d) == 12 and d.dims == (2, 1, 3)
    assert d.episode_bounds().tolist() == [[0, 5], [5, 12]]
    got = list(d.episodes())
    assert np.array_equal(got[1].actions, eps[1].actions) and got[1].terminal
    assert not got[0].terminal
    assert d.provenance == {"seed": 1} and d.raw["extra"].shape == (12, 4)
    assert len(d.sha256) == 64


def test_resume_discards_interrupted_append_and_keeps_earlier(tmp_path):
    rng = np.random.default_rng(1)
    p = tmp_path / "d.h5"
    first = _episode(rng, 6)
    with DatasetWriter(p, **NAMES, dt=0.02, raw_shapes={"extra": (4,)}) as w:
        w.append(first)
    # simulate a crash mid-append: rows written, 'committed' not advanced
    with h5py.File(p, "a") as f:
        for k in ("observations", "actions", "conditions", "rewards", "costs", "terminals", "timeouts"):
            f[k].resize(9, axis=0)
    assert len(load_dataset(p)) == 6
    second = _episode(rng, 4)
    with DatasetWriter(p, **NAMES, dt=0.02, raw_shapes={"extra": (4,)}) as w:
        assert w.committed == 6
        w.append(second)
    d = load_dataset(p)
    assert len(d) == 10
    assert np.array_equal(d.observations[:6], first.observations)
    assert np.array_equal(d.observations[6:], second.observations)


def test_append_mismatch_and_bad_episodes_rejected(tmp_path):
    rng = np.random.default_rng(2)
    p = tmp_path / "d.h5"
    with DatasetWriter(p, **NAMES, dt=0.02) as w:
        w.append(_episode(rng, 3))
        bad = _episode(rng, 3)
        bad.observations[1, 0] = np.nan
        with pytest.raises(DatasetError, match="NaN"):
            w.append(bad)
        wrong = _episode(rng, 3)
        wrong.actions = np.zeros((3, 2), np.float32)
        with pytest.raises(DatasetError, match="actions has shape"):
            w.append(wrong)
    with pytest.raises(DatasetError, match="state_names differ"):
        DatasetWriter(p, state_names=["x"], action_names=["u"], condition_names=["c0", "c1", "c2"], dt=0.02)
    with pytest.raises(DatasetError, match="dt"):
        DatasetWriter(p, **NAMES, dt=0.01)
    assert len(load_dataset(p)) == 3  # the failed appends lost nothing


def test_reader_rejects_corrupt_and_mismatched_files(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        load_dataset(junk)
    rng = np.random.default_rng(3)
    p = tmp_path / "d.h5"
    with DatasetWriter(p, **NAMES, dt=0.02) as w:
        w.append(_episode(rng, 4))
    with pytest.raises(DatasetError, match="do not match expected"):
        load_dataset(p, expect_dims=(30, 12, 3))
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format_version 99"):
        load_dataset(p)
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 1
        f.attrs["state_names"] = json.dumps(["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"observations has shape \(4, 2\), expected \(N, 3\)"):
        load_dataset(p)
    with h5py.File(p, "a") as f:
        f.attrs["state_names"] = json.dumps(["a", "b"])
        del f["rewards"]
    with pytest.raises(DatasetError, match="missing dataset 'rewards'"):
        load_dataset(p)


def test_costs_are_optional(tmp_path):
    """A file written without costs reads back with zero costs and has_costs False; the
    writer refuses costs it cannot store, a resume with the other setting, and a bad dt."""
    rng = np.random.default_rng(4)
    p = tmp_path / "nocost.h5"
    ep = _episode(rng, 5)
    ep.raw = {}
    with DatasetWriter(p, **NAMES, dt=0.05, costs=False) as w:
        w.append(Episode(ep.observations, ep.actions, ep.conditions, ep.rewards, None))
        with pytest.raises(DatasetError, match="created without them"):
            w.append(Episode(ep.observations, ep.actions, ep.conditions, ep.rewards,
                             np.ones(5, np.float32)))
    with h5py.File(p, "r") as f:
        assert "costs" not in f
    d = load_dataset(p)
    assert d.has_costs is False and d.costs.shape == (5,) and not d.costs.any()
    assert np.array_equal(d.rewards, ep.rewards)
    with pytest.raises(DatasetError, match="has no costs"):
        DatasetWriter(p, **NAMES, dt=0.05)
    with_costs = tmp_path / "cost.h5"
    with DatasetWriter(with_costs, **NAMES, dt=0.05) as w:
        with pytest.raises(DatasetError, match="no costs but the file records them"):
            w.append(Episode(ep.observations, ep.actions, ep.conditions, ep.rewards, None))
    assert load_dataset(p, checksum=False).has_costs is False
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(DatasetError, match="dt must be"):
            DatasetWriter(tmp_path / "bad.h5", **NAMES, dt=bad)
