"""The base-velocity estimator: features, history windows, the .npz format, numpy inference
against torch, and a small training run on a dataset in the project's format whose
privileged velocity is a known function of the inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot import go2_constants as go2
from robot import velocity_estimator as ve
from robot.types import LowState


def random_state(rng) -> LowState:
    q = rng.normal(size=4)
    return LowState(quaternion=q / np.linalg.norm(q), gyroscope=rng.normal(size=3),
                    accelerometer=rng.normal(size=3), q=go2.DEFAULT_JOINT_POS + rng.normal(0, 0.1, 12),
                    dq=rng.normal(size=12))


def test_batch_features_match_per_step_features():
    rng = np.random.default_rng(0)
    states = [random_state(rng) for _ in range(5)]
    raw = {k: np.array([getattr(s, k) for s in states]) for k in
           ("quaternion", "gyroscope", "accelerometer", "q", "dq")}
    np.testing.assert_allclose(ve.features_from_raw(raw), np.array([ve.step_features(s) for s in states]),
                               atol=1e-12)
    with pytest.raises(ValueError, match="accelerometer"):
        ve.features_from_raw({k: v for k, v in raw.items() if k != "accelerometer"})


def test_history_windows_respect_episode_starts():
    f = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    w = ve.history_windows(f, np.array([[0, 4], [4, 10]]), history=3)
    np.testing.assert_array_equal(w[5], [5, 5, 4, 4, 4, 4])  # newest first, padded at start 4
    np.testing.assert_array_equal(w[2], [2, 2, 1, 1, 0, 0])


def tiny_estimator(tmp_path, history=2):
    rng = np.random.default_rng(1)
    d = history * len(ve.FEATURE_NAMES)
    weights = [(rng.normal(0, 0.1, (d, 8)), rng.normal(0, 0.1, 8)), (rng.normal(0, 0.1, (8, 3)), np.zeros(3))]
    path = ve.save(tmp_path / "v.npz", weights, np.zeros(d), np.ones(d), np.zeros(3), np.ones(3),
                   history=history, dt=0.02, activation="tanh")
    return path, weights


def test_npz_round_trip_and_streaming_update(tmp_path):
    path, weights = tiny_estimator(tmp_path)
    est = ve.VelocityEstimator(path)
    rng = np.random.default_rng(2)
    s1, s2 = random_state(rng), random_state(rng)
    v1 = est.update(s1)
    v2 = est.update(s2)
    f1, f2 = ve.step_features(s1), ve.step_features(s2)
    W0, b0 = (np.asarray(a, np.float32).astype(np.float64) for a in weights[0])
    W1, b1 = (np.asarray(a, np.float32).astype(np.float64) for a in weights[1])
    manual = lambda x: np.tanh(x @ W0 + b0) @ W1 + b1  # noqa: E731
    np.testing.assert_allclose(v1, manual(np.concatenate([f1, f1])), atol=1e-9)
    np.testing.assert_allclose(v2, manual(np.concatenate([f2, f1])), atol=1e-9)


def test_bad_estimator_files_are_refused(tmp_path):
    path, _ = tiny_estimator(tmp_path)
    with np.load(path) as z:
        arrays = dict(z)
    spec = json.loads(str(arrays["spec"]))
    spec["features"] = spec["features"][::-1]
    np.savez(tmp_path / "bad.npz", **{**arrays, "spec": np.array(json.dumps(spec))})
    with pytest.raises(ValueError, match="features differ"):
        ve.VelocityEstimator(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        ve.VelocityEstimator(tmp_path / "missing.npz")


def write_dataset(path, n_eps=6, T=300, seed=0):
    """A dataset in the project format; raw/base_lin_vel = a fixed linear map of the inputs."""
    from planner_runtime.dataset import DatasetWriter, Episode

    rng = np.random.default_rng(seed)
    M = rng.normal(0, 0.05, (len(ve.FEATURE_NAMES), 3))
    shapes = {"quaternion": (4,), "gyroscope": (3,), "accelerometer": (3,), "q": (12,), "dq": (12,),
              "base_lin_vel": (3,)}
    w = DatasetWriter(path, state_names=[f"s{i}" for i in range(30)], action_names=[f"a{i}" for i in range(12)],
                      condition_names=["vx", "vy", "yaw"], dt=0.02, robot="go2", raw_shapes=shapes)
    with w:
        for _ in range(n_eps):
            states = [random_state(rng) for _ in range(T)]
            raw = {k: np.array([getattr(s, k) for s in states]) for k in list(shapes)[:-1]}
            raw["base_lin_vel"] = ve.features_from_raw(raw) @ M
            w.append(Episode(np.zeros((T, 30)), np.zeros((T, 12)), np.zeros((T, 3)), np.zeros(T),
                             np.zeros(T), False, raw))
    return path


def test_training_learns_a_known_map(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from export.train_velocity import main

    data = write_dataset(tmp_path / "d.h5")
    out = tmp_path / "est.npz"
    assert main(["--data", str(data), "--out", str(out), "--epochs", "8", "--history", "1",
                 "--hidden", "32", "--batch", "128", "--lr", "3e-3"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    est = ve.VelocityEstimator(out)
    m = est.spec["metrics"]
    assert m["val_rmse"] == printed["val_rmse"]
    assert m["val_rmse"]["xy"] < 0.5 * np.mean([m["val_std"]["x"], m["val_std"]["y"]])
    assert printed["numpy_vs_torch_max_abs"] < 1e-4


def test_training_on_several_datasets_numbers_their_episodes_together(tmp_path, capsys):
    """``--data A B``: two gaits in two files (datasets of different action semantics cannot
    be one file) train one estimator; their episodes are split together, their dt must agree."""
    pytest.importorskip("torch")
    from export.train_velocity import build_arrays_from, main
    from planner_runtime.dataset import DatasetWriter, Episode

    a, b = write_dataset(tmp_path / "a.h5", n_eps=4, T=50, seed=1), write_dataset(tmp_path / "b.h5", n_eps=3, T=50, seed=2)
    x, y, ep, n_eps, dt, shas = build_arrays_from([str(a), str(b)], 2)
    assert n_eps == 7 and len(x) == len(y) == 350 and dt == pytest.approx(0.02)
    assert sorted(set(ep.tolist())) == list(range(7)) and np.all(ep[200:] >= 4)  # b's episodes after a's
    assert isinstance(shas, list) and len(shas) == 2 and shas[0] != shas[1]
    out = tmp_path / "ab.npz"
    assert main(["--data", str(a), str(b), "--out", str(out), "--epochs", "1", "--history", "2", "--hidden", "8"]) == 0
    spec = ve.VelocityEstimator(out).spec
    assert spec["data"] == [str(a), str(b)] and spec["metrics"]["episodes"] == 7
    slow = tmp_path / "slow.h5"
    with DatasetWriter(slow, state_names=[f"s{i}" for i in range(30)], action_names=[f"a{i}" for i in range(12)],
                       condition_names=["vx", "vy", "yaw"], dt=0.01, robot="go2",
                       raw_shapes={k: (n,) for k, n in (("quaternion", 4), ("gyroscope", 3), ("accelerometer", 3),
                                                          ("q", 12), ("dq", 12), ("base_lin_vel", 3))}) as w:
        raw = {"quaternion": np.tile([1.0, 0, 0, 0], (5, 1)), "gyroscope": np.zeros((5, 3)),
               "accelerometer": np.zeros((5, 3)), "q": np.zeros((5, 12)), "dq": np.zeros((5, 12)),
               "base_lin_vel": np.zeros((5, 3))}
        w.append(Episode(np.zeros((5, 30)), np.zeros((5, 12)), np.zeros((5, 3)), np.zeros(5), np.zeros(5), False, raw))
    capsys.readouterr()
    assert main(["--data", str(a), str(slow), "--out", str(tmp_path / "x.npz")]) == 2
    assert "different dt" in capsys.readouterr().err


def test_the_shipped_estimator_follows_both_gaits_an_engine_walks_with(tmp_path):
    """The shipped weights were trained on the trot expert's and the PPO policy's data
    (docs/controller.md): on new episodes of each in MuJoCo (seeds no training used), vx/vy
    RMS error under 0.05 and 0.08 m/s. Trained on the trot alone it was 0.13 m/s on the PPO
    policy's gait, the gait the embedded engine imitates."""
    pytest.importorskip("mujoco")
    import subprocess
    import sys

    from export.train_velocity import build_arrays

    est = ve.VelocityEstimator(Path(ve.__file__).with_name("assets") / "velocity_estimator.npz")
    assert len(est.spec["data"]) == 2  # both gaits
    for expert, limit, extra in (("trot", 0.05, []), ("ppo", 0.08, ["--kp", "24", "--kd", "0.6"])):
        data = tmp_path / f"{expert}.h5"
        r = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "collect", "--out", str(data), "--expert", expert,
                            "--model", "project", "--episodes", "2", "--seed", "4242", "--workers", "1",
                            "--no-progress", *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        x, y, *_ = build_arrays(str(data), est.history)
        rmse = float(np.sqrt(np.mean((est.predict(x)[:, :2] - y[:, :2]) ** 2)))
        assert rmse < limit, (expert, rmse)


def test_training_refuses_a_dataset_without_privileged_velocity(tmp_path, capsys):
    pytest.importorskip("torch")
    from export.train_velocity import main
    from planner_runtime.dataset import DatasetWriter, Episode

    p = tmp_path / "novel.h5"
    with DatasetWriter(p, state_names=[f"s{i}" for i in range(30)], action_names=[f"a{i}" for i in range(12)],
                       condition_names=["vx", "vy", "yaw"], dt=0.02, robot="go2",
                       raw_shapes={"q": (12,)}) as w:
        w.append(Episode(np.zeros((5, 30)), np.zeros((5, 12)), np.zeros((5, 3)), np.zeros(5),
                         np.zeros(5), False, {"q": np.zeros((5, 12))}))
    assert main(["--data", str(p), "--out", str(tmp_path / "x.npz")]) == 2
    assert "base_lin_vel" in capsys.readouterr().err
