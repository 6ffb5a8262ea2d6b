"""``planner-runtime collect --branch-from ENGINE``: recovery demonstrations from the states an
engine visits (real MuJoCo, the shipped engine, the PPO policy, a real HDF5 file). Each
branch must start from the engine-driven simulator at its moment, continue the engine's
last executed action, and carry the PPO policy's own clean labels."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("mujoco")

from planner_runtime.dataset import load_dataset  # noqa: E402
from planner_runtime.engine_file import read_manifest  # noqa: E402
from planner_runtime.engines import default_engine_path  # noqa: E402
from sim import collect  # noqa: E402


def _engine_with_action(path, **action) -> str:
    """The shipped engine with its manifest's action block changed (what export --kp/--kd
    writes for the gains); the networks are the same."""
    import onnx

    from planner_runtime.engine_file import attach_manifest

    model = onnx.load(str(default_engine_path()))
    m = read_manifest(default_engine_path()).to_dict()
    m["action"].update(action)
    attach_manifest(model, m)
    onnx.save(model, str(path))
    return str(path)


def _collect(*argv: str) -> int:
    p = argparse.ArgumentParser()
    collect.add_arguments(p)
    return collect.run(p.parse_args(list(argv)))


def test_branches_start_at_the_engines_states_and_continue_its_last_action(tmp_path, monkeypatch, capsys, executed_actions):
    from robot.go2_constants import clamp_target
    from robot.observation import build_state
    from sim.mujoco_harness import MujocoGo2
    from sim.ppo_policy import SEMANTICS, PPOPolicy

    clones: list[tuple[float, object]] = []  # (robot time, LowState) of the driving robot at each copy
    took_over: list[np.ndarray] = []  # the previous action each branch's expert started from
    ran = executed_actions  # per engine episode: policy tick -> executed action

    clone = MujocoGo2.clone

    def spy_clone(self):
        clones.append((self.now(), self.read_state()))
        return clone(self)

    take_over = PPOPolicy.take_over

    def spy_take_over(self, state, last_action):
        took_over.append(np.array(last_action))
        return take_over(self, state, last_action)

    monkeypatch.setattr(MujocoGo2, "clone", spy_clone)
    monkeypatch.setattr(PPOPolicy, "take_over", spy_take_over)
    out = tmp_path / "branches.h5"
    # the engine executed at stiffer gains than the collection's (export --kp 24 --kd 0.6)
    engine = _engine_with_action(tmp_path / "stiff.onnx", kp=24.0, kd=0.6)
    assert _collect("--out", str(out), "--expert", "ppo", "--branch-from", engine,
                    "--episodes", "2", "--episode-duration", "3", "--branch-every", "1.0", "--branch-ticks", "15",
                    "--noise-levels", "0", "--no-pushes", "--workers", "1", "--json", "--no-progress") == 0
    report = json.loads(capsys.readouterr().out)
    ds = load_dataset(out)
    eps = list(ds.episodes())
    # 3 s of planning sampled from the end of its first tick, a branch after every 1 s of it:
    # at 1 s and 2 s, 2 per engine episode, each 15 ticks (none fell)
    assert report["engine_episodes"] == 2 and report["episodes"] == len(eps) == len(clones) == 4
    assert all(len(e) == 15 and not e.terminal for e in eps)
    assert ds.action_semantics == SEMANTICS.as_dict()
    # the engine drove at its own PD gains, recorded with the run; every branch ran at the
    # collection's (SEMANTICS: kp 20, kd 0.5), which the file's semantics say
    assert ds.provenance["runs"][-1]["config"]["branch_engine_gains"] == {"kp": 24.0, "kd": 0.6}
    for k, (e, (t, s0), prev) in enumerate(zip(eps, clones, took_over, strict=True)):
        assert e.raw["time"][0] == pytest.approx(t, abs=1e-6)  # the branch runs on from that moment
        np.testing.assert_allclose(np.diff(e.raw["time"]), 0.02, atol=1e-5)
        np.testing.assert_allclose(e.observations[0], build_state(s0), atol=1e-6)
        # the expert's previous action is what the engine executed in the tick before
        np.testing.assert_allclose(prev, ran[k // 2][round(t / 0.02) - 1], atol=1e-9)
        # the label is the PPO policy's own clean target from there
        ref = PPOPolicy()
        take_over(ref, s0, prev)  # the unspied method
        target, _ = ref.act(s0, e.conditions[0].astype(np.float64), t)
        np.testing.assert_allclose(e.actions[0], SEMANTICS.to_action(clamp_target(target)), atol=1e-5)
        assert np.all(e.conditions == e.conditions[0])  # the command of the branch moment, held
    assert clones[1][0] - clones[0][0] == pytest.approx(1.0, abs=1e-6)  # --branch-every apart


def test_branch_collection_refuses_what_it_cannot_do(tmp_path, capsys):
    eng = str(default_engine_path())
    out = tmp_path / "x.h5"
    assert _collect("--out", str(out), "--branch-from", eng, "--episodes", "1") == 2  # trot expert
    assert "needs --expert ppo" in capsys.readouterr().err
    assert _collect("--out", str(out), "--expert", "ppo", "--branch-from", str(tmp_path / "none.onnx"),
                    "--episodes", "1") == 2
    assert "not found" in capsys.readouterr().err
    assert _collect("--out", str(out), "--expert", "ppo", "--branch-from", eng, "--branch-ticks", "0",
                    "--episodes", "1") == 2
    assert "--branch-ticks" in capsys.readouterr().err
    # an engine whose actions mean something else (another scale): the expert cannot continue them
    other = _engine_with_action(tmp_path / "scale.onnx", scale=[0.25] * 12)
    assert _collect("--out", str(out), "--expert", "ppo", "--branch-from", other, "--episodes", "1") == 2
    assert "could not continue its actions" in capsys.readouterr().err
    assert not out.exists()
