"""Recording a controller's run as a dataset (``controller --record``, robot/recording.py):
the stretch rules and the crash journal on synthetic samples, then the real service on the
embedded engine driving the in-process MuJoCo Go2 over real ZeroMQ, its run written and read
back through the dataset format, and a run killed with SIGKILL recovered from its journal. The DDS path (the demo's simulated robot, the velocity estimator's
rewards) is in tests/e2e/test_default_engine.py::test_demo_steered_live_over_the_control_endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from planner_runtime.dataset import DatasetError, load_dataset
from robot.observation import ACTION_DIM, CONDITION_NAMES, STATE_DIM, STATE_NAMES, state_reward_cost
from robot.recording import (
    MIN_STRETCH,
    ClosedLoopRecorder,
    NothingRecorded,
    RecordJournal,
    journal_path,
    recover_run,
)

from .conftest import child_env, free_port, start_service, wait_service

EMBEDDED = __import__("pathlib").Path(__file__).resolve().parents[2] / "planner_runtime" / "engines" / "go2.onnx"


def _feed(rec: ClosedLoopRecorder, ticks: list[int], acted: set[int], fallen: set[int] = frozenset()) -> None:
    """Samples at the given policy tick numbers (t = 1000 + 0.02 k), with an executed action at
    the ticks in ``acted``."""
    for k in ticks:
        t = 1000.0 + 0.02 * k
        x = np.full(STATE_DIM, 0.01 * k)
        x[STATE_NAMES.index("gravity_z")] = -1.0
        rec.sample(t, x, np.array([0.5, 0.0, 0.0]), np.array([0.4, 0.0, 0.0]), fallen=k in fallen, tick=k)
        if k in acted:
            rec.executed([SimpleNamespace(t=t, action=np.full(12, k, np.float64))])


def test_stretches_end_at_a_missing_tick_a_tick_without_action_and_a_fall():
    rec = ClosedLoopRecorder(time_origin=1000.0)
    # ticks 0-19 acted; tick 20 never sampled (no state); 21-40 acted; 41 sampled after a fall
    # stopped planning (no action); 42-45 acted (too short a stretch)
    ticks = [*range(0, 20), *range(21, 42), *range(42, 46)]
    acted = {*range(0, 20), *range(21, 41), *range(42, 46)}
    _feed(rec, ticks, acted, fallen={41})
    eps = rec.episodes(fell=False)
    # tick 19's outcome (tick 20) was never sampled: its row is left out, the stretch ends at 18
    assert [len(e) for e in eps] == [19, 20] and [e.terminal for e in eps] == [False, True]
    first, second = eps
    np.testing.assert_allclose(first.actions[:, 0], np.arange(19))  # the action executed at each row's tick
    np.testing.assert_allclose(second.actions[:, 0], np.arange(21, 41))
    np.testing.assert_allclose(second.raw["time"], 0.02 * np.arange(21, 41), atol=1e-5)  # from the origin
    # each row's reward and cost are those of the state its tick led to
    r, c = state_reward_cost(second.observations[1], np.array([0.4, 0.0, 0.0]), np.array([0.5, 0.0, 0.0]))
    assert second.rewards[0] == pytest.approx(r) and second.costs[0] == pytest.approx(c)
    np.testing.assert_allclose(rec.intervals(), 0.02, atol=1e-9)  # consecutive ticks only
    assert len(rec.intervals()) == len(ticks) - 2  # the pair around the missing tick is not one
    assert MIN_STRETCH > 4  # the last 4-tick stretch holds no training window and is not written


def _journal(path, t0: float = 1000.0) -> RecordJournal:
    return RecordJournal(path, STATE_DIM, ACTION_DIM, t0, 0.02, {"name": "legged-gym", "kp": 24.0},
                         {"collector": "test", "base_velocity": "given"})


def _same_episodes(a, b) -> None:
    assert [len(e) for e in a] == [len(e) for e in b] and [e.terminal for e in a] == [e.terminal for e in b]
    for x, y in zip(a, b, strict=True):
        for f in ("observations", "actions", "conditions", "rewards", "costs"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
        np.testing.assert_array_equal(x.raw["time"], y.raw["time"])


def test_the_journal_replays_into_the_same_run(tmp_path, caplog):
    """Every sample and action the recorder keeps is in its journal: replayed, the recorder
    gives the same episodes bit for bit (stretch breaks and the fall included); a torn last
    record is left out; a journal is never overwritten; a failed write ends the journal, not
    the run; a file that is not a journal, or none, is refused."""
    path = tmp_path / "run.h5.journal"
    rec = ClosedLoopRecorder(time_origin=1000.0, journal=_journal(path))
    ticks = [*range(0, 20), *range(21, 42)]
    _feed(rec, ticks, {*range(0, 20), *range(21, 41)}, fallen={41})
    rec.journal.close()
    mem = rec.episodes(fell=False)
    assert [len(e) for e in mem] == [19, 20]
    again, header, torn = RecordJournal.replay(path)
    assert torn == 0 and header["dt"] == 0.02 and header["semantics"]["kp"] == 24.0
    assert header["provenance"]["collector"] == "test" and again.time_origin == 1000.0
    _same_episodes(mem, again.episodes(fell=False))
    np.testing.assert_array_equal(rec.intervals(), again.intervals())
    # a process killed mid-write leaves part of a record: replay stops before it
    with open(path, "ab") as f:
        f.write(b"\x01\x00\x07")
    _, _, torn = RecordJournal.replay(path)
    assert torn == 3
    _same_episodes(mem, RecordJournal.replay(path)[0].episodes(fell=False))
    with pytest.raises(FileExistsError):
        _journal(path)
    # a write that fails is logged once; the recorder keeps the run in memory (a full disk:
    # the journal's descriptor now writes to /dev/full, where every write fails with ENOSPC)
    other = _journal(tmp_path / "other.journal")
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, other._fd)
    os.close(full)
    rec2 = ClosedLoopRecorder(time_origin=1000.0, journal=other)
    _feed(rec2, list(range(12)), set(range(12)))
    other.close()  # waits for the writer thread
    assert "No space left" in other.failed and len(rec2) == 12 and len(rec2.episodes(fell=False)[0]) == 11
    assert sum("the run is still kept in memory" in r.message for r in caplog.records) == 1
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b'{"format": "something else"}\n')
    with pytest.raises(DatasetError, match="not a record journal"):
        RecordJournal.replay(bad)
    with pytest.raises(DatasetError, match="no journal here"):
        RecordJournal.replay(tmp_path / "missing.journal")


def test_recover_writes_the_dataset_the_run_would_have_written(tmp_path):
    pytest.importorskip("h5py")
    out = tmp_path / "run.h5"
    rec = ClosedLoopRecorder(time_origin=1000.0, journal=_journal(journal_path(out)))
    _feed(rec, list(range(30)), set(range(30)))
    rec.journal.close()
    (tmp_path / "taken.h5").write_bytes(b"")
    os.link(journal_path(out), journal_path(tmp_path / "taken.h5"))
    with pytest.raises(DatasetError, match="exists"):  # never over a file that is there
        recover_run(tmp_path / "taken.h5")
    written = recover_run(out)
    assert written["samples"] == 29 and written["episodes"] == 1 and written["falls"] == 0
    assert not journal_path(out).exists()
    ds = load_dataset(out)
    _same_episodes(rec.episodes(fell=False), list(ds.episodes()))
    assert ds.provenance["recovered_from_journal"] == str(journal_path(out))
    assert ds.provenance["collector"] == "test" and ds.action_semantics["kp"] == 24.0
    # a journal holding no stretch long enough is refused and kept
    short = tmp_path / "short.h5"
    rec = ClosedLoopRecorder(journal=_journal(journal_path(short)))
    _feed(rec, list(range(5)), set(range(5)))
    rec.journal.close()
    with pytest.raises(NothingRecorded):
        recover_run(short)
    assert journal_path(short).exists() and not short.exists()


def test_controller_records_its_run_and_the_dataset_reads_back(tmp_path, capsys):
    """`controller --sim --planner EP --record OUT.h5` against the real service on the embedded
    engine: the file carries the controller's layout and the engine's action semantics, one
    row per policy tick while planning, the command as the condition, rewards and costs as
    collection labels them; and the simulated Go2's clock is not mixed with the client's (a
    chunk's receipt used to be stamped on the monotonic clock, which stopped every `--sim
    --planner` run at once as "planner too slow": a turnaround of hours)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("h5py")
    from planner_runtime.engine_file import load_onnx

    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(EMBEDDED, ep)
    out = tmp_path / "run.h5"
    try:
        wait_service(ep)
        cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--planner", ep,
               "--passive", "0.1", "--stand-up", "0.5", "--schedule", "0:0.5,0,0;2:0.5,0,0.4",
               "--duration", "5.0", "--on-fault", "exit", "--json", "--record", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=child_env())
        assert res.returncode == 0, res.stderr[-3000:]
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env())
    finally:
        proc.kill()
        proc.wait(10)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert [t["to"] for t in summary["transitions"]] == ["stand_up", "stand", "planning"], summary["transitions"]
    assert summary["plan_age_ms"]["median"] < 200  # the simulator's clock on both sides of a turnaround
    rec = summary["record"]
    assert rec["episodes"] == 1 and rec["falls"] == 0 and rec["base_velocity"].startswith("ground truth")
    # the refusal of an existing file comes before anything moves
    assert again.returncode == 2 and "exists" in again.stderr and "--record" in again.stderr
    assert not journal_path(out).exists()  # a run that exits removes its journal

    ds = load_dataset(out)
    man = load_onnx(EMBEDDED)[1]
    assert list(ds.state_names) == list(STATE_NAMES) and list(ds.condition_names) == list(CONDITION_NAMES)
    assert ds.dt == pytest.approx(0.02) and ds.action_semantics["kp"] == man.action.kp
    assert ds.action_semantics["default_joint_pos"] == pytest.approx(list(man.action.default_joint_pos))
    prov = ds.provenance
    assert prov["engine"]["graph_sha256"] == man.checksums.graph_sha256 and prov["planner"] == ep
    # planning began about 0.6 s in and the run lasted 5 s: about 4.4 s of policy ticks
    n = len(ds.observations)
    assert n == rec["samples"] and 180 <= n <= 225
    t = ds.raw["time"]
    assert np.median(np.diff(t)) == pytest.approx(0.02, abs=2e-3)
    # the command is the condition, switching at 2 s of planning
    turning = ds.conditions[:, 2] > 0.2
    np.testing.assert_allclose(ds.conditions[~turning], [[0.5, 0.0, 0.0]] * int((~turning).sum()))
    assert abs((t[turning][0] - t[0]) - 2.0) < 0.05
    # rewards and costs as collection labels them: at the state each tick led to
    v = ds.raw["base_lin_vel"]
    for k in (10, 100, n - 2):
        r, c = state_reward_cost(ds.observations[k + 1], v[k + 1], ds.conditions[k])
        assert ds.rewards[k] == pytest.approx(r, abs=1e-5) and ds.costs[k] == pytest.approx(c, abs=1e-5)
    # the robot walked: the ground truth speed under the 0.5 m/s command
    assert 0.2 < float(np.mean(v[50:100, 0])) < 0.9
    assert np.all(np.isfinite(ds.actions)) and np.ptp(ds.actions[:, 2]) > 0.1  # executed, not a held pose
    # `dataset info` says where a run came from
    from planner_runtime.cli import main

    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "collector: planner-runtime controller --record" in text and "base_velocity: ground truth" in text
    assert main(["dataset", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["policy_tick_interval"] == rec["policy_tick_interval"]


def test_a_run_that_never_planned_writes_nothing_and_says_so(tmp_path):
    """Without a planner the controller stands, then damps: no stretch of planning, no file,
    exit 4 with the reason in the summary (a run's data is never silently missing)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("h5py")
    out = tmp_path / "none.h5"
    res = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--passive", "0.1",
                          "--stand-up", "0.3", "--startup-wait", "0.3", "--on-fault", "exit", "--duration", "2",
                          "--json", "--record", str(out)], capture_output=True, text=True, timeout=120, env=child_env())
    assert res.returncode == 4, res.stderr[-2000:]
    rec = json.loads(res.stdout.strip().splitlines()[-1])["record"]
    assert "no stretch of planning" in rec["error"] and not out.exists()
    assert not journal_path(out).exists()  # nothing a --recover could write either
    missing = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--duration", "1",
                              "--record", str(tmp_path / "no" / "run.h5")], capture_output=True, text=True,
                             timeout=120, env=child_env())
    assert missing.returncode == 2 and "its folder does not exist" in missing.stderr
    dry = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--dry-run", "--duration", "1",
                          "--record", str(tmp_path / "dry.h5")], capture_output=True, text=True, timeout=120,
                         env=child_env())
    assert dry.returncode == 2 and "a dry run executes none" in dry.stderr and not (tmp_path / "dry.h5").exists()


def test_a_killed_controllers_run_is_recovered_from_its_journal(tmp_path):
    """SIGKILL (no handler, no exit code runs) in the middle of a recorded run: the journal
    holds the run; a new `--record` to the same path is refused until `controller --recover`
    has written the dataset, which holds the ticks planned up to the kill."""
    pytest.importorskip("mujoco")
    pytest.importorskip("h5py")
    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(EMBEDDED, ep)
    out = tmp_path / "run.h5"
    cli = [sys.executable, "-m", "planner_runtime.cli", "controller"]
    try:
        wait_service(ep)
        ctl = subprocess.Popen([*cli, "--sim", "--planner", ep, "--passive", "0.1", "--stand-up", "0.5",
                                "--command", "0.5", "0", "0", "--duration", "60", "--on-fault", "exit",
                                "--record", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=child_env())
        deadline = time.monotonic() + 90
        # about 150 planned ticks (a sample and an action record each, 162 bytes a record)
        while time.monotonic() < deadline and (not journal_path(out).exists()
                                               or journal_path(out).stat().st_size < 150 * 2 * 162):
            assert ctl.poll() is None, ctl.stderr.read().decode()[-2000:] if ctl.stderr else ""
            time.sleep(0.2)
        ctl.send_signal(signal.SIGKILL)
        ctl.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    assert not out.exists() and journal_path(out).stat().st_size >= 150 * 2 * 162
    acted = RecordJournal.replay(journal_path(out))[0].n_actions  # planned ticks up to the kill
    refused = subprocess.run([*cli, "--sim", "--duration", "1", "--record", str(out)], capture_output=True,
                             text=True, timeout=120, env=child_env())
    assert refused.returncode == 2 and f"--recover {out}" in refused.stderr
    res = subprocess.run([*cli, "--recover", str(out), "--json"], capture_output=True, text=True, timeout=120,
                         env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads(res.stdout)["record"]
    # every planned tick but the last (whose outcome was never sampled)
    assert rec["episodes"] == 1 and rec["falls"] == 0 and acted - 2 <= rec["samples"] <= acted and acted > 100
    assert not journal_path(out).exists()
    ds = load_dataset(out)
    assert len(ds.observations) == rec["samples"] and not ds.terminals.any()
    assert ds.provenance["planner"] == ep and ds.provenance["recovered_from_journal"].endswith("run.h5.journal")
    np.testing.assert_allclose(ds.conditions, [[0.5, 0.0, 0.0]] * len(ds.conditions))
    v = ds.raw["base_lin_vel"]
    k = len(ds.observations) // 2
    r, c = state_reward_cost(ds.observations[k + 1], v[k + 1], ds.conditions[k])
    assert ds.rewards[k] == pytest.approx(r, abs=1e-5) and ds.costs[k] == pytest.approx(c, abs=1e-5)
    assert np.median(np.diff(ds.raw["time"])) == pytest.approx(0.02, abs=2e-3)
    again = subprocess.run([*cli, "--recover", str(out)], capture_output=True, text=True, timeout=120,
                           env=child_env())
    assert again.returncode == 2 and "no journal here" in again.stderr
    both = subprocess.run([*cli, "--recover", str(out), "--record", str(tmp_path / "b.h5")], capture_output=True,
                          text=True, timeout=120, env=child_env())
    assert both.returncode == 2 and "touches no robot" in both.stderr


def test_bench_record_measures_both_variants_and_the_journal_size(capsys):
    """`python -m robot.bench_record`: per-tick times for memory alone and with the journal,
    and the journal's bytes a tick: two records (sample, action) of 18 + 4 x 36 bytes."""
    from robot.bench_record import main

    assert main(["--ticks", "400", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["memory"]["n"] == res["memory_and_journal"]["n"] == 400
    assert 0 < res["memory"]["median_us"] <= res["memory"]["max_us"]
    header = res["memory_and_journal"]["journal_bytes_per_tick"] * 400 - 400 * 2 * (18 + 4 * (STATE_DIM + 6))
    assert 0 < header < 2000  # the JSON header line, once
    assert "journal_bytes_per_tick" not in res["memory"]
