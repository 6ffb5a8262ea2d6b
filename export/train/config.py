"""Training configuration: typed dataclasses, JSON config files and ``--set key=value`` overrides.

The config is a :class:`TrainConfig`: the top-level fields apply to every component of a
method; a section named after a component (``"planner"``, ``"dynamics"``, ``"ranker"``, ...)
overrides any of them (and any part of ``model``) for that component only, e.g.::

    {"steps": 20000, "model": {"dim": 32, "mults": [1, 2]},
     "ranker": {"steps": 5000, "batch_size": 256, "model": {"hidden": [128, 128]}}}

:func:`component_config` merges a section into the top level: the :class:`ComponentConfig`
a component trains with (and stores, as a plain dict, in its checkpoint's ``config``).

Overrides use dotted keys and JSON values (bare words are strings):
``--set model.dim=64 --set ranker.steps=2000 --set cond_extras='["return"]'``.

Every key is checked (``planner_runtime/config.py``): an unknown key anywhere (top level, a
section, ``model``), in a file or in a ``--set``, is refused with an error naming it, where it
was and the close match (a typo), instead of being dropped; a value must have the field's type.
A new method's component needs its section here (:data:`SECTIONS`) to be configurable.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from planner_runtime.config import check_mapping, from_mapping, overrides, to_dict


@dataclass
class ModelConfig:
    """Network sizes. A component reads the keys of its own network and ignores the rest.

    The Go2 default is sized for a fused 7-step MPDiffuser plan (2 networks per step, CFG
    batch 2) on a CPU: about 0.29 M parameters each. SiLU instead of Mish because ONNX
    Runtime fuses x * sigmoid(x) into one kernel while Mish runs as softplus, tanh and mul:
    the fused plan ran about 2x faster on ORT CPU (measurements in the training note). x_0
    also enters as input channels (x0_channels) and kernel 3 keeps the fused MPDiffuser plan
    (2 networks x 7 steps x CFG batch 2) within the CPU latency budget.
    """

    # TemporalUnet (planner, dynamics; export/models/unet.py)
    dim: int = 32
    mults: list[int] = field(default_factory=lambda: [1, 2])
    blocks_per_level: int = 1
    mid_blocks: int = 1
    emb_dim: int | None = None
    kernel: int = 3
    groups: int = 8
    act: str = "silu"  # every network's activation
    x0_channels: bool = True
    # MLPs (ranker, forecaster, the DADP / DMEMM models); None: the network's own default
    hidden: list[int] | None = None
    latent: int = 32  # InverseDynamicsVAE (dadp_i)
    beta: float = 0.5
    ensemble: int = 1  # GaussianTransition (dmemm)
    min_logstd: float = -3.0
    max_logstd: float = 0.5
    # ForecasterNet's output scale per state dimension; None: the spread of the data's one-step
    # changes (a fine-tune, --init-from, takes the checkpoint's: its weights were trained in it)
    step_scale: list[float] | None = None


@dataclass
class InitFrom:
    """Where a fine-tuned component started (set by ``--init-from``, stored in its config)."""

    path: str
    step: int


@dataclass
class ComponentConfig:
    """What one component trains with: the top-level fields merged with its section."""

    # the training loop (export/train/loop.py)
    steps: int = 20000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_tau: float = 0.005
    ema_every: int = 10
    ema_start: int = 1000
    seed: int = 0
    log_every: int = 50
    val_every: int = 500
    val_batches: int = 4
    ckpt_every: int = 1000
    # data (export/data.py make_windows)
    horizon: int = 16
    normalizer: str = "minmax"
    cond_normalizer: str | None = None
    val_fraction: float = 0.1
    cond_extras: list[str] = field(default_factory=list)
    # the history extras (prev_state, prev_action; last in cond_extras) embedded with x_0 and
    # never replaced by the null token, so CFG extrapolates the command only (TemporalUnet y_state)
    history_with_state: bool = False
    gamma: float = 0.997
    return_scale: float | None = None
    # samples before a fall (terminal episodes) that start no training window: the expert's
    # last steps into a fall are not behaviour to plan (the normalizers still see them)
    fall_cut: int = 0
    # diffusion
    num_levels: int = 10
    schedule: str = "cosine"
    cond_dropout: float = 0.25
    first_action_weight: float = 10.0
    # what the planner / dynamics networks predict: "x0" (the clean trajectory) or "eps" (the
    # noise). On the Go2 data x0 prediction cut the planner's one-step state error from 0.51
    # to 0.09 (normalized units; "no change" scores 0.19) and closed-loop tracking RMSE from
    # 0.158 to 0.047 m/s: eps networks gave useless x0 estimates at the high noise levels a
    # 10-level warm-started sampler lives in (sqrt(alpha_bar) = 0.45 at level 7, 0.005 at 10)
    prediction: str = "x0"
    model: ModelConfig = field(default_factory=ModelConfig)
    # the real-time chunking forecaster (mpdiffuser): steps it is rolled over in training
    forecast_steps: int = 4
    # DMEMM's planner (export/train/dmemm.py); reward_min / max None: the data's range;
    # the environment models from these checkpoints (None: the same run's)
    lambda_tr: float = 0.1
    lambda_rd: float = 0.05
    reward_weighting: bool = True
    reward_min: float | None = None
    reward_max: float | None = None
    transition_checkpoint: str | None = None
    reward_checkpoint: str | None = None
    aux_dir: str | None = None
    # the run: which components to train (None: all of the method's, in order; a list or a
    # comma-separated string), the method and run id (set by the trainer), the fine-tune start
    components: list[str] | str | None = None
    method: str | None = None
    run_id: str | None = None
    init_from: InitFrom | None = None


# the sections a config may hold, one per component name of the registered methods
SECTIONS = ("planner", "dynamics", "ranker", "forecaster", "forward", "inverse", "value",
            "transition", "reward")


@dataclass
class TrainConfig(ComponentConfig):
    """The whole training config: top-level fields plus one override section per component."""

    planner: dict[str, Any] = overrides(ComponentConfig)
    dynamics: dict[str, Any] = overrides(ComponentConfig)
    ranker: dict[str, Any] = overrides(ComponentConfig, lambda: {
        "steps": 5000, "batch_size": 256, "lr": 1e-3, "model": {"hidden": [128, 128], "act": "mish"}})
    # the real-time chunking forecaster (export/models/forecaster.py): small and quick
    forecaster: dict[str, Any] = overrides(ComponentConfig, lambda: {
        "steps": 6000, "batch_size": 512, "lr": 1e-3, "forecast_steps": 4,
        "model": {"hidden": [256, 256], "act": "silu"}})
    forward: dict[str, Any] = overrides(ComponentConfig)
    inverse: dict[str, Any] = overrides(ComponentConfig)
    value: dict[str, Any] = overrides(ComponentConfig)
    transition: dict[str, Any] = overrides(ComponentConfig)
    reward: dict[str, Any] = overrides(ComponentConfig)


# the defaults as a plain dict (what a config file is merged onto)
DEFAULTS: dict[str, Any] = to_dict(TrainConfig())

WHERE = "training config"


def parse(data: dict[str, Any], where: str = WHERE) -> TrainConfig:
    """A complete config (every key checked; missing ones take their defaults)."""
    return from_mapping(TrainConfig, data, where)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path | None) -> dict[str, Any]:
    """A JSON config file as a dict; every key in it checked (a partial config)."""
    if path is None:
        return {}
    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"config file not found: {p}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: a config must be a JSON object")
    return check_mapping(TrainConfig, cfg, str(p))


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: dict[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """``cfg`` with the ``key.sub=value`` overrides applied (plain dicts; checked by
    :func:`user_config`)."""
    out = copy.deepcopy(cfg)
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, val = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        d = out
        for p in parts[:-1]:
            if not isinstance(d.setdefault(p, {}), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
            d = d[p]
        d[parts[-1]] = parse_value(val)
    return out


def user_config(path: str | Path | None, items: Iterable[str]) -> dict[str, Any]:
    """The user's part of a config: the file at ``path`` (if any) with the ``--set`` overrides
    ``items``, each checked where it was written (the file, or ``--set KEY=VALUE``)."""
    cfg = load_config(path)
    for item in items:
        check_mapping(TrainConfig, apply_overrides({}, [item]), f"--set {item}")
    return apply_overrides(cfg, items)


_COMPONENT_FIELDS = tuple(f.name for f in fields(ComponentConfig))


def component_config(cfg: TrainConfig, name: str) -> ComponentConfig:
    """The top-level fields of ``cfg`` merged with its ``name`` section (a component without
    a section of its own: the top level alone)."""
    top = to_dict(cfg)
    base = {k: top[k] for k in _COMPONENT_FIELDS}
    section = top.get(name) if name in SECTIONS else None
    return from_mapping(ComponentConfig, deep_merge(base, section or {}), f"{WHERE} section {name!r}")
