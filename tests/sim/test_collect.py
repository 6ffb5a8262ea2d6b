"""`planner-runtime collect` end to end on tiny runs: written, read back, appended, resumed,
and wrong files refused with a clear message."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from planner_runtime.cli import main
from planner_runtime.dataset import DatasetError, DatasetWriter, load_dataset
from robot.go2_constants import DEFAULT_JOINT_POS, target_to_action
from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES, build_state
from robot.types import LowState

TINY = ["--episode-duration", "1.0", "--no-progress", "--json"]


def _collect(path, capsys, *extra: str) -> tuple[int, dict | None]:
    rc = main(["collect", "--out", str(path), *TINY, *extra])
    out = capsys.readouterr().out.strip()
    return rc, (json.loads(out) if rc == 0 else None)


def test_collect_writes_a_valid_dataset(tmp_path, capsys):
    path = tmp_path / "d.h5"
    rc, rep = _collect(path, capsys, "--episodes", "2", "--workers", "2", "--seed", "7")
    assert rc == 0 and rep["episodes"] == 2 and rep["samples"] == 100 and rep["falls"] == 0
    ds = load_dataset(path, expect_dims=(30, 12, 3))
    assert len(ds) == 100 and len(ds.episode_bounds()) == 2 and ds.timeouts.sum() == 2
    assert ds.state_names == list(STATE_NAMES) and ds.action_names == list(ACTION_NAMES)
    assert ds.condition_names == list(CONDITION_NAMES) and ds.dt == pytest.approx(0.02)
    # Observations come from the observation builder applied to the raw robot fields.
    i = 37
    s = LowState(quaternion=ds.raw["quaternion"][i].astype(float), gyroscope=ds.raw["gyroscope"][i].astype(float),
                 q=ds.raw["q"][i].astype(float), dq=ds.raw["dq"][i].astype(float))
    np.testing.assert_allclose(ds.observations[i], build_state(s), atol=1e-5)
    # Labels are the clean targets; the executed (noisy) target differs by the action noise.
    executed = target_to_action(ds.raw["target_executed"].astype(float))
    diff = (executed - ds.actions) * 0.25
    assert 0.03 < diff.std() < 0.07
    c = ds.conditions
    assert np.all((c[:, 0] >= -0.3) & (c[:, 0] <= 0.8) & (np.abs(c[:, 1]) <= 0.2) & (np.abs(c[:, 2]) <= 0.8))
    assert np.all((ds.rewards >= 0) & (ds.rewards <= 1.5)) and set(np.unique(ds.costs)) <= {0.0, 1.0}
    prov = ds.provenance
    assert prov["runs"][0]["seed"] == 7 and prov["runs"][0]["completed_episodes"] == 2
    assert prov["versions"]["mujoco"] and prov["observation_spec"]["state_names"] == list(STATE_NAMES)
    run = prov["runs"][0]
    assert run["sim_model"] == "project" and len(run["sim_model_sha256"]) == 64
    assert run["expert"]["name"] == "trot" and run["expert"]["config"]["period"] > 0
    assert ds.action_semantics["name"] == "project" and ds.action_semantics["kp"] == 30.0
    assert np.abs(ds.raw["q"] - DEFAULT_JOINT_POS).max() < 1.5
    # Same seed, same file content (episodes in index order whatever the worker timing).
    again = tmp_path / "again.h5"
    assert _collect(again, capsys, "--episodes", "2", "--workers", "2", "--seed", "7")[0] == 0
    ds2 = load_dataset(again)
    np.testing.assert_array_equal(ds2.observations, ds.observations)
    np.testing.assert_array_equal(ds2.raw["target_executed"], ds.raw["target_executed"])


def test_existing_file_needs_append_and_resume_keeps_earlier_episodes(tmp_path, capsys):
    path = tmp_path / "d.h5"
    assert _collect(path, capsys, "--episodes", "2", "--workers", "1")[0] == 0
    first = load_dataset(path)
    rc = main(["collect", "--out", str(path), *TINY, "--episodes", "1", "--workers", "1"])
    assert rc == 2 and "--append" in capsys.readouterr().err
    # An append interrupted after writing rows but before committing them.
    with h5py.File(path, "a") as f:
        n = int(f.attrs["committed"])
        for k in ("observations", "actions", "rewards"):
            f[k].resize(n + 17, axis=0)
            f[k][n:] = 123.0
    rc, rep = _collect(path, capsys, "--episodes", "1", "--workers", "1", "--append")
    assert rc == 0 and rep["first_episode"] == 2 and rep["file_samples"] == 150
    ds = load_dataset(path)
    assert len(ds.episode_bounds()) == 3
    np.testing.assert_array_equal(ds.observations[:100], first.observations)
    np.testing.assert_array_equal(ds.actions[:100], first.actions)
    assert not np.any(ds.observations == 123.0)
    # The appended episode has its own seed (index 2), not a copy of episode 0.
    assert not np.allclose(ds.conditions[100], ds.conditions[0])
    assert [r["first_episode"] for r in ds.provenance["runs"]] == [0, 2]


def test_corrupt_or_mismatched_files_are_refused(tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        load_dataset(junk)
    rc = main(["collect", "--out", str(junk), *TINY, "--episodes", "1", "--workers", "1", "--append"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a readable dataset" in err
    assert junk.read_bytes() == b"this is not hdf5" * 100  # left untouched
    other = tmp_path / "other.h5"
    DatasetWriter(other, ["a", "b"], ["u"], ["c"], 0.02).close()
    rc = main(["collect", "--out", str(other), *TINY, "--episodes", "1", "--workers", "1", "--append"])
    assert rc == 2 and "state_names differ" in capsys.readouterr().err
    path = tmp_path / "d.h5"
    assert _collect(path, capsys, "--episodes", "1", "--workers", "1")[0] == 0
    with pytest.raises(DatasetError, match=r"dims \(S, A, C\) = \(30, 12, 3\) do not match"):
        load_dataset(path, expect_dims=(29, 12, 3))
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format_version 99"):
        load_dataset(path)


def test_sigterm_stops_collection_and_keeps_committed_episodes(tmp_path):
    """A real `collect` process stopped by SIGTERM after its first episode: exit 130, every
    finished episode readable, the run marked interrupted."""
    import os
    import re
    import select
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "d.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner_runtime.cli", "collect", "--out", str(path), "--episodes", "200",
         "--episode-duration", "1.0", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        buf, deadline = b"", time.monotonic() + 120
        while time.monotonic() < deadline:  # wait on the progress bar: >= 1 episode written
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                buf += os.read(proc.stderr.fileno(), 4096)
                counts = [float(c) for c in re.findall(rb"\|\s*([\d.]+)k?/", buf)]
                if counts and max(counts) > 0:
                    break
            assert proc.poll() is None, buf.decode(errors="replace")
        else:
            raise AssertionError("no episode finished within 120 s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    ds = load_dataset(path)
    n_eps = len(ds.episode_bounds())
    assert 1 <= n_eps < 200 and len(ds) == 50 * n_eps
    assert ds.provenance["runs"][0]["interrupted"] is True
    assert ds.provenance["runs"][0]["completed_episodes"] == n_eps


def test_episodes_are_deterministic_per_seed_and_index():
    from sim.collect import collect_episode

    cfg = {"episode_duration": 0.6, "expert_name": "trot", "semantics": "project", "model": "project",
           "noise_levels": [0.05], "pushes": True, "push_interval": [0.2, 0.3],
           "push_force": [30.0, 80.0], "physics": {"foot_friction": [0.6, 1.0], "trunk_mass_delta": [-0.5, 1.0]},
           "sensor_noise": 0.5, "expert": {}, "commands": {"vx": [-0.3, 0.8], "vy": [-0.2, 0.2], "yaw": [-0.8, 0.8]}}
    a, b, c = collect_episode(1, 4, cfg), collect_episode(1, 4, cfg), collect_episode(1, 5, cfg)
    for k in ("observations", "actions", "conditions", "rewards"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["raw"]["target_executed"], b["raw"]["target_executed"])
    assert not np.array_equal(a["observations"], c["observations"])


def test_command_ranges_shape_the_schedules_and_are_recorded(tmp_path, capsys):
    """`collect --vx/--yaw` (e.g. only fast turning): every recorded command is drawn from the
    given ranges, or 0 where a special segment (straight, turn in place, stand) zeroes it;
    the run records its ranges. A reversed range is refused before anything is written."""
    path = tmp_path / "d.h5"
    rc, rep = _collect(path, capsys, "--episodes", "8", "--workers", "2", "--vx", "0.5", "0.8",
                       "--yaw", "-0.8", "-0.3")
    assert rc == 0
    ds = load_dataset(path)
    vx, yaw = ds.conditions[:, 0], ds.conditions[:, 2]
    assert np.all(((vx >= 0.5) & (vx <= 0.8)) | (vx == 0.0))
    assert np.all(((yaw >= -0.8) & (yaw <= -0.3)) | (yaw == 0.0))
    assert np.any((vx >= 0.5) & (yaw <= -0.3))  # the drawn (non-special) segments are fast turns
    run = ds.provenance["runs"][0]
    assert run["config"]["commands"] == {"vx": [0.5, 0.8], "vy": [-0.2, 0.2], "yaw": [-0.8, -0.3]}
    assert ds.provenance["command_ranges"]["vx"] == [0.5, 0.8]
    bad = tmp_path / "bad.h5"
    rc = main(["collect", "--out", str(bad), *TINY, "--episodes", "1", "--vx", "0.8", "0.5"])
    assert rc == 2 and "--vx must be finite LO <= HI" in capsys.readouterr().err and not bad.exists()


def test_bad_expert_config_is_refused(tmp_path, capsys):
    path = tmp_path / "d.h5"
    rc = main(["collect", "--out", str(path), *TINY, "--episodes", "1", "--expert-config", '{"perido": 0.3}'])
    assert rc == 2 and "unknown expert parameter 'perido'" in capsys.readouterr().err
    rc = main(["collect", "--out", str(path), *TINY, "--episodes", "1", "--expert-config", "{not json"])
    assert rc == 2 and "--expert-config" in capsys.readouterr().err
    assert not path.exists()


def test_ppo_collection_records_its_semantics_and_mixed_quality(tmp_path, capsys):
    """The PPO policy on the fitted Menagerie Go2 with randomized physics: actions in its
    legged-gym semantics (the labels reproduce the executed targets up to the noise), one
    noise level per episode from --noise-levels, the physics recorded per run."""
    from robot.actions import LEGGED_GYM
    from robot.go2_constants import JOINT_POS_UPPER, TARGET_OVERDRIVE

    path = tmp_path / "ppo.h5"
    rc, rep = _collect(path, capsys, "--episodes", "4", "--workers", "2", "--seed", "3", "--expert", "ppo",
                       "--model", "menagerie-fitted", "--randomize", "--noise-levels", "0.0", "0.1")
    assert rc == 0 and rep["episodes"] == 4
    ds = load_dataset(path)
    assert ds.action_semantics == LEGGED_GYM.as_dict()
    levels = {round(float(ds.raw["noise_level"][s]), 6) for s, _ in ds.episode_bounds()}
    assert levels <= {0.0, 0.1} and len(levels) == 2
    for s, e in ds.episode_bounds():
        executed = ds.raw["target_executed"][s:e].astype(float)
        clean = LEGGED_GYM.to_target(ds.actions[s:e])
        assert np.all(clean <= JOINT_POS_UPPER + TARGET_OVERDRIVE + 1e-5)
        err = np.abs(executed - clean).max()
        assert (err < 1e-5) if ds.raw["noise_level"][s] == 0.0 else (0.05 < err < 0.8), (err, ds.raw["noise_level"][s])
    run = ds.provenance["runs"][0]
    assert run["expert"]["name"] == "ppo" and run["config"]["physics"]["actuator_lag"] == [0.0, 0.02]
    assert run["model_physics"]["leg_mass_scale"] == pytest.approx(1.616)


def test_ppo_refuses_other_semantics_and_a_missing_model_is_named(tmp_path, capsys):
    path = tmp_path / "x.h5"
    rc = main(["collect", "--out", str(path), *TINY, "--episodes", "1", "--expert", "ppo", "--semantics", "project"])
    assert rc == 2 and "own semantics" in capsys.readouterr().err
    rc = main(["collect", "--out", str(path), *TINY, "--episodes", "1", "--model", str(tmp_path / "nope.xml")])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    assert not path.exists()


def test_ppo_at_other_gains_executes_and_records_them(tmp_path, capsys):
    """collect --kp/--kd: the PPO policy's targets (the same actions) are held at the given PD
    gains, the data's action semantics say so (an engine trained on it is executed at them),
    a file at other gains is not appended to, and gains the controller cannot run are refused."""
    from robot.actions import LEGGED_GYM
    from sim.collect import make_expert
    from sim.ppo_policy import PPOPolicy

    stiff = LEGGED_GYM.with_gains(24.0, 0.6)
    state = LowState(q=LEGGED_GYM.default_joint_pos.copy(), dq=np.zeros(12), quaternion=np.array([1.0, 0, 0, 0]),
                     gyroscope=np.zeros(3), base_lin_vel=np.zeros(3))
    t20, c20 = make_expert("ppo").act(state, np.array([0.5, 0.0, 0.0]), 0.0)  # its own semantics
    t24, c24 = make_expert("ppo", stiff).act(state, np.array([0.5, 0.0, 0.0]), 0.0)
    assert np.array_equal(t20, t24) and np.all(c20.kp == 20.0) and np.all(c24.kp == 24.0) and np.all(c24.kd == 0.6)
    with pytest.raises(ValueError, match="PD gains aside"):
        PPOPolicy(semantics=LEGGED_GYM.__class__(**{**LEGGED_GYM.__dict__, "scale": LEGGED_GYM.scale * 2}))

    runs = {}
    for kp, kd in ((None, None), ("24", "0.6")):
        path = tmp_path / f"ppo_{kp}.h5"
        gains = [] if kp is None else ["--kp", kp, "--kd", kd]
        rc, rep = _collect(path, capsys, "--episodes", "1", "--workers", "1", "--seed", "5", "--expert", "ppo",
                           "--no-pushes", "--noise-levels", "0.0", *gains)
        assert rc == 0
        runs[kp] = load_dataset(path)
    assert runs[None].action_semantics == LEGGED_GYM.as_dict()
    assert runs["24"].action_semantics == stiff.as_dict()
    assert runs["24"].provenance["runs"][0]["config"]["gains"] == {"kp": 24.0, "kd": 0.6}
    assert runs[None].provenance["runs"][0]["config"]["gains"] == {}
    # the same start, then the stiffer PD holds the same kind of targets differently
    q20, q24 = runs[None].raw["q"], runs["24"].raw["q"]
    assert np.array_equal(q20[0], q24[0]) and np.abs(q20[10:] - q24[10:]).max() > 1e-3

    rc = main(["collect", "--out", str(tmp_path / "ppo_24.h5"), *TINY, "--append", "--episodes", "1", "--expert", "ppo"])
    assert rc == 2 and "action semantics differ" in capsys.readouterr().err
    assert len(load_dataset(tmp_path / "ppo_24.h5").episode_bounds()) == 1
    for bad, why in ((["--kp", "200"], "kp 200.0 outside"), (["--kd", "nan"], "non-finite gains"),
                     (["--kd", "0.01"], "kd 0.01 outside")):
        rc = main(["collect", "--out", str(tmp_path / "bad.h5"), *TINY, "--episodes", "1", "--expert", "ppo", *bad])
        assert rc == 2 and why in capsys.readouterr().err, bad
    assert not (tmp_path / "bad.h5").exists()
