"""Importers: other trajectory layouts -> the planner-runtime dataset format (``dataset.py``).

Two sources, both read with numpy (+ h5py for HDF5, imported when needed):

- D4RL-style flat arrays, in an ``.npz`` or an HDF5 file (arrays at the root)::

      observations [N, S]   actions [N, A]   rewards [N]   terminals [N]   timeouts [N]
      conditions [N, C] (optional)   costs [N] (optional)

  Episodes end after every sample whose ``terminals`` (failure) or ``timeouts`` (time limit)
  flag is set, as in the project's format. Samples after the last flag (D4RL files often
  end mid-episode) form a last episode closed as a timeout (``tail="timeout"``, the data was
  cut there) or are dropped (``tail="drop"``). Other keys (``next_observations``,
  ``infos/...``) are ignored. ``timeouts`` may be absent (older D4RL files): only failures
  and the end of the data then end episodes.
- Minari datasets on disk (HDF5 storage): a ``main_data.hdf5`` (or the dataset folder that
  holds ``data/main_data.hdf5``) with groups ``episode_<i>``: ``observations`` [T+1, S],
  ``actions`` [T, A], ``rewards``, ``terminations``, ``truncations`` [T]. Box observations
  and actions only; the final observation (the state after the last action) is dropped.

What the sources do not say is given by the caller and checked: the control dt (seconds
between samples; required: it becomes the engine's control dt), the robot / system name and
the state, action and condition names (default: numbered ``obs0..``, ``act0..``,
``cond0..``). Data without conditions gets one constant condition column named
``none`` (0 everywhere): an engine trained on it is planned with condition [0]. Data without
costs is written without them (``DatasetWriter(costs=False)``; what costs feed is in the
``dataset.py`` docstring).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.dataset import DatasetError, DatasetWriter, Episode, _h5py

NO_CONDITION = "none"  # the constant condition column written when the data has none
FLAT_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "conditions", "costs")


def read_flat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The D4RL-style arrays of an ``.npz`` or HDF5 file (only the keys in ``FLAT_KEYS``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"source file not found: {p}")
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in FLAT_KEYS if k in z.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{p}: not a readable .npz file ({exc})") from exc
    h5py = _h5py()
    try:
        with h5py.File(p, "r") as f:
            return {k: np.asarray(f[k][()]) for k in FLAT_KEYS if k in f and isinstance(f[k], h5py.Dataset)}
    except OSError as exc:
        raise DatasetError(f"{p}: neither .npz nor a readable HDF5 file ({exc})") from exc


def split_flat(arrays: Mapping[str, np.ndarray], tail: str = "timeout") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Flat arrays -> episodes (dicts of per-episode arrays + ``terminal``), and a report."""
    if tail not in ("timeout", "drop"):
        raise DatasetError(f"tail must be 'timeout' or 'drop', got {tail!r}")
    missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in arrays]
    if missing:
        raise DatasetError(f"the source lacks {missing} (D4RL keys: observations, actions, rewards, "
                           "terminals, timeouts; optional conditions, costs)")
    obs = np.asarray(arrays["observations"], np.float32)
    n = obs.shape[0] if obs.ndim >= 1 else 0
    if obs.ndim != 2 or n == 0:
        raise DatasetError(f"observations must be [N, S] with N > 0, got shape {obs.shape}")

    def col(key: str, dtype: Any, width: bool) -> np.ndarray | None:
        if key not in arrays:
            return None
        v = np.asarray(arrays[key])
        if v.shape[0] != n:
            raise DatasetError(f"{key} has {v.shape[0]} rows, observations {n}")
        if width:  # [N] -> [N, 1]
            v = v.reshape(n, -1)
        elif v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if not width and v.ndim != 1:
            raise DatasetError(f"{key} must be [N], got shape {v.shape}")
        return v.astype(dtype)

    act = col("actions", np.float32, True)
    rew = col("rewards", np.float32, False)
    term = col("terminals", bool, False)
    tout = col("timeouts", bool, False)
    cond = col("conditions", np.float32, True)
    cost = col("costs", np.float32, False)
    assert act is not None and rew is not None and term is not None
    if tout is None:
        tout = np.zeros(n, bool)
    ends = np.flatnonzero(term | tout) + 1
    report: dict[str, Any] = {"samples_in": int(n), "timeouts_given": "timeouts" in arrays,
                              "conditions_given": cond is not None, "costs_given": cost is not None}
    tail_n = n - (int(ends[-1]) if ends.size else 0)
    if tail_n and tail == "timeout":
        ends = np.append(ends, n)
    report.update(tail_samples=int(tail_n), tail=("closed as a timeout" if tail == "timeout" else "dropped")
                  if tail_n else "none")
    episodes: list[dict[str, Any]] = []
    start = 0
    for e in ends:
        s = slice(start, int(e))
        episodes.append({"observations": obs[s], "actions": act[s], "rewards": rew[s],
                         "conditions": None if cond is None else cond[s],
                         "costs": None if cost is None else cost[s], "terminal": bool(term[int(e) - 1])})
        start = int(e)
    if not episodes:
        raise DatasetError("no complete episode in the source (no terminal or timeout flag, and tail='drop')")
    return episodes, report


