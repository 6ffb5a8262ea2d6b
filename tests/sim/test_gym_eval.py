"""`planner-runtime eval --env ID` end to end on a Gymnasium MuJoCo environment (no downloads):
collect a dataset from a scripted policy with `eval --record`, train a tiny MPDiffuser, export
it, evaluate it in lockstep beside a random policy; and the refusals (dt, sizes, condition)."""

from __future__ import annotations

import json

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium", reason="the [sim] extra (gymnasium[mujoco]) is not installed")
torch = pytest.importorskip("torch")

from planner_runtime.cli import main  # noqa: E402
from planner_runtime.dataset import load_dataset  # noqa: E402
from planner_runtime.engine_file import read_manifest  # noqa: E402

ENV = "InvertedPendulum-v5"  # S=4, A=1 (force in [-3, 3]), dt 0.04 s
HOOKS = '''
import numpy as np

_rng = np.random.default_rng(0)


def policy(obs):
    """Balancing feedback with exploration noise."""
    return np.clip(np.array([2.0, 20.0, 1.0, 2.0]) @ obs + _rng.normal(0.0, 0.5), -3.0, 3.0)[None]


def cond(obs, step):
    return [0.0]
'''


@pytest.fixture(scope="module")
def pendulum_engine(tmp_path_factory):
    """Data from the scripted policy -> a tiny MPDiffuser (planner + dynamics) -> fused engine."""
    from export.train.config import deep_merge
    from export.train.registry import resolve_config, train_method

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gym")
    (d / "hooks.py").write_text(HOOKS)
    data = d / "pend.h5"
    assert main(["eval", "--env", ENV, "--max-steps", "80", "--policy", f"{d / 'hooks.py'}:policy",
                 "--episodes", "12", "--record", str(data), "--seed", "0", "--json"]) == 0
    tiny = {"horizon": 8, "model": {"dim": 16, "mults": [1, 2]}, "batch_size": 32, "steps": 150,
            "lr": 1e-3, "log_every": 50, "val_every": 150, "val_batches": 1, "ckpt_every": 150,
            "ema_start": 50, "components": ["planner", "dynamics"]}
    train_method("mpdiffuser", resolve_config("mpdiffuser", deep_merge({}, tiny)), data, d / "run",
                 progress=False)
    engine = d / "pend.onnx"
    assert main(["export", "--checkpoints", str(d / "run"), "--method", "mpdiffuser", "--graph", "fused",
                 "--warm-level", "3", "-o", str(engine)]) == 0
    return d, data, engine


def test_record_writes_the_env_as_a_dataset(pendulum_engine):
    _, data, _ = pendulum_engine
    ds = load_dataset(data)
    assert ds.dt == pytest.approx(0.04) and ds.robot == ENV and ds.dims == (4, 1, 1)
    assert ds.condition_names == ["none"] and ds.has_costs is False
    assert len(ds.episode_bounds()) == 12 and len(ds) <= 12 * 80
    assert np.all(np.abs(ds.actions) <= 3.0)


def test_eval_env_engine_in_lockstep(pendulum_engine, capsys):
    d, _, engine = pendulum_engine
    m = read_manifest(engine).to_dict()
    assert m["control"]["dt"] == pytest.approx(0.04) and m["control"]["dt_source"] == "dataset"
    assert m["observation"]["state_names"] == ["obs0", "obs1", "obs2", "obs3"]
    assert m["robot"]["name"] == ENV and set(m["provenance"]["checkpoints"]) == {"planner", "dynamics"}
    capsys.readouterr()
    assert main(["eval", "--env", ENV, "--max-steps", "60", "--engine", f"pend={engine}", "--policy", "random",
                 "--episodes", "3", "--seed", "0", "--diversity", "4", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dt"] == pytest.approx(0.04) and rep["episodes"] == 3
    eng, rnd = rep["results"]["pend"], rep["results"]["policy:random"]
    assert eng["episodes"] == rnd["episodes"] == 3
    assert np.isfinite([eng["return_mean"], eng["return_min"], rnd["return_mean"]]).all()
    # the engine's raw actions (before any clipping) stay inside the env's bounds: the
    # normalizer and its [-1, 1] clip map plans back into the data's action range
    assert eng["actions_out_of_bounds"] == 0.0
    assert -3.0 - 1e-4 <= eng["action_min"][0] and eng["action_max"][0] <= 3.0 + 1e-4
    # lockstep: one plan per chunk of 4 executed steps
    steps = eng["length_mean"] * 3
    assert eng["plans"] == pytest.approx(steps / 4, abs=3)
    assert eng["manifest_dt"] == pytest.approx(0.04) and eng["condition_names"] == ["none"]
    assert len(eng["consistency_per_step"]) == 4 and eng["consistency_mean"] > 0
    # a trained planner balances longer than random actions do
    assert eng["return_mean"] > rnd["return_mean"], (eng["return_mean"], rnd["return_mean"])
    div = eng["diversity"]["cold"]
    assert div["n"] == 4 and div["spread"] > 0 and div["states"] == 3


def test_eval_env_refusals(pendulum_engine, capsys):
    d, _, engine = pendulum_engine
    capsys.readouterr()
    # the env stepping at another dt than the engine's data
    assert main(["eval", "--env", ENV, "--env-kwargs", '{"frame_skip": 4}', "--engine", str(engine),
                 "--episodes", "1"]) == 2
    assert "control dt 0.04 s (manifest)" in capsys.readouterr().err
    # a condition of the wrong size; a hook of the right one works
    assert main(["eval", "--env", ENV, "--engine", str(engine), "--episodes", "1", "--condition", "1", "2"]) == 2
    assert "--condition has 2 values; the engine's condition has C=1" in capsys.readouterr().err
    assert main(["eval", "--env", ENV, "--max-steps", "8", "--engine", str(engine), "--episodes", "1",
                 "--condition-hook", f"{d / 'hooks.py'}:cond", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][engine.stem]["episodes"] == 1
    # an environment of other sizes
    assert main(["eval", "--env", "Pendulum-v1", "--engine", str(engine), "--episodes", "1"]) == 2
    assert "S=4, A=1 but Pendulum-v1 has 3 observations" in capsys.readouterr().err


def test_temperature_changes_the_spread_of_samples(pendulum_engine, capsys):
    """N plans from one state: more noise temperature, more spread between them (cold and
    warm-started); zero temperature, identical plans."""
    from planner_runtime.diversity import main as diversity_main

    _, data, engine = pendulum_engine
    capsys.readouterr()
    assert diversity_main([str(engine), "--dataset", str(data), "--states", "3", "--n", "6",
                           "--temperature", "0", "0.001", "1.0", "--json"]) == 0
    rows = {r["temperature"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rows[0.0]["spread"] < 1e-6 and rows[0.0]["pairwise_rms"] < 1e-6
    assert 0 < rows[0.001]["spread"] < rows[1.0]["spread"]
    assert rows[0.001]["spread_first_action"] < rows[1.0]["spread_first_action"]
    assert diversity_main([str(engine), "--dataset", str(data), "--states", "3", "--n", "6", "--warm",
                           "--temperature", "0.001", "1.0", "--json"]) == 0
    warm = [r["spread"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert warm[0] < warm[1]
