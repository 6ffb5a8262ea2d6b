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
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.dataset import DatasetError, DatasetWriter, Episode
from robot.observation import build_condition, state_reward_cost

RAW_SHAPES: dict[str, tuple[int, ...]] = {"time": (), "base_lin_vel": (3,)}  # of recorded episodes
MIN_STRETCH = 8  # policy ticks: shorter stretches between gaps hold no training window


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


def run_dataset_writer(path: str | Path, semantics: Any, dt: float, provenance: dict[str, Any]) -> DatasetWriter:
    """A new dataset file for a controller's run (``controller --record``): the controller's
    state, action and command layout (robot.observation, as collection and ``eval --record``
    write), the engine's action semantics as negotiated, the policy tick ``dt``. Refuses an
    existing file (DatasetError)."""
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

    return DatasetWriter(new_dataset_path(path), list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES),
                         dt, robot="go2", provenance=provenance, action_semantics=semantics.as_dict(),
                         raw_shapes=RAW_SHAPES)


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

    def __init__(self, time_origin: float = 0.0) -> None:
        self.time_origin = float(time_origin)
        # compact, for hours of 50 Hz ticks on the robot (about 0.5 kB a tick, 90 MB an hour): the sample times,
        # tick numbers (-1: not given), fall flags, and one float32 row [state, command, velocity]
        self._t = array("d")
        self._tick = array("q")
        self._fallen = array("b")
        self._rows = _Rows()
        self._actions: dict[int, int] = {}  # time key -> row of _acts
        self._acts = _Rows()
        self._last_record: object | None = None

    def __len__(self) -> int:
        return len(self._t)

    def sample(self, t: float, x: np.ndarray, command: np.ndarray, base_lin_vel: np.ndarray,
               fallen: bool = False, tick: int | None = None) -> None:
        """The state ``x`` at the policy-tick boundary ``t`` (robot clock), its command and the
        body velocity there (for the reward); ``fallen``: the robot was stopped by a fall
        (ends the stretch before it as a failure); ``tick``: the policy tick's number (None:
        samples are consecutive ticks by construction)."""
        self._t.append(float(t))
        self._tick.append(-1 if tick is None else int(tick))
        self._fallen.append(1 if fallen else 0)
        self._rows.append(np.concatenate([np.ravel(x), np.ravel(command)[:3], np.ravel(base_lin_vel)[:3]]))

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
        self._actions[self._key(r.t)] = len(self._acts)
        self._acts.append(np.asarray(r.action))

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
        S = data.shape[1] - 6
        n = len(self._t)
        for j in range(n - 1):
            t, tick = self._t[j], self._tick[j]
            i = self._actions.get(self._key(t))
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
    """A growing float32 table (rows of one width), doubling its capacity as it fills."""

    def __init__(self) -> None:
        self._a: np.ndarray | None = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, row: np.ndarray) -> None:
        row = np.asarray(row, np.float32).ravel()
        if self._a is None:
            self._a = np.empty((1024, row.size), np.float32)
        elif self._n == len(self._a):
            self._a = np.concatenate([self._a, np.empty_like(self._a)])
        self._a[self._n] = row
        self._n += 1

    def view(self) -> np.ndarray:
        return np.zeros((0, 0), np.float32) if self._a is None else self._a[:self._n]

