"""Datasets written from closed-loop runs: an engine's own episodes in evaluation (``eval
--record``), its scored candidates (``eval --ranker-check --ranker-data``), and a controller's
run on a robot (``controller --record``).

An engine's own episodes are on-policy data: the states the deployed planner actually
visits (under the evaluated latency, physics and merge rule, or on the real robot) with the
actions it executed. The default engine's forecaster is fine-tuned on them
(export/default_engine.py): a forecaster trained only on the expert's states is 2-3x less
accurate on the engine's. A robot's run is what a simulator cannot give: the real robot's
states under the engine's own actions, to fine-tune on (docs/controller.md, "Recording a
run").

Rows are the collection's (sim/collect.py): ``observations[k]`` is the state measured at the
start of policy tick k, ``actions[k]`` the action executed during it (in the engine's action
semantics, as the controller's chunk executor recorded it), ``conditions[k]`` the command,
``rewards[k]``/``costs[k]`` those of the state tick k led to (``state_reward_cost``); raw
``time`` (the robot clock at the tick's start, s) and ``base_lin_vel`` (body frame: the
simulator's, or on a robot the velocity estimator's, which the file's provenance names).

A controller's run is kept in memory and written at exit. So that a run survives a process
that dies without exiting (killed, out of memory, a crash in native code), the controller
also appends every sample and executed action to a journal beside the dataset
(``OUT.h5.journal``, :class:`RecordJournal`): the loop queues each record and a thread
writes it with one unbuffered write, so what was written is in the operating system's
hands, not the process's, and a slow disk never holds up the loop. A clean exit writes the
dataset and removes the journal; after a crash ``planner-runtime controller --recover
OUT.h5`` replays the journal into the same recorder and writes the dataset it would have
written (:func:`recover_run`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.dataset import DatasetError, DatasetWriter, Episode
from robot.observation import build_condition, state_reward_cost

RAW_SHAPES: dict[str, tuple[int, ...]] = {"time": (), "base_lin_vel": (3,)}  # of recorded episodes
MIN_STRETCH = 8  # policy ticks: shorter stretches between gaps hold no training window
JOURNAL_SUFFIX = ".journal"
JOURNAL_FORMAT = "planner-runtime record journal"
JOURNAL_VERSION = 1
_SAMPLE, _ACTION = 1, 2  # journal record kinds

log = logging.getLogger(__name__)


class NothingRecorded(ValueError):
    """A run held no stretch of planning long enough for a training window."""


def _record_dtype(state_dim: int, action_dim: int) -> np.dtype:
    """One journal record: kind, fall flag, tick number, time, and a float32 row wide enough
    for a sample's [state, command, velocity] or an action (zero-padded)."""
    return np.dtype([("kind", "u1"), ("fallen", "u1"), ("tick", "<i8"), ("t", "<f8"),
                     ("row", "<f4", (max(state_dim + 6, action_dim),))])


def journal_path(out: str | Path) -> Path:
    """Where the journal of a run recorded to ``out`` lives."""
    return Path(str(out) + JOURNAL_SUFFIX)


def new_dataset_path(path: str | Path) -> Path:
    """``path``, refused (DatasetError) when a file is there: runs write new datasets only."""
    out = Path(path)
    if out.exists():
        raise DatasetError(f"{out} exists: a run writes a new dataset (remove it or pick another path)")
    return out


def engine_dataset_writer(path: str, manifest: Any, provenance: dict[str, Any],
                          condition_names: list[str] | None = None,
                          raw_shapes: dict[str, tuple[int, ...]] | None = None) -> DatasetWriter:
    """A new dataset file with the engine's state and action names, dt and action semantics
    (so a model trained on it matches the engine); ``condition_names`` default to the
    manifest's. Refuses an existing file (DatasetError)."""
    from robot.actions import ActionSemantics

    out = new_dataset_path(path)
    o = manifest.observation
    sem = ActionSemantics.from_dict(manifest.action.to_dict()).as_dict()  # as collection records it
    prov = {"engine_graph_sha256": manifest.checksums.graph_sha256, **provenance}
    return DatasetWriter(out, list(o.state_names), list(o.action_names),
                         list(condition_names if condition_names is not None else o.condition_names),
                         manifest.control.dt, robot=manifest.robot.name, provenance=prov, action_semantics=sem,
                         raw_shapes=raw_shapes)


