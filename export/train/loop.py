"""The common training loop every method's components use.

A component is a :class:`TrainTask` (one network: build it, draw a batch, compute a loss).
:func:`fit` trains it with AdamW and gradient-norm clipping, keeps EMA weights, logs train
and validation losses to ``<out>/<component>.metrics.jsonl``, draws the curves to
``<out>/<component>_loss.png``, shows a tqdm bar with the loss, and checkpoints to
``<out>/<component>.pt`` (format: ``export/train/checkpoint.py``).

Determinism: the model is initialized from ``seed``; the batch indices and the noise of
step ``i`` on rank ``r`` come from generators seeded with (seed, r, i), so a resumed run
draws exactly what the uninterrupted one would have and ends with identical weights.

EMA (reference code): for step < ema_start the EMA is a copy of the weights; afterwards,
every ``ema_every`` steps, ema <- ema + ema_tau * (w - ema) (i.e. (1 - tau) ema + tau w).
Validation losses and exported models use the EMA weights.
"""

from __future__ import annotations

import copy
import json
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export import ddp
from export.train.checkpoint import load_checkpoint, save_checkpoint, versions
from export.train.config import ComponentConfig
from planner_runtime.config import to_dict


class TrainTask(ABC):
    """One trainable network of a method (planner, dynamics, ranker, ...)."""

    component: str = "model"
    model_class: str = ""

    def __init__(self, cfg: ComponentConfig, data: Any):
        self.cfg, self.data = cfg, data

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh network; must have ``config()`` returning its constructor kwargs."""

    @abstractmethod
    def batch(self, split: str, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A batch of the 'train' or 'val' split as float32 tensors."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss (to minimize) and extra metrics. Randomness only from ``gen``."""

    def has_val(self) -> bool:
        return True

    def checkpoint_extra(self) -> dict[str, Any]:
        """Plain-typed fields stored in the checkpoint: dims, diffusion schedule, normalizers
        and dataset provenance of ``self.data`` (an ``export.data.WindowData``), which
        ``sampler_kwargs`` / ``check_compatible`` read back when components are composed."""
        d = self.data
        return {"dims": {"S": d.S, "A": d.A, "C": d.C, "H": d.H},
                "schedule": {"num_levels": self.cfg.num_levels, "kind": self.cfg.schedule},
                "normalizers": d.norms.to_dict(), "dataset": d.provenance()}


