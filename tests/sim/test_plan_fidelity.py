"""Plan fidelity (sim/plan_fidelity.py): which rows count, the numbers on planners whose
answer is known (a faithful copy of the data, a damped one), and ``eval --plan-fidelity``
end to end on a dataset the PPO policy collected (real MuJoCo, the embedded engine)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sim import evaluate as ev
from sim import plan_fidelity as pf

H, CHUNK = 8, 4


def _eval(*argv: str) -> int:
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    return ev.run(p.parse_args(list(argv)))


def test_band_rows_are_settled_on_speed_straight_clean_and_leave_a_horizon():
    n = 400  # two episodes of 200 ticks; the command changes at tick 100 of the first
    cond = np.zeros((n, 3))
    cond[:100, 0], cond[100:200, 0], cond[200:, 0] = 0.5, 0.2, 0.2
    cond[300:, 2] = 0.3  # the second episode turns from tick 300: not straight
    vx = cond[:, 0].copy()
    vx[180:184] = 0.0  # off speed
    noise = np.zeros(n)
    noise[186:189] = 0.04
    bounds = np.array([[0, 200], [200, 400]])
    rows = set(pf.band_rows(cond, vx, bounds, noise, (0.15, 0.25), H).tolist())
    settled = int(pf.SETTLED_S / 0.02)  # 75 ticks
    expect = (set(range(100 + settled, 200 - H + 1)) - set(range(180, 184)) - set(range(186, 189))
              | set(range(200 + settled, 300)))
    assert rows == expect
    # 0.5 m/s from the episode's start: settled from tick 75 until the command changes
    assert pf.band_rows(cond, vx, bounds, None, (0.45, 0.55), H).tolist() == list(range(settled, 100))


def _gait(n=600, S=10, A=6, seed=0):
    """States whose columns 2..5 are joint positions (a noisy sine gait) and actions that lead them."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.02
    states = rng.normal(0, 0.01, (n, S))
    actions = np.zeros((n, A))
    for j in range(A):
        actions[:, j] = 0.3 + 0.5 * np.sin(2 * np.pi * 2.5 * t + j) + rng.normal(0, 0.05, n)
    for j in range(4):
        states[:, 2 + j] += 0.2 * np.sin(2 * np.pi * 2.5 * t + j + 0.3)
    return states, actions


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_a_faithful_planner_scores_one_and_a_damped_one_its_damping(gain):
    states, actions = _gait()
    S = states.shape[1]
    rows = np.arange(50, 500, 7)
    mean_a = actions[rows].mean(axis=0)
    q = np.arange(2, 6)
    by_state = {states[i].tobytes(): i for i in range(len(states))}

    def plan(state, cond):  # the data's own continuation, damped about the mean by `gain`
        i = by_state[state.tobytes()]
        x = states[i:i + H].copy()
        x[:, q] = x[:, q].mean(axis=0) + gain * (x[:, q] - x[:, q].mean(axis=0))
        a = mean_a + gain * (actions[i:i + H] - mean_a)
        return np.concatenate([x, a], axis=1)

    r = pf.fidelity(plan, states, actions, lambda i: np.zeros(3), rows, rows, q, CHUNK, H)
    assert r["rows"] == len(rows) and len(r["slope"]) == CHUNK
    assert np.allclose(r["slope"], gain) and r["motion_ratio"] == pytest.approx(gain)
    assert np.allclose(r["r2"], 1.0 - (1.0 - gain) ** 2)
    # a plan of the wrong shape is refused
    with pytest.raises(ValueError, match="expected"):
        pf.fidelity(lambda s, c: np.zeros((H, S)), states, actions, lambda i: np.zeros(3), rows, rows, q, CHUNK, H)


@pytest.fixture(scope="module")
def ppo_data(tmp_path_factory):
    pytest.importorskip("mujoco")
    from planner_runtime.cli import main
    from sim.ppo_policy import policy_path

    try:
        policy_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    d = tmp_path_factory.mktemp("fidelity")
    common = ["--episodes", "1", "--episode-duration", "8", "--workers", "1", "--seed", "5",
              "--vx", "0.2", "0.2", "--vy", "0", "0", "--yaw", "0", "0", "--noise-levels", "0.0", "--no-progress"]
    assert main(["collect", "--out", str(d / "ppo.h5"), "--expert", "ppo", "--kp", "24", "--kd", "0.6", *common]) == 0
    assert main(["collect", "--out", str(d / "trot.h5"), "--expert", "trot", *common]) == 0
    return d


def test_eval_plan_fidelity_on_ppo_data_and_a_mismatched_dataset(ppo_data, capsys):
    capsys.readouterr()
    assert _eval("--plan-fidelity", str(ppo_data / "ppo.h5"), "--json") == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bands = rep["engines"]["default (go2.onnx)"]
    slow, fast = bands["0.15-0.25 m/s"], bands["0.45-0.55 m/s"]
    assert fast == {"rows": 0}  # the schedule only asks for 0.2 m/s
    assert 0 < slow["rows"] <= pf.SAMPLES and slow["rows"] <= slow["band_rows"]
    assert len(slow["slope"]) == 4 and all(np.isfinite(slow["slope"])) and slow["motion_ratio"] > 0
    # the trot expert's dataset has other action semantics: refused, naming why
    assert _eval("--plan-fidelity", str(ppo_data / "trot.h5")) == 2
    assert "actions do not mean what the dataset's do" in capsys.readouterr().err
    # closed-loop options do not apply to it
    assert _eval("--plan-fidelity", str(ppo_data / "ppo.h5"), "--model", "menagerie", "--randomize") == 2
    assert "--model, --randomize do not apply" in capsys.readouterr().err
    assert _eval("--plan-fidelity", str(ppo_data / "ppo.h5"), "--reference", "ppo") == 2
    assert "--reference does not apply (it takes --engine, --seed, --cfg-w, --threads, --json, --no-progress)" in capsys.readouterr().err