def read_minari(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Episodes of a Minari dataset stored as HDF5 (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "data" / "main_data.hdf5", p / "main_data.hdf5"):
            if cand.is_file():
                p = cand
                break
        else:
            raise DatasetError(f"{path}: no data/main_data.hdf5 here (Minari datasets in the Arrow "
                               "format are not read: load them with minari and save flat arrays)")
    h5py = _h5py()
    episodes: list[dict[str, Any]] = []
    try:
        with h5py.File(p, "r") as f:
            names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
            if not names:
                raise DatasetError(f"{p}: no episode_<i> groups: not a Minari HDF5 file")
            for k in names:
                g = f[k]
                if not isinstance(g.get("observations"), h5py.Dataset) or not isinstance(g.get("actions"), h5py.Dataset):
                    raise DatasetError(f"{p}: {k} has Dict/Tuple observations or actions; only Box "
                                       "spaces can be imported (flatten them first)")
                o = np.asarray(g["observations"][()], np.float32)
                a = np.asarray(g["actions"][()], np.float32)
                T = a.shape[0]
                if o.shape[0] != T + 1:
                    raise DatasetError(f"{p}: {k}: {o.shape[0]} observations for {T} actions (expected T + 1)")
                term = np.asarray(g["terminations"][()], bool).reshape(-1)
                episodes.append({"observations": o[:T].reshape(T, -1), "actions": a.reshape(T, -1),
                                 "rewards": np.asarray(g["rewards"][()], np.float32).reshape(-1),
                                 "conditions": None, "costs": None, "terminal": bool(T and term[-1])})
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise DatasetError(f"{p}: not a readable HDF5 file ({exc})") from exc
    report = {"samples_in": int(sum(len(e["actions"]) for e in episodes)), "source_format": "minari",
              "minari_attrs": {k: str(v)[:200] for k, v in attrs.items()}}
    return [e for e in episodes if len(e["actions"])], report


def _names(given: Sequence[str] | None, n: int, prefix: str, what: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = [str(x).strip() for x in given]
    if len(names) != n:
        raise DatasetError(f"{len(names)} {what} names given for {n} columns in the data")
    if len(set(names)) != n or not all(names):
        raise DatasetError(f"{what} names must be distinct and non-empty: {names}")
    return names


def write_episodes(episodes: list[dict[str, Any]], out: str | os.PathLike, *, dt: float, robot: str,
                   state_names: Sequence[str] | None = None, action_names: Sequence[str] | None = None,
                   condition_names: Sequence[str] | None = None,
                   provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write episodes (``split_flat`` / ``read_minari`` dicts) as a new dataset file."""
    outp = Path(out)
    if outp.exists():
        raise DatasetError(f"{outp} exists: importing never appends to or overwrites a dataset")
    if not robot:
        raise DatasetError("give the system's name (robot): it is recorded in the dataset and the engines")
    S, A = episodes[0]["observations"].shape[1], episodes[0]["actions"].shape[1]
    has_cond = episodes[0]["conditions"] is not None
    C = episodes[0]["conditions"].shape[1] if has_cond else 1
    has_costs = episodes[0]["costs"] is not None
    sn, an = _names(state_names, S, "obs", "state"), _names(action_names, A, "act", "action")
    if has_cond:
        cn = _names(condition_names, C, "cond", "condition")
    else:
        if condition_names not in (None, [], [NO_CONDITION]):
            raise DatasetError(f"condition names given but the data has no conditions: {list(condition_names or [])}")
        cn = [NO_CONDITION]
    n_term = 0
    with DatasetWriter(outp, sn, an, cn, dt, robot=robot, costs=has_costs,
                       provenance={"importer": "planner_runtime.dataset_import", **dict(provenance or {})}) as w:
        for i, e in enumerate(episodes):
            T = len(e["actions"])
            cond = e["conditions"] if has_cond else np.zeros((T, 1), np.float32)
            try:
                w.append(Episode(e["observations"], e["actions"], cond, e["rewards"],
                                 e["costs"] if has_costs else None, e["terminal"]))
            except DatasetError as exc:
                raise DatasetError(f"episode {i} (samples {sum(len(x['actions']) for x in episodes[:i])}..): {exc}") from exc
            n_term += bool(e["terminal"])
    lengths = [len(e["actions"]) for e in episodes]
    return {"out": str(outp), "episodes": len(episodes), "samples": int(sum(lengths)),
            "terminal_episodes": n_term, "episode_length": {"min": int(min(lengths)), "max": int(max(lengths)),
                                                            "mean": float(np.mean(lengths))},
            "dims": {"S": S, "A": A, "C": C}, "dt": float(dt), "robot": robot,
            "state_names": sn, "action_names": an, "condition_names": cn,
            "costs": has_costs, "conditions": "from the data" if has_cond else f"none: one constant column {NO_CONDITION!r} = 0"}


def import_dataset(src: str | os.PathLike, out: str | os.PathLike, *, dt: float, robot: str,
                   source_format: str = "auto", tail: str = "timeout",
                   state_names: Sequence[str] | None = None, action_names: Sequence[str] | None = None,
                   condition_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Import ``src`` (flat arrays or Minari, ``source_format`` "flat" | "minari" | "auto")
    into a new dataset file ``out``; returns a report (episodes, samples, names, ...)."""
    from planner_runtime.dataset import file_sha256

    p = Path(src)
    fmt = source_format
    if fmt == "auto":
        fmt = "minari" if p.is_dir() or p.name == "main_data.hdf5" else "flat"
        if fmt == "flat" and p.suffix in (".h5", ".hdf5") and p.is_file():
            h5py = _h5py()
            try:
                with h5py.File(p, "r") as f:
                    fmt = "minari" if any(k.startswith("episode_") for k in f) else "flat"
            except OSError as exc:
                raise DatasetError(f"{p}: not a readable HDF5 file ({exc})") from exc
    if fmt == "flat":
        episodes, report = split_flat(read_flat(p), tail=tail)
        report["source_format"] = "flat (D4RL keys)"
    elif fmt == "minari":
        episodes, report = read_minari(p)
    else:
        raise DatasetError(f"unknown source format {source_format!r}; expected flat, minari or auto")
    sha = file_sha256(p) if p.is_file() else None
    written = write_episodes(episodes, out, dt=dt, robot=robot, state_names=state_names,
                             action_names=action_names, condition_names=condition_names,
                             provenance={"source": str(p), "source_sha256": sha,
                                         "source_format": report["source_format"],
                                         "import_report": json.loads(json.dumps(report, default=str))})
    return {**report, **written}