def _step_seed(seed: int, rank: int, step: int, stream: int) -> int:
    return int(np.random.default_rng([seed, rank, step, stream]).integers(2**62))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, tau: float) -> None:
    """ema <- ema + tau * (model - ema), parameters and floating buffers."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), tau)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


@torch.no_grad()
def ema_copy(ema: nn.Module, model: nn.Module) -> None:
    ema.load_state_dict(model.state_dict())


def validate(task: TrainTask, model: nn.Module, cfg: ComponentConfig) -> float | None:
    """Mean loss over ``val_batches`` fixed batches (fixed indices and noise)."""
    if not task.has_val():
        return None
    model.eval()
    losses = []
    with torch.no_grad():
        for j in range(cfg.val_batches):
            rng = np.random.default_rng([cfg.seed, 10_000 + j])
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, 0, j, 99))
            b = task.batch("val", cfg.batch_size, rng)
            loss, _ = task.loss(model, b, gen)
            losses.append(float(loss))
    model.train()
    return float(np.mean(losses))


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    tr = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    va = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train (batch mean)")
    if va:
        ax.plot(*zip(*va, strict=True), "o-", label="val (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for _, v in tr + va):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fit(task: TrainTask, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
        method: str = "", init: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``task`` to ``task.cfg.steps`` and checkpoint it. Returns a summary dict.

    ``init``: a checkpoint to fine-tune: its weights, fresh optimizer (the task was built
    with the checkpoint's architecture, schedule and prediction: ``train_method``).
    """
    cfg = task.cfg
    out = Path(out_dir)
    ck_path = out / f"{task.component}.pt"
    log_path = out / f"{task.component}.metrics.jsonl"
    rank, world = ddp.rank(), ddp.world()
    steps, seed = cfg.steps, cfg.seed
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} not divisible by {world} processes")
    local_bs = cfg.batch_size // world

    torch.manual_seed(seed)
    model = task.build_model()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    if resume and ck_path.exists():
        ck = load_checkpoint(ck_path)
        if ck.get("model_config") != model.config():
            raise ValueError(f"cannot resume {ck_path}: model config differs "
                             f"({ck.get('model_config')} vs {model.config()})")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        start, history = int(ck["step"]), list(ck.get("history", []))
    elif init is not None:
        if init.get("model_config") != model.config():
            raise ValueError(f"cannot fine-tune {init.get('_path')}: its architecture does not fit "
                             f"this data ({init.get('model_config')} vs {model.config()})")
        model.load_state_dict(init["ema"])  # start from the averaged weights
        ema.load_state_dict(init["ema"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as f:  # rewritten from the checkpoint's history on resume
            for r in history:
                f.write(json.dumps(r) + "\n")
    train_model = ddp.wrap(model)
    model.train()

    def save(step: int) -> None:
        if rank != 0:
            return
        save_checkpoint(ck_path, {
            "method": method, "component": task.component, "model_class": task.model_class,
            "model_config": model.config(), "config": to_dict(cfg), "step": step,
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "versions": versions(), "history": history, "world_size": world,
            **task.checkpoint_extra(),
        })

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc=task.component, disable=not progress or rank != 0,
               dynamic_ncols=True)
    t0, last, last_val = time.perf_counter(), float("nan"), float("nan")
    acc, n_acc = 0.0, 0
    for step in range(start, steps):
        rng = np.random.default_rng([seed, rank, step])
        gen = torch.Generator().manual_seed(_step_seed(seed, rank, step, 0))
        b = task.batch("train", local_bs, rng)
        loss, extra = task.loss(train_model, b, gen)
        lval = float(loss.detach())
        if not math.isfinite(lval):  # stop before the update: the last checkpoint stays good
            raise FloatingPointError(f"{task.component}: loss became {lval} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done = step + 1
        if done < cfg.ema_start:
            ema_copy(ema, model)
        elif done % cfg.ema_every == 0:
            ema_update(ema, model, cfg.ema_tau)
        acc += lval
        n_acc += 1
        val_now = done % cfg.val_every == 0 or done == steps
        log_now = done % cfg.log_every == 0 or val_now
        if log_now:
            last = float(ddp.mean(torch.tensor(acc / n_acc)))
            acc, n_acc = 0.0, 0
            if rank == 0:
                row = {"step": done, "loss": last, "grad_norm": float(gnorm),
                       "time_s": time.perf_counter() - t0,
                       **{k: float(v) for k, v in extra.items()}}
                if val_now:
                    row["val_loss"] = validate(task, ema, cfg)
                    last_val = row["val_loss"] if row["val_loss"] is not None else last_val
                history.append(row)
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{last:.4g}", val=f"{last_val:.4g}")
        bar.update(1)
        if done % cfg.ckpt_every == 0 or done == steps:
            save(done)
    bar.close()
    elapsed = time.perf_counter() - t0  # start >= steps (already trained): nothing to save
    sync_diff = None
    if ddp.active():  # DDP must leave every rank with the same weights: measure it
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        hi, lo = flat.clone(), flat.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        sync_diff = float((hi - lo).abs().max())
    ddp.barrier()
    summary = {"component": task.component, "steps": steps, "resumed_from": start,
               "train_loss": last, "val_loss": next((r["val_loss"] for r in reversed(history)
                                                     if r.get("val_loss") is not None), None),
               "steps_per_s": (steps - start) / elapsed if steps > start else None,
               "world_size": world, "checkpoint": str(ck_path), "ddp_max_weight_diff": sync_diff,
               "params": sum(p.numel() for p in model.parameters())}
    if rank == 0 and history:
        plot_curves(history, out / f"{task.component}_loss.png", f"{method} {task.component}")
    return summary
