"""`planner-runtime build-engine`: ONNX engine -> TensorRT `.plan` on this device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "build a TensorRT .plan (with the same manifest) from an ONNX engine, on the target device"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", type=Path, help="input .onnx engine (from `planner-runtime export`)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output .plan (default: next to the ONNX, same stem)")
    p.add_argument("--fp16", action="store_true",
                   help="let convolutions/matmuls run in FP16; schedule and update math stay FP32")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="TensorRT timing cache file, read if present and updated (speeds up rebuilds)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (MiB)")
    p.add_argument("--json", action="store_true", help="print the new manifest as one JSON object")


def run(args: argparse.Namespace) -> int:
    from planner_runtime.engine import EngineError
    from planner_runtime.trt_build import build_plan

    out = args.output or args.onnx.with_suffix(".plan")
    try:
        manifest = build_plan(args.onnx, out, fp16=args.fp16, timing_cache=args.timing_cache,
                              workspace_mb=args.workspace_mb)
    except (EngineError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"output": str(out), "manifest": manifest.to_dict()}))
    else:
        t = manifest.tensorrt or {}
        print(f"wrote {out}: TensorRT {t['version']} on {t['device']}, fp16={t['fp16']}, "
              f"built in {t['build_s']} s")
    return 0
