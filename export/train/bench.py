"""Training throughput: steps/s of the Go2-sized MPDiffuser networks (the ``training``
section of ``planner-runtime bench``, export/bench.py).

    planner-runtime bench --what training [--train-steps 200] [--train-procs 1 2] [--train-data FILE] [--json]

Trains the planner and the dynamics model (S = 30, A = 12, C = 3, H = 16, the default
config) for ``--train-steps`` steps on ``--train-data`` (default: a synthetic Go2-shaped
file, see ``export/synthetic.py``), once per process count in ``--train-procs`` (2 =
``torchrun --nproc_per_node 2``, gloo on CPU, same global batch), and reports steps/s and
samples/s. Numbers depend on what else the machine runs: say so when quoting them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_one(data: str, out: str, procs: int, steps: int, threads: int, overrides: list[str]) -> dict:
    args = ["-m", "export.cli_train", "--data", data, "--out", out, "--steps", str(steps),
            "--components", "planner,dynamics", "--no-progress", "--json",
            "--threads", str(threads), "--set", "val_every=1000000000",
            "--set", "ckpt_every=1000000000", *sum((["--set", o] for o in overrides), [])]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"training failed ({procs} procs):\n{p.stderr[-2000:]}")
    s = json.loads(p.stdout.strip().splitlines()[-1])
    bs = 64
    for o in overrides:
        if o.startswith("batch_size="):
            bs = int(o.split("=", 1)[1])
    return {c["component"]: {"steps_per_s": round(c["steps_per_s"], 2),
                             "samples_per_s": round(c["steps_per_s"] * bs, 1),
                             "params": c["params"]} for c in s["components"]}


def training_bench(steps: int, procs: list[int], threads: int = 1, data: str | None = None,
                   overrides: list[str] | None = None) -> dict:
    """Steps/s and samples/s per component, once per process count in ``procs``."""
    overrides = list(overrides or [])
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from export.synthetic import write_go2_shaped_dataset

            data = str(Path(tmp) / "go2_synth.h5")
            write_go2_shaped_dataset(data, n_episodes=10, T=500)
        res: dict = {"steps": steps, "threads_per_proc": threads, "overrides": overrides,
                     "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "runs": {}}
        for n in procs:
            res["runs"][str(n)] = run_one(data, str(Path(tmp) / f"out{n}"), n, steps, threads, overrides)
        res["load_avg_1m_after"] = os.getloadavg()[0]
    return res


def format_report(res: dict) -> str:
    return "\n".join(f"{n} proc: {comp:9s} {v['steps_per_s']:7.2f} steps/s "
                     f"({v['samples_per_s']:.0f} windows/s, {v['params']} params)"
                     for n, r in res["runs"].items() for comp, v in r.items())
