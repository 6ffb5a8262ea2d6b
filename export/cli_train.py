"""``planner-runtime train``: train every component of a method from a dataset file.

    planner-runtime train --method mpdiffuser --data data.h5 --out runs/go2 \\
        [--config cfg.json] [--set key=value ...] [--steps N] [--seed S] [--resume] [--json]

Writes ``<out>/<component>.pt`` checkpoints (EMA weights inside; format in
``export/train/checkpoint.py``), ``<component>.metrics.jsonl`` (train / val losses),
``<component>_loss.png``, ``config.json`` and ``summary.json``. With ``--json`` the summary
is the one JSON object printed on stdout (the progress bar goes to stderr).

Multi-process (DDP): ``torchrun --nproc_per_node 2 -m export.cli_train --data ... --out ...``
(gloo on CPU, NCCL on GPUs); ``batch_size`` is the global batch. torch is imported inside
``run`` so the CLI stays importable without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "train a method's networks (MPDiffuser planner/dynamics/ranker, ...) from a dataset"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="mpdiffuser", help="method to train (default mpdiffuser)")
    p.add_argument("--data", required=True, help="dataset file (planner-runtime HDF5 format)")
    p.add_argument("--out", required=True, help="output directory for checkpoints and logs")
    p.add_argument("--config", help="JSON config file (keys: export/train/config.py; unknown keys are refused)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry (dotted key, JSON value); repeatable")
    p.add_argument("--steps", type=int, help="training steps per component (shortcut for --set steps=N)")
    p.add_argument("--seed", type=int, help="random seed (shortcut for --set seed=S)")
    p.add_argument("--components", help="comma-separated subset, e.g. planner,dynamics")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints in --out")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="fine-tune: start each trained component from DIR/<component>.pt "
                        "(weights, architecture and normalizers; fresh optimizer)")
    p.add_argument("--threads", type=int, help="torch intra-op threads per process")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")


def run(args: argparse.Namespace) -> int:
    from export.train.config import user_config

    try:  # every key of the file and of each --set checked here (a typo names itself)
        cfg = user_config(args.config, args.overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.components:
        cfg["components"] = args.components

    import torch

    from export import ddp
    from export.train.checkpoint import CheckpointError
    from export.train.registry import resolve_config, train_method
    from planner_runtime.dataset import DatasetError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        full = resolve_config(args.method, cfg)
        ddp.init()
        summary = train_method(args.method, full, args.data, args.out, resume=args.resume,
                               progress=not args.no_progress, init_from=args.init_from)
    except (ValueError, DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ddp.shutdown()
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(summary))
    else:
        for c in summary["components"]:
            print(f"{c['component']}: {c['steps']} steps, train loss {c['train_loss']:.4g}, "
                  f"val loss {c['val_loss'] if c['val_loss'] is None else format(c['val_loss'], '.4g')}, "
                  f"{c['steps_per_s'] or 0:.1f} steps/s -> {c['checkpoint']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="planner-runtime train", description=HELP)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