def run_dataset_writer(path: str | Path, semantics: dict[str, Any], dt: float,
                       provenance: dict[str, Any]) -> DatasetWriter:
    """A new dataset file for a controller's run (``controller --record``): the controller's
    state, action and command layout (robot.observation, as collection and ``eval --record``
    write), the engine's action semantics as negotiated (``ActionSemantics.as_dict()``), the
    policy tick ``dt``. Refuses an existing file (DatasetError)."""
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

    return DatasetWriter(new_dataset_path(path), list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES),
                         dt, robot="go2", provenance=provenance, action_semantics=dict(semantics),
                         raw_shapes=RAW_SHAPES)


def write_run(path: str | Path, recorder: ClosedLoopRecorder, semantics: dict[str, Any], dt: float,
              provenance: dict[str, Any]) -> dict[str, Any]:
    """A controller's run (``recorder``) as a new dataset at ``path``, with ``provenance`` plus
    the real interval between its sampled policy ticks and the time of writing; what was
    written. NothingRecorded when no stretch holds a training window (nothing is written)."""
    from planner_runtime.bench.stats import summary as stats
    from planner_runtime.provenance import utc_stamp

    # the rows are written dt apart; how far apart the loop really sampled them, so a user can
    # see whether that holds (a loop without real-time priority runs late under load)
    interval = {k: v for k, v in stats(recorder.intervals(), scale=1e3, suffix="_ms", digits=3).items()
                if k in ("median_ms", "p99_ms", "max_ms")}
    episodes = recorder.episodes(fell=False)
    if not episodes:
        raise NothingRecorded(f"no stretch of planning long enough for a training window ({len(recorder)} "
                              "policy ticks sampled)")
    prov = {**provenance, "policy_tick_interval": interval, "created_utc": utc_stamp()}
    with run_dataset_writer(path, semantics, dt, prov) as w:
        for ep in episodes:
            w.append(ep)
    return {"path": str(path), "episodes": len(episodes), "samples": int(sum(len(e) for e in episodes)),
            "falls": int(sum(e.terminal for e in episodes)), "base_velocity": provenance.get("base_velocity"),
            "policy_tick_interval": interval}


def recover_run(out: str | Path) -> dict[str, Any]:
    """Write the dataset ``out`` from the journal a run that did not exit left beside it
    (``OUT.h5.journal``), as the run would have written it at exit, and remove the journal.
    Its last stretch ends as the journal does (not as a fall, unless its last sample says the
    robot had fallen). DatasetError: no journal, an unreadable one, or ``out`` exists;
    NothingRecorded: no stretch holds a training window (the journal is kept)."""
    out = Path(out)
    jp = journal_path(out)
    recorder, header, torn = RecordJournal.replay(jp)
    new_dataset_path(out)
    prov = {**header["provenance"], "recovered_from_journal": str(jp),
            "journal_records": len(recorder) + recorder.n_actions, "journal_torn_bytes": torn}
    written = write_run(out, recorder, header["semantics"], header["dt"], prov)
    jp.unlink()
    return written


