"""Training throughput benchmark: steps/s of the Go2-sized MPDiffuser networks.

    python -m export.train.bench [--steps 200] [--procs 1 2] [--data FILE] [--json]

Trains the planner and the dynamics model (S = 30, A = 12, C = 3, H = 16, the default
config) for ``--steps`` steps on ``--data`` (default: a synthetic Go2-shaped file, see
``export/synthetic.py``), once per process count in ``--procs`` (2 = ``torchrun
--nproc_per_node 2``, gloo on CPU, same global batch), and reports steps/s and samples/s.
Numbers depend on what else the machine runs: say so when quoting them.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.train.bench", description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--data", help="dataset file (default: synthetic Go2-shaped)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            from export.synthetic import write_go2_shaped_dataset

            data = str(Path(tmp) / "go2_synth.h5")
            write_go2_shaped_dataset(data, n_episodes=10, T=500)
        res = {"steps": a.steps, "threads_per_proc": a.threads, "overrides": a.overrides,
               "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "runs": {}}
        for n in a.procs:
            res["runs"][str(n)] = run_one(data, str(Path(tmp) / f"out{n}"), n, a.steps, a.threads,
                                          a.overrides)
        res["load_avg_1m_after"] = os.getloadavg()[0]
    if a.json:
        print(json.dumps(res))
    else:
        for n, r in res["runs"].items():
            for comp, v in r.items():
                print(f"{n} proc: {comp:9s} {v['steps_per_s']:7.2f} steps/s "
                      f"({v['samples_per_s']:.0f} windows/s, {v['params']} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
