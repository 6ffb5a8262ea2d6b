"""Datasets written by evaluation: an engine's own closed-loop episodes (``eval --record``)
and its scored candidates (``eval --ranker-check --ranker-data``).

An engine's own episodes are on-policy data: the states the deployed planner actually
visits (under the evaluated latency, physics and merge rule) with the actions it executed.
The default engine's forecaster is fine-tuned on them (export/default_engine.py): a
forecaster trained only on the expert's states is 2-3x less accurate on the engine's.

Rows are the collection's (sim/collect.py): ``observations[k]`` is the state measured at the
start of policy tick k, ``actions[k]`` the action executed during it (in the engine's action
semantics, as the controller's chunk executor recorded it), ``conditions[k]`` the command,
``rewards[k]``/``costs[k]`` those of the state tick k led to (``state_reward_cost``); raw
``time`` (the robot clock at the tick's start, s) and ``base_lin_vel`` (privileged, body frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.dataset import DatasetError, DatasetWriter, Episode
from robot.observation import build_condition, state_reward_cost

RAW_SHAPES: dict[str, tuple[int, ...]] = {"time": (), "base_lin_vel": (3,)}  # of recorded episodes
MIN_STRETCH = 8  # policy ticks: shorter stretches between gaps hold no training window


def new_dataset_path(path: str | Path) -> Path:
    """``path``, refused (DatasetError) when a file is there: evaluation writes new datasets only."""
    out = Path(path)
    if out.exists():
        raise DatasetError(f"{out} exists: evaluation writes a new dataset (remove it or pick another path)")
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


class ClosedLoopRecorder:
    """Pairs the states sampled at policy-tick boundaries with the actions the chunk executor
    recorded for the ticks that start there (matched by time). A tick without an executed
    action (before the first plan arrives, a rejected chunk) ends a stretch; every stretch of
    at least ``MIN_STRETCH`` ticks becomes one dataset episode."""

    def __init__(self) -> None:
        self._samples: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []
        self._actions: dict[int, np.ndarray] = {}
        self._last_record: object | None = None

    def sample(self, t: float, x: np.ndarray, command: np.ndarray, base_lin_vel: np.ndarray) -> None:
        """The state ``x`` at the policy-tick boundary ``t`` (robot clock), its command and the
        body velocity there (for the reward)."""
        self._samples.append((float(t), np.asarray(x, np.float64), np.asarray(command, np.float64),
                              np.asarray(base_lin_vel, np.float64)))

    def executed(self, records: Any) -> None:
        """Call after every controller step with ``executor.records``: keeps the newest record
        (``t``, ``action``) when it is new."""
        if not records:
            return
        r = records[-1]
        if r is self._last_record:
            return
        self._last_record = r
        self._actions[self._key(r.t)] = np.asarray(r.action, np.float64)

    @staticmethod
    def _key(t: float) -> int:
        return int(round(t * 1e5))  # sample and record times are the same clock reading (10 us bins)

    def episodes(self, fell: bool) -> list[Episode]:
        out: list[Episode] = []
        rows: list[tuple] = []

        def flush(terminal: bool) -> None:
            if len(rows) >= MIN_STRETCH:
                obs, act, cond, rew, cost, t, v = (np.array(c, np.float32) for c in zip(*rows, strict=True))
                out.append(Episode(obs, act, cond, rew, cost, terminal=terminal, raw={"time": t, "base_lin_vel": v}))
            rows.clear()

        for j in range(len(self._samples) - 1):
            t, x, cmd, v = self._samples[j]
            a = self._actions.get(self._key(t))
            if a is None:
                flush(False)
                continue
            _, x1, _, v1 = self._samples[j + 1]
            r, c = state_reward_cost(x1, v1, cmd)
            rows.append((x, a, build_condition(cmd), r, c, t, v))
        flush(fell)
        return out