class RecordJournal:
    """The append-only journal of a recorded run: a JSON header line (format, the state and
    action widths, the time origin, the policy tick, the action semantics and the run's
    provenance), then one fixed-size binary record per event: kind (sample / action), the
    fall flag, the tick number, the time, and a float32 row (a sample's [state, command,
    velocity], or an action, zero-padded).

    The control loop only queues a record's bytes; a writer thread writes each with one
    unbuffered ``write`` (which releases the GIL), so a slow disk never stalls the loop, and
    a process that dies loses only what was still queued (a torn last record is ignored on
    replay). A failed write (a full disk) is logged once and ends the journal; the run in
    memory is unaffected. Created exclusively: an existing journal is never overwritten."""

    def __init__(self, path: str | Path, state_dim: int, action_dim: int, time_origin: float, dt: float,
                 semantics: dict[str, Any], provenance: dict[str, Any]) -> None:
        self.path = Path(path)
        self._rec = np.zeros((), _record_dtype(state_dim, action_dim))  # filled per record, its bytes queued
        self.failed: str | None = None
        header = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "state_dim": int(state_dim),
                  "action_dim": int(action_dim), "time_origin": float(time_origin), "dt": float(dt),
                  "semantics": semantics, "provenance": provenance}
        self.header = header
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._write((json.dumps(header) + "\n").encode())
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._drain, name="record-journal", daemon=True)
        self._writer.start()

    def sample(self, t: float, tick: int, fallen: bool, row: np.ndarray) -> None:
        self._record(_SAMPLE, t, tick, fallen, row)

    def action(self, t: float, action: np.ndarray) -> None:
        self._record(_ACTION, t, -1, False, action)

    def _record(self, kind: int, t: float, tick: int, fallen: bool, row: np.ndarray) -> None:
        if self.failed is not None or self._fd < 0:
            return
        rec, r = self._rec, np.ravel(row)
        rec["kind"], rec["fallen"], rec["tick"], rec["t"] = kind, fallen, tick, t
        rec["row"][:r.size] = r
        rec["row"][r.size:] = 0.0
        self._queue.put(rec.tobytes())

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.failed is None:
                self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
        except OSError as exc:
            self.failed = str(exc)
            log.error("record journal %s: %s; the run is still kept in memory and written at exit, but a "
                      "crash from here on loses it", self.path, exc)

    def close(self, remove: bool = False) -> None:
        """Write what is queued, close; ``remove``: delete the file (its run is written)."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            self.path.unlink(missing_ok=True)

    @staticmethod
    def replay(path: str | Path) -> tuple[ClosedLoopRecorder, dict[str, Any], int]:
        """The recorder the journal at ``path`` describes, its header, and the bytes of a torn
        last record (left out). DatasetError when there is no journal or it is not one."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no journal here (a run that exits writes its dataset and "
                               "removes its journal)")
        data = path.read_bytes()
        line, _, body = data.partition(b"\n")
        try:
            header = json.loads(line)
            ok = header.get("format") == JOURNAL_FORMAT
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise DatasetError(f"{path}: not a record journal")
        if header.get("version") != JOURNAL_VERSION:
            raise DatasetError(f"{path}: journal version {header.get('version')}, this build reads "
                               f"{JOURNAL_VERSION}")
        S, A = int(header["state_dim"]), int(header["action_dim"])
        dtype = _record_dtype(S, A)
        n, torn = divmod(len(body), dtype.itemsize)
        recs = np.frombuffer(body, dtype, count=n)
        if np.any((recs["kind"] != _SAMPLE) & (recs["kind"] != _ACTION)):
            raise DatasetError(f"{path}: corrupt record (unknown kind)")
        rec = ClosedLoopRecorder(time_origin=header["time_origin"])
        for r in recs:
            if r["kind"] == _SAMPLE:
                row = r["row"][:S + 6]
                rec.sample(float(r["t"]), row[:S], row[S:S + 3], row[S + 3:], fallen=bool(r["fallen"]),
                           tick=None if r["tick"] < 0 else int(r["tick"]))
            else:
                rec._action(float(r["t"]), r["row"][:A])
        return rec, header, torn


