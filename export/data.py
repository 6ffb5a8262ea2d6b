"""Training windows of horizon H from a planner-runtime dataset, and the per-dimension normalizer.

Works for any state, action and condition sizes (S, A, C); nothing here is Go2-specific and
nothing here imports torch (the trainers convert batches to tensors).

Trajectory layout (the engine contract, ``planner_runtime/engine.py``): a window that starts
at sample ``t`` of an episode gives

    x0    [S]        the observed state x_t (conditioning, never part of the trajectory)
    traj  [H, S + A] row i = [x_{t+i+1} (S), u_{t+i} (A)]
    cond  [C]        the condition y_t at x_0 (plus appended extras, see ``cond_extras``)
    rewards, costs [H]  r_{t+i}, c_{t+i} of the pair (x_{t+i}, u_{t+i})
    valid [H]        1 where row i lies inside the episode, 0 in the padding

Every sample of an episode can start a window: episode ends are padded by repeating the last
state / action / condition row (H steps of state, H - 1 of action), so windows near the end
see a robot that holds still (the reference code pads by H - 1 steps the same way). Padded
rewards and costs are 0.

The split is by episode (no window straddles train and val). The normalizer is fitted on the
un-padded samples of the training episodes only and is affine per dimension, so the exporter
can bake it into a graph as ``z = (x - shift) / scale``:

    "std":    shift = mean, scale = std              (no clipping while sampling)
    "minmax": shift = (max + min) / 2, scale = (max - min) / 2   -> data in [-1, 1]
              (x0_hat is clipped to [-1, 1] while sampling)
    "identity": shift 0, scale 1

A dimension that is constant in the data gets scale 1 (not 0) so it maps to 0 and stays finite.

What the dataset says about its system travels with the windows: ``WindowData.provenance()``
(the "dataset" block of every checkpoint) holds the control ``dt``, the ``robot`` name, the
state and action names and the condition names of the networks' C columns (the dataset's,
then each extra's: ``return_to_go``, ``cost_to_go``, ``prev_<state name>``, ``prev_<action name>``), so
``planner-runtime export`` writes the data's values into the manifest instead of defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from planner_runtime.dataset import Dataset, split_episodes

NORMALIZER_KINDS = ("std", "minmax", "identity")
COND_EXTRAS = ("return", "cost_to_go", "prev_state", "prev_action")
# the extras built from the previous tick at observation time (robot.observation.HISTORY_BLOCKS);
# the others are targets (what the plan should achieve), given at sampling time
HISTORY_EXTRAS = ("prev_state", "prev_action")


@dataclass
class Normalizer:
    """Affine per-dimension normalizer: z = (x - shift) / scale. Plain float32 arrays."""

    kind: str
    shift: np.ndarray  # [D] float32
    scale: np.ndarray  # [D] float32
    # the dimensions that were constant in the fitted data (their scale is the placeholder 1,
    # so shift +/- scale is not their range); () when none or not recorded
    constant: tuple[int, ...] = ()

    @classmethod
    def fit(cls, x: np.ndarray, kind: str = "std", eps: float = 1e-6) -> Normalizer:
        """Fit on samples ``x`` of shape [N, D]."""
        if kind not in NORMALIZER_KINDS:
            raise ValueError(f"unknown normalizer {kind!r}; expected one of {NORMALIZER_KINDS}")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"normalizer needs samples of shape [N>0, D], got {x.shape}")
        if kind == "std":
            shift, scale = x.mean(0), x.std(0)
        elif kind == "minmax":
            lo, hi = x.min(0), x.max(0)
            shift, scale = (hi + lo) / 2.0, (hi - lo) / 2.0
        else:
            shift, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        const = scale < eps
        scale = np.where(const, 1.0, scale)  # constant dims: map to 0, stay finite
        constant = tuple(int(i) for i in np.flatnonzero(const)) if kind != "identity" else ()
        return cls(kind, shift.astype(np.float32), scale.astype(np.float32), constant)

    @property
    def dim(self) -> int:
        return int(self.shift.shape[0])

    @property
    def clip(self) -> float | None:
        """Range to clip normalized predictions to while sampling (None: no clipping)."""
        return 1.0 if self.kind == "minmax" else None

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.shift) / self.scale).astype(np.float32)

    def unnormalize(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, np.float32) * self.scale + self.shift).astype(np.float32)

    def slice(self, start: int, stop: int) -> Normalizer:
        stop = min(stop, self.dim)
        return Normalizer(self.kind, self.shift[start:stop].copy(), self.scale[start:stop].copy(),
                          tuple(i - start for i in self.constant if start <= i < stop))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints load with ``weights_only=True``; manifests are JSON);
        ``constant`` only when some dimension was."""
        d: dict[str, Any] = {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}
        if self.constant:
            d["constant"] = list(self.constant)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(str(d["kind"]), np.asarray(d["shift"], np.float32),
                   np.asarray(d["scale"], np.float32), tuple(int(i) for i in d.get("constant", ())))


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted reward-to-go of one episode: G_t = sum_{j>=t} gamma^(j-t) r_j."""
    out = np.zeros(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


def costs_to_go(costs: np.ndarray, gamma: float, horizon: int) -> np.ndarray:
    """Discounted cost over the next ``horizon`` samples of one episode:
    C_t = sum_{i<horizon} gamma^i c_{t+i} (c_t is the cost of the state tick t led to, so C_t
    covers a plan's H rows). Past the episode's end the last cost repeats (a fall ends tilted
    and stays so; a timeout holds its last state, as the window padding does)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    c = np.asarray(costs, dtype=np.float64)
    if len(c) == 0:
        return np.zeros(0, np.float32)
    padded = np.concatenate([c, np.full(horizon - 1, c[-1])])
    w = gamma ** np.arange(horizon, dtype=np.float64)
    return np.convolve(padded, w[::-1], mode="valid")[:len(c)].astype(np.float32)


@dataclass
class Normalizers:
    """What a model needs to map raw inputs: trajectory rows [S + A] and the condition [C]."""

    traj: Normalizer  # over [x (S), u (A)]; x0 uses its first S dims
    cond: Normalizer

    def to_dict(self) -> dict[str, Any]:
        return {"traj": self.traj.to_dict(), "cond": self.cond.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizers:
        return cls(Normalizer.from_dict(d["traj"]), Normalizer.from_dict(d["cond"]))


class WindowSet:
    """Normalized, padded windows of one split. ``batch(idx)`` gathers by fancy indexing.

    Arrays are stored normalized once, so a batch is a gather (no per-batch arithmetic).
    """

    def __init__(self, episodes: list[dict[str, np.ndarray]], H: int, norms: Normalizers, S: int,
                 fall_cut: int = 0):
        self.H, self.S = H, S
        obs, act, cond, rew, cost, valid, starts = [], [], [], [], [], [], []
        offset = 0
        for ep in episodes:
            T = len(ep["observations"])
            o = np.concatenate([ep["observations"], np.repeat(ep["observations"][-1:], H, 0)])
            a = np.concatenate([ep["actions"], np.repeat(ep["actions"][-1:], H, 0)])
            c = np.concatenate([ep["conditions"], np.repeat(ep["conditions"][-1:], H, 0)])
            z = np.zeros(H, np.float32)
            obs.append(o)
            act.append(a)
            cond.append(c)
            rew.append(np.concatenate([ep["rewards"], z]))
            cost.append(np.concatenate([ep["costs"], z]))
            valid.append(np.concatenate([np.ones(T, np.float32), z]))
            n = max(0, T - fall_cut) if ep.get("terminal") else T
            starts.append(offset + np.arange(n))
            offset += T + H
        if not episodes:
            self.starts = np.zeros(0, np.int64)
            return
        rows = np.concatenate([np.concatenate(obs), np.concatenate(act)], axis=1)
        self.rows = norms.traj.normalize(rows)  # [M, S + A], normalized
        self.cond = norms.cond.normalize(np.concatenate(cond))  # [M, C]
        self.rewards = np.concatenate(rew).astype(np.float32)
        self.costs = np.concatenate(cost).astype(np.float32)
        self.valid = np.concatenate(valid)
        self.starts = np.concatenate(starts).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Windows ``idx`` (indices into ``starts``) -> dict of float32 arrays (normalized).

        x0 [B, S], traj [B, H, S+A], cond [B, C], rewards [B, H], costs [B, H], valid [B, H].
        """
        t = self.starts[np.asarray(idx, np.int64)]
        S, H = self.S, self.H
        ar = np.arange(H)
        x_next = self.rows[(t[:, None] + 1 + ar), :S]  # x_{t+1..t+H}
        u = self.rows[(t[:, None] + ar), S:]  # u_{t..t+H-1}
        return {
            "x0": self.rows[t, :S],
            "traj": np.concatenate([x_next, u], axis=-1),
            "cond": self.cond[t],
            "rewards": self.rewards[t[:, None] + ar],
            "costs": self.costs[t[:, None] + ar],
            "valid": self.valid[t[:, None] + ar],
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty split")
        return self.batch(rng.integers(0, len(self), size=batch_size))


@dataclass
class WindowData:
    """Both splits of a dataset, the fitted normalizers and the dimensions."""

    train: WindowSet
    val: WindowSet
    norms: Normalizers
    S: int
    A: int
    C: int
    H: int
    dataset_sha256: str | None
    dataset_path: str | None
    # raw (un-normalized) per-sample arrays of the training split, for the ranker / aux models
    train_samples: dict[str, np.ndarray]
    val_samples: dict[str, np.ndarray]
    action_semantics: dict[str, Any] | None = None  # the dataset's, carried to the engine
    # what the dataset says about its system, carried through the checkpoint to the engine's
    # manifest (control dt, names, robot): the exporter takes these instead of defaults
    dt: float | None = None
    robot: str | None = None
    state_names: list[str] | None = None
    action_names: list[str] | None = None
    condition_names: list[str] | None = None  # C names: the dataset's, then the extras'
    has_costs: bool = True

    @property
    def D(self) -> int:
        return self.S + self.A

    def provenance(self) -> dict[str, Any]:
        """The checkpoint's "dataset" block (plain types)."""
        return {"path": self.dataset_path, "sha256": self.dataset_sha256,
                "train_windows": len(self.train), "val_windows": len(self.val),
                "action_semantics": self.action_semantics, "dt": self.dt, "robot": self.robot,
                "state_names": self.state_names, "action_names": self.action_names,
                "condition_names": self.condition_names, "has_costs": self.has_costs}


def _episodes(ds: Dataset, cond_extras: tuple[str, ...], gamma: float,
              return_scale: float | None, horizon: int) -> list[dict[str, np.ndarray]]:
    eps = []
    for s, e in ds.episode_bounds():
        ep = {k: np.asarray(getattr(ds, k)[s:e], np.float32)
              for k in ("observations", "actions", "conditions", "rewards", "costs")}
        ep["terminal"] = bool(ds.terminals[e - 1])
        extra = []
        for name in cond_extras:
            if name == "return":
                extra.append(returns_to_go(ep["rewards"], gamma)[:, None])
            elif name == "cost_to_go":
                if not getattr(ds, "has_costs", True):
                    raise ValueError(f"{ds.path}: the cost_to_go condition needs per-step costs; this "
                                     "dataset has none")
                extra.append(costs_to_go(ep["costs"], gamma, horizon)[:, None])
            elif name in HISTORY_EXTRAS:
                # the previous policy tick's state / action label; the first row repeats its own
                # (robot.observation.ConditionBuilder builds the same at run time)
                x = ep["observations" if name == "prev_state" else "actions"]
                extra.append(np.concatenate([x[:1], x[:-1]], axis=0))
            else:
                raise ValueError(f"unknown condition extra {name!r}; expected one of {COND_EXTRAS}")
        if extra:
            ep["conditions"] = np.concatenate([ep["conditions"], *extra], axis=1)
        eps.append(ep)
    if "return" in cond_extras:
        # reference code: returns-to-go divided by the largest episode-start value
        # (by magnitude, so negative-reward tasks keep their sign)
        i = list(cond_extras).index("return")
        col = ds.conditions.shape[1] + sum(extra_width(ds, e) for e in cond_extras[:i])
        scale = return_scale or max(abs(float(ep["conditions"][0, col])) for ep in eps) or 1.0
        for ep in eps:
            ep["conditions"][:, col] /= scale
    return eps


def extra_widths(S: int, A: int) -> dict[str, int]:
    """Columns each condition extra (``COND_EXTRAS``) appends, for state / action dims S, A."""
    return {"return": 1, "cost_to_go": 1, "prev_state": S, "prev_action": A}


def extra_columns(extras: list[str] | tuple[str, ...], S: int, A: int, C: int) -> dict[str, int]:
    """The first condition column of each extra (``extras`` in the training order, appended
    after the dataset's own C - sum(widths) condition columns)."""
    widths = extra_widths(S, A)
    unknown = [e for e in extras if e not in widths]
    if unknown:
        raise ValueError(f"unknown condition extras {unknown}; expected among {sorted(widths)}")
    col = C - sum(widths[e] for e in extras)
    if col < 0:
        raise ValueError(f"condition extras {list(extras)} are wider than the condition ({C})")
    cols = {}
    for e in extras:
        cols[e] = col
        col += widths[e]
    return cols


def extra_width(ds: Dataset, name: str) -> int:
    """Columns a condition extra appends (``COND_EXTRAS``)."""
    S, A, _ = ds.dims
    return extra_widths(S, A)[name]


def extra_names(ds: Dataset, name: str) -> list[str]:
    """Names of the columns a condition extra appends: ``return_to_go``, ``cost_to_go``, ``prev_<state name>``,
    ``prev_<action name>`` (for the Go2 these are robot.observation.HISTORY_BLOCKS' names)."""
    if name == "return":
        return ["return_to_go"]
    if name == "cost_to_go":
        return ["cost_to_go"]
    if name == "prev_state":
        return [f"prev_{n}" for n in ds.state_names]
    if name == "prev_action":
        return [f"prev_{n}" for n in ds.action_names]
    raise ValueError(f"unknown condition extra {name!r}; expected one of {COND_EXTRAS}")


def make_windows(ds: Dataset, horizon: int, *, normalizer: str = "std",
                 cond_normalizer: str | None = None, val_fraction: float = 0.1, seed: int = 0,
                 cond_extras: tuple[str, ...] = (), gamma: float = 0.997,
                 return_scale: float | None = None, norms: Normalizers | None = None,
                 fall_cut: int = 0) -> WindowData:
    """Split ``ds`` by episode, fit normalizers on the train split, build both window sets.

    ``norms`` given (fine-tuning a checkpoint on new data): use those normalizers instead of
    fitting new ones, so the fine-tuned network reads and writes the same units as the
    components it is composed with.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    S, A, C = ds.dims
    eps = _episodes(ds, tuple(cond_extras), gamma, return_scale, horizon)
    C = C + sum(extra_width(ds, e) for e in cond_extras)
    tr_idx, va_idx = split_episodes(len(eps), val_fraction, seed)
    tr = [eps[i] for i in tr_idx]
    va = [eps[i] for i in va_idx]

    def cat(group: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
        return np.concatenate([g[key] for g in group]) if group else np.zeros((0,))

    rows = np.concatenate([cat(tr, "observations"), cat(tr, "actions")], axis=1)
    if norms is None:
        norms = Normalizers(Normalizer.fit(rows, normalizer),
                            Normalizer.fit(cat(tr, "conditions"), cond_normalizer or normalizer))
    elif (norms.traj.dim, norms.cond.dim) != (S + A, C):
        raise ValueError(f"given normalizers cover {norms.traj.dim} trajectory and {norms.cond.dim} "
                         f"condition dims; the dataset has {S + A} and {C}")
    samples = []
    for group in (tr, va):
        samples.append({k: cat(group, k) for k in
                        ("observations", "actions", "conditions", "rewards", "costs")} if group else {})
    if fall_cut < 0:
        raise ValueError(f"fall_cut must be >= 0, got {fall_cut}")
    cond_names = list(ds.condition_names) + [n for e in cond_extras for n in extra_names(ds, e)]
    return WindowData(WindowSet(tr, horizon, norms, S, fall_cut), WindowSet(va, horizon, norms, S, fall_cut), norms,
                      S, A, C, horizon, ds.sha256, ds.path, samples[0], samples[1],
                      ds.action_semantics, dt=float(ds.dt), robot=ds.robot or None,
                      state_names=list(ds.state_names), action_names=list(ds.action_names),
                      condition_names=cond_names, has_costs=bool(getattr(ds, "has_costs", True)))
