"""``planner-runtime eval --record OUT.h5`` on the Go2: the engine's own closed-loop episodes
as a dataset (real MuJoCo, the shipped engine, a real HDF5 file). Each row must pair the
state the controller planned from with the action it then executed."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("mujoco")

from planner_runtime.dataset import load_dataset  # noqa: E402
from planner_runtime.engine_file import read_manifest  # noqa: E402
from planner_runtime.engines import default_engine_path  # noqa: E402
from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES, state_reward_cost  # noqa: E402
from sim import evaluate as ev  # noqa: E402


def _eval(*argv: str) -> int:
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    return ev.run(p.parse_args(list(argv)))


def test_record_pairs_each_planned_state_with_the_action_executed_from_it(tmp_path, monkeypatch, capsys, executed_actions):
    import planner_runtime.link as pl

    sent: list[dict[int, np.ndarray]] = []  # per episode: policy tick -> the state an observation carried
    ran = executed_actions  # per episode: policy tick -> the action the executor ran

    class Link(pl.InProcessPlanner):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            sent.append({})

        def send_observation(self, obs):
            sent[-1][round(obs.stamp / 0.02)] = np.asarray(obs.state, np.float64)
            return super().send_observation(obs)

    monkeypatch.setattr(pl, "InProcessPlanner", Link)
    out = tmp_path / "onpolicy.h5"
    rc_ = _eval("--no-expert", "--episodes", "2", "--duration", "3", "--command", "0.4", "0", "0",
                "--latency", "40", "--record", str(out), "--json", "--no-progress")
    assert rc_ == 0
    report = json.loads(capsys.readouterr().out)
    ds = load_dataset(out)
    assert report["recorded"] == {"path": str(out), "episodes": 2, "samples": len(ds.observations)}
    assert list(ds.state_names) == list(STATE_NAMES) and list(ds.action_names) == list(ACTION_NAMES)
    assert list(ds.condition_names) == list(CONDITION_NAMES)
    eps = list(ds.episodes())
    # 3 s at 50 Hz, less the ticks before the first 40 ms plan arrived
    assert all(140 <= len(e) <= 150 for e in eps)
    n_checked = 0
    assert len(sent) == len(ran) == len(eps) == 2  # one stretch per episode: no gap in either
    for e, sent_e, ran_e in zip(eps, sent, ran, strict=True):
        ticks = np.round(e.raw["time"] / 0.02).astype(int)
        assert np.all(np.diff(ticks) == 1)  # consecutive policy ticks
        np.testing.assert_allclose(e.conditions, np.tile([0.4, 0.0, 0.0], (len(e), 1)))
        for k, tick in enumerate(ticks):
            np.testing.assert_allclose(e.actions[k], ran_e[tick], atol=1e-6)
            if tick in sent_e:  # the rows where the controller observed: the very state it sent
                np.testing.assert_allclose(e.observations[k], sent_e[tick], atol=1e-5)
                n_checked += 1
        for k in range(len(e) - 1):  # the reward of a row is the one of the state it led to
            r, c = state_reward_cost(e.observations[k + 1], e.raw["base_lin_vel"][k + 1], e.conditions[k])
            assert e.rewards[k] == pytest.approx(r, abs=1e-5) and e.costs[k] == pytest.approx(c, abs=1e-5)
        assert not e.terminal
    assert n_checked > 40  # an observation every other tick or so under 40 ms latency
    assert ds.provenance["engine"] == str(default_engine_path())
    # the semantics the actions were executed with: the engine's own (legged-gym, its gains)
    act = read_manifest(default_engine_path()).action
    assert ds.action_semantics["name"] == "legged-gym"
    assert (ds.action_semantics["kp"], ds.action_semantics["kd"]) == (act.kp, act.kd)


def test_record_refuses_several_engines_and_an_existing_file(tmp_path, capsys):
    eng = str(default_engine_path())
    out = tmp_path / "x.h5"
    assert _eval("--no-expert", "--engine", f"a={eng}", "--engine", f"b={eng}", "--record", str(out)) == 2
    assert "exactly one engine" in capsys.readouterr().err and not out.exists()
    out.write_bytes(b"keep")
    assert _eval("--no-expert", "--episodes", "1", "--duration", "1", "--record", str(out)) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_matrix_refuses_record(tmp_path, capsys):
    assert _eval("--matrix", str(tmp_path / "m"), "--record", str(tmp_path / "x.h5")) == 2
    assert "record" in capsys.readouterr().err
