"""The checkpoint format: one torch file per trained network (component).

A checkpoint is ``torch.save`` of a dict holding only plain types and tensors, so it loads
with ``torch.load(path, weights_only=True)`` (no pickled classes, no code execution)::

    format          "planner-runtime-checkpoint"
    format_version  1
    method          e.g. "mpdiffuser"
    component       e.g. "planner", "dynamics", "ranker"  (file name: <out>/<component>.pt)
    model_class     a key of MODEL_CLASSES ("TemporalUnet", "RankerNet", "MLP", ...)
    model_config    constructor kwargs: MODEL_CLASSES[model_class](**model_config)
    dims            {"S", "A", "C", "H"}
    schedule        {"num_levels": K, "kind": "cosine" | "linear"}
    normalizers     {"traj": {kind, shift[S+A], scale[S+A]}, "cond": {kind, shift[C], scale[C]}}
    config          the full training config (dict; ``steps`` is the run's total, ``run_id``
                    the training run that saved it: ``export`` refuses unfinished ones)
    step            optimizer steps taken
    model           state_dict of the trained weights
    ema             state_dict of the EMA weights (use these for evaluation and export)
    optimizer       AdamW state_dict (resume)
    dataset         {"path", "sha256", "train_windows", "val_windows", "action_semantics",
                     "dt", "robot", "state_names", "action_names", "condition_names",
                     "has_costs"}  (export.data.WindowData.provenance; older ones lack some)
    versions        {"torch", "python", "planner_runtime"}
    history         list of logged metric rows (also in metrics.jsonl)

Other helpers' model classes register with ``register_model_class``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.data import Normalizers

FORMAT = "planner-runtime-checkpoint"
FORMAT_VERSION = 1

MODEL_CLASSES: dict[str, type[nn.Module]] = {}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not what the caller expects."""


def register_model_class(cls: type[nn.Module], name: str | None = None) -> type[nn.Module]:
    """Make ``cls`` loadable from checkpoints (it must have ``config() -> dict`` of kwargs)."""
    MODEL_CLASSES[name or cls.__name__] = cls
    return cls


def _register_builtin() -> None:
    from export.models.forecaster import ForecasterNet
    from export.models.mlp import MLP
    from export.models.unet import TemporalUnet
    from export.sampling.mpdiffuser import RankerNet

    for c in (TemporalUnet, RankerNet, MLP, ForecasterNet):
        MODEL_CLASSES.setdefault(c.__name__, c)


def versions() -> dict[str, str]:
    try:
        from importlib.metadata import version
        pr = version("planner-runtime")
    except Exception:  # not installed: still loadable
        pr = "unknown"
    return {"torch": str(torch.__version__), "python": platform.python_version(), "planner_runtime": pr}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write atomically (tmp file + rename), so an interrupted save never corrupts a resume."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, p)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a planner-runtime checkpoint")
    if ck.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: unsupported checkpoint format_version {ck.get('format_version')}")
    ck["_path"] = str(p)
    return ck


def new_model(name: str, config: dict[str, Any], where: Any = None) -> nn.Module:
    """A network of model class ``name`` built with ``config`` (its initial weights)."""
    _register_builtin()
    if name not in MODEL_CLASSES:
        raise CheckpointError(f"unknown model class {name!r} in {where}; known: {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[name](**config)


def build_model(ck: dict[str, Any], ema: bool = True) -> nn.Module:
    """Rebuild the network of a checkpoint with its EMA (default) or raw weights, eval mode."""
    m = new_model(ck["model_class"], ck["model_config"], ck.get("_path"))
    m.load_state_dict(ck["ema" if ema else "model"])
    prediction = ck.get("prediction", "eps")
    if prediction == "x0":  # samplers speak eps: convert the clean-trajectory prediction
        from export.sampling.common import EpsFromX0

        return EpsFromX0(m, int(ck["schedule"]["num_levels"]), str(ck["schedule"]["kind"])).eval()
    if prediction != "eps":
        raise CheckpointError(f"unknown prediction {prediction!r} in {ck.get('_path')}; "
                              "expected 'eps' or 'x0'")
    return m.eval()


def normalizers(ck: dict[str, Any]) -> Normalizers:
    return Normalizers.from_dict(ck["normalizers"])


def sampler_kwargs(ck: dict[str, Any]) -> dict[str, Any]:
    """The DiffusionSampler constructor kwargs a checkpoint implies (norms, dims, schedule)."""
    d = ck["dims"]
    return {"norms": normalizers(ck), "S": int(d["S"]), "A": int(d["A"]), "C": int(d["C"]),
            "H": int(d["H"]), "num_levels": int(ck["schedule"]["num_levels"]),
            "schedule": str(ck["schedule"]["kind"])}


def check_compatible(cks: dict[str, dict[str, Any]]) -> None:
    """Components composed at sampling time must share dims, schedule and normalizers."""
    items = list(cks.items())
    ref_name, ref = items[0]
    for name, ck in items[1:]:
        for key in ("dims", "normalizers"):
            if ck[key] != ref[key]:
                raise CheckpointError(f"{key} of {name!r} ({ck.get('_path')}) differ from "
                                      f"{ref_name!r} ({ref.get('_path')}): train them on the same "
                                      "dataset split and config")
        if "schedule" in ck and "schedule" in ref and ck["schedule"] != ref["schedule"]:
            raise CheckpointError(f"schedule of {name!r} {ck['schedule']} differs from "
                                  f"{ref_name!r} {ref['schedule']}")