class ClosedLoopRecorder:
    """Pairs the states sampled at policy-tick boundaries with the actions the chunk executor
    recorded for the ticks that start there (matched by time). A tick without an executed
    action (before the first plan arrives, a rejected chunk, a stop), or a policy tick left
    out between two samples (``tick`` numbers given and not consecutive: a tick without a
    state or a velocity), ends a stretch; every stretch of at least ``MIN_STRETCH`` ticks
    becomes one dataset episode. A stretch is terminal (ended in failure) when the sample that
    ends it says the robot had fallen, or when it is the last and ``episodes(fell=True)``.
    Raw ``time`` is written as ``t - time_origin`` (a robot's monotonic clock is too large
    for the file's float32)."""

    def __init__(self, time_origin: float = 0.0, journal: RecordJournal | None = None) -> None:
        self.time_origin = float(time_origin)
        self.journal = journal  # every sample and action also appended there (controller --record)
        # compact, for hours of 50 Hz ticks on the robot (about 0.5 kB a tick, 90 MB an hour): the sample times,
        # tick numbers (-1: not given), fall flags, and one float32 row [state, command, velocity]
        self._t = array("d")
        self._tick = array("q")
        self._fallen = array("b")
        self._rows = _Rows()
        self._act_keys = array("q")  # the time key of each row of _acts (no dict: its resizes stall the loop)
        self._acts = _Rows()
        self._last_record: object | None = None

    def __len__(self) -> int:
        return len(self._t)

    @property
    def n_actions(self) -> int:
        return len(self._acts)

    def sample(self, t: float, x: np.ndarray, command: np.ndarray, base_lin_vel: np.ndarray,
               fallen: bool = False, tick: int | None = None) -> None:
        """The state ``x`` at the policy-tick boundary ``t`` (robot clock), its command and the
        body velocity there (for the reward); ``fallen``: the robot was stopped by a fall
        (ends the stretch before it as a failure); ``tick``: the policy tick's number (None:
        samples are consecutive ticks by construction)."""
        self._t.append(float(t))
        self._tick.append(-1 if tick is None else int(tick))
        self._fallen.append(1 if fallen else 0)
        row = np.concatenate([np.ravel(x), np.ravel(command)[:3], np.ravel(base_lin_vel)[:3]])
        self._rows.append(row)
        if self.journal is not None:
            self.journal.sample(t, self._tick[-1], fallen, row)

    def intervals(self) -> np.ndarray:
        """Seconds between consecutive sampled policy ticks (the loop's real policy period)."""
        t, k = np.asarray(self._t), np.asarray(self._tick)
        consecutive = (k[:-1] < 0) | (k[1:] == k[:-1] + 1)
        return np.diff(t)[consecutive]

    def executed(self, records: Any) -> None:
        """Call after every controller step with ``executor.records``: keeps the newest record
        (``t``, ``action``) when it is new."""
        if not records:
            return
        r = records[-1]
        if r is self._last_record:
            return
        self._last_record = r
        self._action(r.t, r.action)

    def _action(self, t: float, action: np.ndarray) -> None:
        self._act_keys.append(self._key(t))
        self._acts.append(np.asarray(action))
        if self.journal is not None:
            self.journal.action(t, action)

    @staticmethod
    def _key(t: float) -> int:
        return int(round(t * 1e5))  # sample and record times are the same clock reading (10 us bins)

    def episodes(self, fell: bool) -> list[Episode]:
        out: list[Episode] = []
        rows: list[tuple] = []

        def flush(terminal: bool) -> None:
            if len(rows) >= MIN_STRETCH:
                cols = [np.array(c, np.float64) for c in zip(*rows, strict=True)]
                cols[5] = cols[5] - self.time_origin
                obs, act, cond, rew, cost, t, v = (c.astype(np.float32) for c in cols)
                out.append(Episode(obs, act, cond, rew, cost, terminal=terminal, raw={"time": t, "base_lin_vel": v}))
            rows.clear()

        data, acts = self._rows.view().astype(np.float64), self._acts.view().astype(np.float64)
        action_row = {k: i for i, k in enumerate(self._act_keys)}  # time key -> row of acts (the last one)
        S = data.shape[1] - 6
        n = len(self._t)
        for j in range(n - 1):
            t, tick = self._t[j], self._tick[j]
            i = action_row.get(self._key(t))
            if i is None:
                flush(bool(self._fallen[j]))
                continue
            if tick >= 0 and self._tick[j + 1] != tick + 1:  # the next state is not this tick's outcome
                flush(bool(self._fallen[j + 1]))
                continue
            x, cmd, v = data[j, :S], data[j, S:S + 3], data[j, S + 3:]
            r, c = state_reward_cost(data[j + 1, :S], data[j + 1, S + 3:], cmd)
            rows.append((x, acts[i], build_condition(cmd), r, c, t, v))
        flush(fell or bool(n and self._fallen[-1]))
        return out


class _Rows:
    """A growing float32 table (rows of one width) in fixed-size blocks: an append in the
    control loop never copies what is there (doubling one array did, tens of ms an hour in)."""

    BLOCK = 4096

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, row: np.ndarray) -> None:
        row = np.asarray(row, np.float32).ravel()
        i = self._n % self.BLOCK
        if i == 0:
            self._blocks.append(np.empty((self.BLOCK, row.size), np.float32))
        self._blocks[-1][i] = row
        self._n += 1

    def view(self) -> np.ndarray:
        if not self._blocks:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(self._blocks)[:self._n]
