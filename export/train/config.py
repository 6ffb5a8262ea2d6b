"""Training configuration: defaults, JSON config files and ``--set key=value`` overrides.

A config is a plain dict (stored verbatim in every checkpoint). Top-level keys apply to all
components of a method; a section named after a component (``"planner"``, ``"dynamics"``,
``"ranker"``, ...) overrides them for that component only, e.g.::

    {"steps": 20000, "model": {"dim": 32, "mults": [1, 2]},
     "ranker": {"steps": 5000, "batch_size": 256, "model": {"hidden": [128, 128]}}}

Overrides use dotted keys and JSON values (bare words are strings):
``--set model.dim=64 --set ranker.steps=2000 --set cond_extras='["return"]'``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from export.train.loop import LOOP_DEFAULTS

DEFAULTS: dict[str, Any] = {
    **LOOP_DEFAULTS,
    # data
    "horizon": 16, "normalizer": "minmax", "cond_normalizer": None, "val_fraction": 0.1,
    "cond_extras": [], "gamma": 0.997, "return_scale": None,
    # samples before a fall (terminal episodes) that start no training window: the expert's
    # last steps into a fall are not behaviour to plan (the normalizers still see them)
    "fall_cut": 0,
    # diffusion
    "num_levels": 10, "schedule": "cosine", "cond_dropout": 0.25, "first_action_weight": 10.0,
    # what the planner / dynamics networks predict: "x0" (the clean trajectory) or "eps" (the
    # noise). On the Go2 data x0 prediction cut the planner's one-step state error from 0.51
    # to 0.09 (normalized units; "no change" scores 0.19) and closed-loop tracking RMSE from
    # 0.158 to 0.047 m/s: eps networks gave useless x0 estimates at the high noise levels a
    # 10-level warm-started sampler lives in (sqrt(alpha_bar) = 0.45 at level 7, 0.005 at 10)
    "prediction": "x0",
    # networks: the Go2 default is sized for a fused 7-step MPDiffuser plan (2 networks per
    # step, CFG batch 2) on a CPU: about 0.29 M parameters each. SiLU instead of Mish because
    # ONNX Runtime fuses x * sigmoid(x) into one kernel while Mish runs as softplus, tanh and
    # mul: the fused plan ran about 2x faster on ORT CPU (measurements in the training note).
    # x_0 also enters as input channels (x0_channels) and kernel 3 keeps the fused MPDiffuser
    # plan (2 networks x 7 steps x CFG batch 2) within the CPU latency budget.
    "model": {"dim": 32, "mults": [1, 2], "blocks_per_level": 1, "mid_blocks": 1, "act": "silu",
              "kernel": 3, "x0_channels": True},
    # which components to train (None: all of the method's, in order)
    "components": None,
    "ranker": {"steps": 5000, "batch_size": 256, "lr": 1e-3,
               "model": {"hidden": [128, 128], "act": "mish"}},
    # the real-time chunking forecaster (export/models/forecaster.py): small and quick
    "forecaster": {"steps": 6000, "batch_size": 512, "lr": 1e-3, "forecast_steps": 4,
                   "model": {"hidden": [256, 256], "act": "silu"}},
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path | None) -> dict[str, Any]:
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
    return cfg


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: dict[str, Any], items: Iterable[str]) -> dict[str, Any]:
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


def component_config(cfg: dict[str, Any], name: str, sections: Iterable[str]) -> dict[str, Any]:
    """Top-level keys (minus every component section) merged with the ``name`` section."""
    secs = set(sections)
    base = {k: v for k, v in cfg.items() if k not in secs}
    return deep_merge(base, cfg.get(name) or {})
