"""The on-disk trajectory dataset format (HDF5, D4RL-style keys) and its validating reader.

Nothing here is Go2-specific: any robot or system with a file in this format can be
trained, exported and served. Layout of a file::

    attrs:  format = "planner-runtime-dataset", format_version = 1,
            state_names, action_names, condition_names (JSON lists; their lengths are S, A, C),
            dt (s), robot, committed (number of samples in complete episodes),
            provenance (JSON object: collector, config, versions, seeds, ...),
            action_semantics (optional JSON object: what an action means on the robot, e.g.
            joint_names, default_joint_pos, scale, kp, kd; engines inherit it)
    observations [N, S] float32   state x_t (from the observation builder)
    actions      [N, A] float32   action u_t applied at x_t (the clean label)
    conditions   [N, C] float32   condition y_t (e.g. the velocity command)
    rewards      [N]    float32
    costs        [N]    float32   optional (absent: read as zeros, ``Dataset.has_costs`` False)
    terminals    [N]    bool      the episode ended in failure after this step
    timeouts     [N]    bool      the episode was cut (time limit) after this step
    raw/<name>   [N, ...]         optional raw robot fields (IMU, motor q/dq/tau, ...)

What rewards and costs feed: MPDiffuser's ranker learns per-step reward and cost heads from
them (``export/train/mpdiffuser.py``); with N > 1 samples an engine keeps the candidates whose
predicted discounted cost is within the budget (``--knob budget=...``, default 10) and picks
the highest predicted return among them. Data without costs trains a cost head that predicts
0: every candidate is within budget and the ranking is by predicted return alone. Rewards
also feed the "return" condition extra, DADP's value model and DMEMM's weights. With one
sample (N = 1, the default) neither is used at run time.

Every episode ends with a sample whose terminal or timeout flag is set. Writers append
whole episodes and only then advance ``committed``; a reader ignores anything past it, so
an interrupted append never corrupts the episodes written before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "planner-runtime-dataset"
FORMAT_VERSION = 1
CORE_KEYS = ("observations", "actions", "conditions", "rewards", "costs", "terminals", "timeouts")
OPTIONAL_KEYS = ("costs",)  # may be absent from a file (read as zeros)


class DatasetError(ValueError):
    """A dataset file is missing, corrupt, or does not match what the caller expects."""


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # the onboard install (no extras) has no h5py
        raise DatasetError(
            "reading or writing datasets needs h5py, which the onboard install leaves out: "
            "pip install 'planner-runtime[train]' (or [sim]), or pip install h5py") from exc
    return h5py


@dataclass
class Episode:
    observations: np.ndarray  # [T, S]
    actions: np.ndarray  # [T, A]
    conditions: np.ndarray  # [T, C]
    rewards: np.ndarray  # [T]
    costs: np.ndarray | None  # [T]; None for a file written without costs
    terminal: bool = False  # ended in failure (else: timeout)
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.observations.shape[0])


@dataclass
class Dataset:
    observations: np.ndarray
    actions: np.ndarray
    conditions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    state_names: list[str]
    action_names: list[str]
    condition_names: list[str]
    dt: float
    robot: str
    provenance: dict[str, Any]
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    action_semantics: dict[str, Any] | None = None
    has_costs: bool = True  # False: the file has no costs (``costs`` holds zeros)

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.observations.shape[1], self.actions.shape[1], self.conditions.shape[1]

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    def episode_bounds(self) -> np.ndarray:
        """[E, 2] array of (start, stop) sample indices, one row per episode."""
        ends = np.flatnonzero(self.terminals | self.timeouts) + 1
        starts = np.concatenate([[0], ends[:-1]])
        return np.stack([starts, ends], axis=1).astype(np.int64)

    def episodes(self) -> Iterator[Episode]:
        for s, e in self.episode_bounds():
            yield Episode(
                self.observations[s:e], self.actions[s:e], self.conditions[s:e],
                self.rewards[s:e], self.costs[s:e], bool(self.terminals[e - 1]),
                {k: v[s:e] for k, v in self.raw.items()},
            )


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of episode indices into (train, val); train keeps at least one episode."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(val_fraction * n_episodes))
    n_val = min(n_val, n_episodes - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


class DatasetWriter:
    """Appends whole episodes to a dataset file; creates it or resumes an existing one.

    Resuming checks that names and dt agree with the file; samples past ``committed``
    (an append that was interrupted) are discarded before new episodes are written.
    ``costs=False`` writes a file without a costs array (episodes then carry ``costs=None``).
    """

    def __init__(self, path: str | os.PathLike, state_names: list[str], action_names: list[str],
                 condition_names: list[str], dt: float, robot: str = "",
                 provenance: Mapping[str, Any] | None = None, raw_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 action_semantics: Mapping[str, Any] | None = None, costs: bool = True):
        h5py = _h5py()
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            dt = float("nan")
        if not (np.isfinite(dt) and dt > 0):
            raise DatasetError(f"{path}: dt must be a finite number of seconds > 0")
        self.path = Path(path)
        self._raw_shapes = dict(raw_shapes or {})
        names = {"state_names": list(state_names), "action_names": list(action_names),
                 "condition_names": list(condition_names)}
        if self.path.exists():
            self._f = h5py.File(self.path, "a")
            _check_header(self._f, str(self.path))
            for k, v in names.items():
                have = json.loads(self._f.attrs[k])
                if have != v:
                    raise DatasetError(f"{self.path}: cannot append, {k} differ: file {have} vs {v}")
            if abs(float(self._f.attrs["dt"]) - dt) > 1e-9:
                raise DatasetError(f"{self.path}: cannot append, dt {self._f.attrs['dt']} != {dt}")
            have_sem = json.loads(self._f.attrs.get("action_semantics", "null"))
            want_sem = None if action_semantics is None else json.loads(json.dumps(dict(action_semantics)))
            if have_sem != want_sem:
                raise DatasetError(f"{self.path}: cannot append, action semantics differ: file {have_sem} vs {want_sem}")
            if ("costs" in self._f) != bool(costs):
                raise DatasetError(f"{self.path}: cannot append, the file {'has' if 'costs' in self._f else 'has no'} "
                                   f"costs and the writer was opened with costs={costs}")
            n = int(self._f.attrs["committed"])
            for k in CORE_KEYS:
                if k in self._f:
                    self._f[k].resize(n, axis=0)
            if "raw" in self._f:
                for k in self._f["raw"]:
                    self._f["raw"][k].resize(n, axis=0)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = h5py.File(self.path, "w")
            f = self._f
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            for k, v in names.items():
                f.attrs[k] = json.dumps(v)
            f.attrs["dt"] = float(dt)
            f.attrs["robot"] = robot
            f.attrs["provenance"] = json.dumps(dict(provenance or {}))
            if action_semantics is not None:
                f.attrs["action_semantics"] = json.dumps(dict(action_semantics))
            f.attrs["committed"] = 0
            S, A, C = len(state_names), len(action_names), len(condition_names)
            for k, shape, dtype in (("observations", (S,), "f4"), ("actions", (A,), "f4"),
                                    ("conditions", (C,), "f4"), ("rewards", (), "f4"),
                                    ("costs", (), "f4"), ("terminals", (), "?"), ("timeouts", (), "?")):
                if k == "costs" and not costs:
                    continue
                f.create_dataset(k, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(4096, *shape), compression="lzf")
            if self._raw_shapes:
                g = f.create_group("raw")
                for k, raw_shape in self._raw_shapes.items():
                    g.create_dataset(k, shape=(0, *raw_shape), maxshape=(None, *raw_shape), dtype="f4",
                                     chunks=(4096, *raw_shape), compression="lzf")
            f.flush()

    @property
    def committed(self) -> int:
        return int(self._f.attrs["committed"])

    def update_provenance(self, **items: Any) -> None:
        prov = json.loads(self._f.attrs["provenance"])
        prov.update(items)
        self._f.attrs["provenance"] = json.dumps(prov)

    def append(self, ep: Episode) -> None:
        T = len(ep)
        if T == 0:
            raise DatasetError("cannot append an empty episode")
        f = self._f
        cols = {"observations": ep.observations, "actions": ep.actions, "conditions": ep.conditions,
                "rewards": ep.rewards}
        if "costs" in f:
            if ep.costs is None:
                raise DatasetError("episode has no costs but the file records them")
            cols["costs"] = ep.costs
        elif ep.costs is not None and np.any(np.asarray(ep.costs) != 0):
            raise DatasetError("episode has costs but the file was created without them (costs=False)")
        for k, v in cols.items():
            want = f[k].shape[1:]
            v = np.asarray(v)
            if v.shape != (T, *want):
                raise DatasetError(f"episode {k} has shape {v.shape}, expected {(T, *want)}")
            if not np.all(np.isfinite(v)):
                raise DatasetError(f"episode {k} contains NaN or inf")
        term = np.zeros(T, bool)
        tout = np.zeros(T, bool)
        (term if ep.terminal else tout)[-1] = True
        cols.update(terminals=term, timeouts=tout)
        n = self.committed
        for k, v in cols.items():
            f[k].resize(n + T, axis=0)
            f[k][n:] = v
        if "raw" in f:
            for k in f["raw"]:
                if k not in ep.raw:
                    raise DatasetError(f"episode lacks raw field {k!r} that the file records")
                v = np.asarray(ep.raw[k], dtype=np.float32)
                if v.shape != (T, *f["raw"][k].shape[1:]):
                    raise DatasetError(f"raw/{k} has shape {v.shape}, expected {(T, *f['raw'][k].shape[1:])}")
                f["raw"][k].resize(n + T, axis=0)
                f["raw"][k][n:] = v
        f.flush()
        f.attrs["committed"] = n + T  # last: an interrupted append stays invisible
        f.flush()

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_header(f: Any, where: str) -> None:
    if f.attrs.get("format") != FORMAT:
        raise DatasetError(f"{where}: not a planner-runtime dataset (format attr {f.attrs.get('format')!r})")
    ver = int(f.attrs.get("format_version", -1))
    if ver != FORMAT_VERSION:
        raise DatasetError(f"{where}: unsupported dataset format_version {ver} (this reader knows {FORMAT_VERSION})")
    for k in ("state_names", "action_names", "condition_names", "dt", "committed"):
        if k not in f.attrs:
            raise DatasetError(f"{where}: missing attribute {k!r}")
    for k in CORE_KEYS:
        if k not in f and k not in OPTIONAL_KEYS:
            raise DatasetError(f"{where}: missing dataset {k!r}")


def load_dataset(path: str | os.PathLike, *, expect_dims: tuple[int, int, int] | None = None,
                 load_raw: bool = True, checksum: bool = True) -> Dataset:
    """Read and validate a dataset file. Raises DatasetError with the reason on any problem."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file not found: {p}")
    h5py = _h5py()
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DatasetError(f"{p}: not a readable HDF5 file ({exc})") from exc
    try:
        with f:
            _check_header(f, str(p))
            n = int(f.attrs["committed"])
            names = {k: json.loads(f.attrs[k]) for k in ("state_names", "action_names", "condition_names")}
            arrays: dict[str, Any] = {}
            has_costs = "costs" in f
            for k in CORE_KEYS:
                if k not in f:  # optional (costs): zeros
                    arrays[k] = np.zeros(n, np.float32)
                    continue
                if f[k].shape[0] < n:
                    raise DatasetError(f"{p}: {k} has {f[k].shape[0]} rows, fewer than committed {n}")
                arrays[k] = f[k][:n]
            raw = {}
            if load_raw and "raw" in f:
                raw = {k: f["raw"][k][:n] for k in f["raw"]}
            attrs = dict(dt=float(f.attrs["dt"]), robot=str(f.attrs.get("robot", "")),
                         provenance=json.loads(f.attrs.get("provenance", "{}")),
                         action_semantics=json.loads(f.attrs.get("action_semantics", "null")))
    except DatasetError:
        raise
    except Exception as exc:  # h5py raises many types for corrupt files
        raise DatasetError(f"{p}: corrupt or unreadable dataset ({type(exc).__name__}: {exc})") from exc
    S, A, C = (len(names[k]) for k in ("state_names", "action_names", "condition_names"))
    for k, d in (("observations", S), ("actions", A), ("conditions", C)):
        if arrays[k].ndim != 2 or arrays[k].shape[1] != d:
            raise DatasetError(f"{p}: {k} has shape {arrays[k].shape}, expected (N, {d}) from its names")
    for k in ("rewards", "costs", "terminals", "timeouts"):
        if arrays[k].shape != (n,):
            raise DatasetError(f"{p}: {k} has shape {arrays[k].shape}, expected ({n},)")
    for k in ("observations", "actions", "conditions", "rewards", "costs"):
        if not np.all(np.isfinite(arrays[k])):
            raise DatasetError(f"{p}: {k} contains NaN or inf")
    if n == 0:
        raise DatasetError(f"{p}: dataset holds no complete episode")
    ends = arrays["terminals"] | arrays["timeouts"]
    if not ends[-1]:
        raise DatasetError(f"{p}: the last committed sample does not end an episode")
    if expect_dims is not None and (S, A, C) != tuple(expect_dims):
        raise DatasetError(f"{p}: dims (S, A, C) = {(S, A, C)} do not match expected {tuple(expect_dims)}")
    return Dataset(**arrays, **{k: names[k] for k in names}, **attrs, raw=raw, path=str(p),
                   sha256=file_sha256(p) if checksum else None, has_costs=has_costs)
