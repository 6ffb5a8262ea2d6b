"""`planner-runtime dataset probe`: which history explains the demonstrator's next action,
on synthetic demonstrators whose dependence is known (planner_runtime/history_probe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner_runtime.cli import main
from planner_runtime.dataset import DatasetWriter, Episode, load_dataset
from planner_runtime.history_probe import probe, probe_rows


def _write(path, kind: str, episodes: int = 24, T: int = 150, noisy: bool = False, seed: int = 0):
    """Episodes of i.i.d. states; the action is a function of: ``state`` the state, ``memory``
    the state plus 0.9 x the previous action, ``lagged`` the previous state. With ``noisy``
    every other episode's actions are pure noise, flagged in raw/noise_level."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, ["s0", "s1", "s2"], ["a0", "a1"], ["c0"], dt=0.02, robot="toy",
                       raw_shapes={"noise_level": ()} if noisy else None) as w:
        for e in range(episodes):
            s = rng.normal(size=(T, 3)).astype(np.float32)
            c = np.full((T, 1), rng.uniform(-1, 1), np.float32)
            a = np.zeros((T, 2), np.float32)
            for t in range(T):
                f = np.array([np.tanh(s[t, 0] + c[t, 0]), np.sin(s[t, 1])])
                if kind == "memory":
                    a[t] = f + (0.9 * a[t - 1] if t else 0.0)
                elif kind == "lagged":
                    a[t] = np.tanh(s[t - 1, :2]) if t else 0.0
                else:
                    a[t] = f
            level = 0.1 if noisy and e % 2 else 0.0
            if level:
                a = rng.normal(size=a.shape).astype(np.float32) * 3
            a += rng.normal(scale=0.02, size=a.shape).astype(np.float32)
            raw = {"noise_level": np.full(T, level, np.float32)} if noisy else {}
            w.append(Episode(s, a, c, np.zeros(T, np.float32), np.zeros(T, np.float32), False, raw))
    return load_dataset(path, checksum=False)


def _by(report):
    return {(s["actions"], s["states"]): s for s in report["sets"]}


def test_the_probe_finds_the_history_the_demonstrator_acted_on(tmp_path):
    mem = _by(probe(_write(tmp_path / "mem.h5", "memory"), 2, features=300, rows=3000))
    # the previous action carries what the state does not; a second one adds ~nothing, and the
    # last state only its own part of the previous action
    assert mem[(0, 0)]["r2"] < 0.6 and mem[(1, 0)]["r2"] > 0.9 and mem[(1, 0)]["gain"] > 0.3
    assert abs(mem[(2, 0)]["r2"] - mem[(1, 0)]["r2"]) < 0.03 and mem[(0, 1)]["gain"] < 0.5 * mem[(1, 0)]["gain"]
    lag = _by(probe(_write(tmp_path / "lag.h5", "lagged"), 1, features=300, rows=3000))
    assert lag[(0, 1)]["r2"] > 0.9 and lag[(1, 0)]["r2"] < 0.2  # the last state, not the last action
    markov = _by(probe(_write(tmp_path / "m.h5", "state"), 2, features=300, rows=3000))
    assert markov[(0, 0)]["r2"] > 0.9 and all(s["gain"] < 0.01 for s in markov.values())  # nothing to add
    assert set(markov) == {(0, 0), (1, 0), (2, 0), (0, 1), (0, 2)}


def test_rows_with_action_noise_are_left_out(tmp_path):
    ds = _write(tmp_path / "noisy.h5", "state", noisy=True)
    rows = probe_rows(ds, 2)
    assert len(rows) and np.all(ds.raw["noise_level"][rows] == 0)
    bounds = ds.episode_bounds()
    start = np.repeat(bounds[:, 0], bounds[:, 1] - bounds[:, 0])
    assert np.all(rows - start[rows] >= 2) and len(rows) == (len(bounds) // 2) * (150 - 2)
    r = probe(ds, 2, features=300, rows=3000)
    assert r["noise_free_only"] and _by(r)[(0, 0)]["r2"] > 0.9  # scored on the demonstrator, not the noise


def test_the_cli_prints_the_probe_and_refuses_bad_input(tmp_path, capsys):
    _write(tmp_path / "mem.h5", "memory", episodes=10)
    assert main(["dataset", "probe", str(tmp_path / "mem.h5"), "--history", "1", "--features", "200",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["history"] == 1 and _by(r)[(1, 0)]["gain"] > 0.3 and r["heldout_episodes"] == 2
    assert main(["dataset", "probe", str(tmp_path / "mem.h5"), "--history", "1", "--features", "200"]) == 0
    out = capsys.readouterr().out
    assert "| state + condition + last 1 action |" in out and "held-out R^2" in out
    assert main(["dataset", "probe", str(tmp_path / "missing.h5")]) == 2
    assert "not found" in capsys.readouterr().err
    _write(tmp_path / "one.h5", "memory", episodes=1)
    assert main(["dataset", "probe", str(tmp_path / "one.h5")]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["dataset", "probe", str(tmp_path / "mem.h5"), "--history", "0"]) == 2
    assert "history must be at least 1" in capsys.readouterr().err
    _write(tmp_path / "short.h5", "memory", episodes=3, T=5)
    assert main(["dataset", "probe", str(tmp_path / "short.h5"), "--history", "2"]) == 2
    assert "a smaller --history" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"features": 0}, {"rows": 0}])
def test_bad_sizes_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="must be positive"):
        probe(_write(tmp_path / "m.h5", "state", episodes=4, T=20), 1, **bad)
