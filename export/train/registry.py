"""The method registry the ``train`` CLI uses: method name -> its trainers and its sampler.

``METHODS[name] = MethodSpec(tasks="module:function", sampler="sampling registry name",
defaults={...})``. ``tasks(cfg_for, data) -> list[TrainTask]`` returns the method's
components in training order (``cfg_for(component)`` gives each its merged config);
``defaults`` are the method's config defaults on top of ``config.DEFAULTS``. Entries are
strings imported on first use: adding a method is one entry here, no if/elif anywhere.

:func:`train_method` is the whole pipeline: load the dataset, make windows, train every
selected component into ``out_dir`` (``<component>.pt``, metrics, curves), write
``config.json`` (with the run's ``run_id``, also stored in each checkpoint's config) and
``summary.json``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from export.train.config import (
    DEFAULTS,
    ComponentConfig,
    ModelConfig,
    TrainConfig,
    component_config,
    deep_merge,
    parse,
)
from planner_runtime.config import from_mapping, to_dict


@dataclass
class MethodSpec:
    tasks: str | Callable[..., list]
    sampler: str
    defaults: dict[str, Any] = field(default_factory=dict)
    components: tuple[str, ...] = ()


METHODS: dict[str, MethodSpec] = {
    "mpdiffuser": MethodSpec("export.train.mpdiffuser:tasks", "mpdiffuser",
                             components=("planner", "dynamics", "ranker", "forecaster")),
}


# Modules that register further methods (``register_method``) when imported; imported on
# first lookup so the CLI sees every method without importing them all up front.
PLUGIN_MODULES: tuple[str, ...] = ("export.train.dadp", "export.train.dmemm")
_plugins_loaded = False


def register_method(name: str, spec: MethodSpec) -> None:
    METHODS[name] = spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in PLUGIN_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        _load_plugins()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


def _tasks_fn(spec: MethodSpec) -> Callable[..., list]:
    t = spec.tasks
    if isinstance(t, str):
        mod, fn = t.split(":")
        t = getattr(importlib.import_module(mod), fn)
    return t


def resolve_config(method: str, user_cfg: dict[str, Any]) -> TrainConfig:
    """The defaults, the method's defaults and ``user_cfg`` merged and parsed (every key
    checked: an unknown one raises ``ConfigError``, a ``ValueError``)."""
    spec = method_spec(method)
    return parse(deep_merge(deep_merge(DEFAULTS, spec.defaults), {**user_cfg, "method": method}))


def make_data(cfg: ComponentConfig, data_path: str | Path, norms: Any = None):
    from export.data import make_windows
    from planner_runtime.dataset import load_dataset

    ds = load_dataset(data_path, load_raw=False)
    return make_windows(ds, cfg.horizon, normalizer=cfg.normalizer,
                        cond_normalizer=cfg.cond_normalizer,
                        val_fraction=cfg.val_fraction, seed=cfg.seed,
                        cond_extras=tuple(cfg.cond_extras),
                        gamma=cfg.gamma, return_scale=cfg.return_scale,
                        norms=norms, fall_cut=cfg.fall_cut)


def _init_checkpoints(init_from: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The checkpoints a fine-tune starts from: ``init_from/<component>.pt`` for each name."""
    from export.train.checkpoint import CheckpointError, load_checkpoint

    cks = {}
    for n in names:
        path = Path(init_from) / f"{n}.pt"
        if not path.exists():
            raise CheckpointError(f"--init-from {init_from}: no {n}.pt to fine-tune")
        cks[n] = load_checkpoint(path)
    return cks


_MODEL_KEYS = frozenset(f.name for f in fields(ModelConfig))


def _init_overrides(ck: dict[str, Any]) -> dict[str, Any]:
    """What a fine-tune takes from its checkpoint instead of the config: the architecture,
    the diffusion schedule and what the network predicts (training an eps network with an
    x0 loss, or on another schedule, would silently break it), the forecaster's output scale
    included. The model's constructor arguments that are no config keys (its dims) are left
    out: the data's must match them."""
    model = {k: v for k, v in ck["model_config"].items() if k in _MODEL_KEYS}
    over: dict[str, Any] = {"model": model,
                            "init_from": {"path": str(ck.get("_path")), "step": int(ck["step"])}}
    if "schedule" in ck:
        over.update(num_levels=int(ck["schedule"]["num_levels"]), schedule=str(ck["schedule"]["kind"]))
    if ck.get("model_class") == "TemporalUnet":
        over["prediction"] = str(ck.get("prediction", "eps"))
    return over


def _run_id(out: Path, resume: bool) -> str:
    """This run's id, stored in ``config.json`` and in every checkpoint's config: a checkpoint
    whose id differs from ``config.json``'s was saved by an earlier run (``export`` refuses it
    unless forced). A resumed run keeps the id of the run it continues."""
    if resume:
        try:
            old = json.loads((out / "config.json").read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            old = None
        if isinstance(old, str) and old:
            return old
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def train_method(method: str, cfg: TrainConfig, data_path: str | Path, out_dir: str | Path, *,
                 resume: bool = False, progress: bool = True,
                 init_from: str | Path | None = None) -> dict[str, Any]:
    """Train all (or ``cfg.components``) components of ``method``; ``cfg`` from
    :func:`resolve_config`.

    ``init_from`` (fine-tuning, e.g. the dynamics model on a little data from a changed
    robot): each trained component starts from ``init_from/<component>.pt`` (weights, EMA,
    architecture) with a fresh optimizer and step count, and the data is normalized with
    that checkpoint's normalizers, so the result composes with the untouched components.
    """
    from export import ddp
    from export.data import Normalizers

    spec = method_spec(method)
    out = Path(out_dir)
    t0 = time.perf_counter()
    cfg = replace(cfg, run_id=_run_id(out, resume))
    want = cfg.components
    if isinstance(want, str):
        want = [w for w in want.split(",") if w]
    inits: dict[str, dict[str, Any]] = {}
    if init_from is not None:
        if resume:
            raise ValueError("--init-from and --resume exclude each other")
        inits = _init_checkpoints(Path(init_from), list(want or spec.components))
        first = next(iter(inits.values()))
        data = make_data(cfg, data_path, norms=Normalizers.from_dict(first["normalizers"]))
        if {k: first["dims"][k] for k in ("S", "A", "C", "H")} != \
                {"S": data.S, "A": data.A, "C": data.C, "H": data.H}:
            raise ValueError(f"--init-from dims {first['dims']} differ from the data's "
                             f"S={data.S} A={data.A} C={data.C} H={data.H}")
    else:
        data = make_data(cfg, data_path)

    def cfg_for(name: str) -> ComponentConfig:
        c = component_config(cfg, name)
        if name not in inits:
            return c
        return from_mapping(ComponentConfig, {**to_dict(c), **_init_overrides(inits[name])},
                            f"--init-from {inits[name].get('_path')}")

    tasks = _tasks_fn(spec)(cfg_for, data)
    if want:
        unknown = set(want) - {t.component for t in tasks}
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)} for {method}; "
                             f"have {[t.component for t in tasks]}")
        tasks = [t for t in tasks if t.component in want]
    if ddp.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    from export.train.loop import fit

    results = [fit(t, out, resume=resume, progress=progress, method=method,
                   init=inits.get(t.component)) for t in tasks]
    summary = {"method": method, "sampler": spec.sampler, "out": str(out),
               "dataset": data.provenance(), "dims": {"S": data.S, "A": data.A, "C": data.C,
                                                     "H": data.H},
               "components": results, "wall_s": time.perf_counter() - t0,
               "world_size": ddp.world()}
    if ddp.rank() == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
