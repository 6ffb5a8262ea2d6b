"""Reproduce the embedded default Go2 engine from scratch: collect -> train -> export.

    python -m export.default_engine --work runs/default_engine           # everything
    python -m export.default_engine --work runs/default_engine --skip-collect --data data/go2_expert.h5
    python -m export.default_engine --work runs/default_engine --skip-collect --skip-diffusion --install
    python -m export.default_engine --work runs/default_engine --reexport --install  # checkpoints kept

Runs the same ``planner-runtime`` commands a user would (so the recipe is the CLI, not a
private code path), times each stage, and writes the engine plus ``PROVENANCE.json``
(commands, wall times, dataset and engine checksums). ``--install`` copies both into
``planner_runtime/engines/``. The recipe's knobs are the constants below; the README's
"Reproduce the default engine" section quotes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

# The PPO walking policy (its legged-gym action semantics: kp 20, kd 0.5) on three Go2 models,
# with per-episode randomized physics (sim.physics.RANDOMIZED) and nominal physics, three
# action-noise levels (mixed quality), pushes: 105 simulated minutes in one file.
COLLECT_RUNS = [("project", True, 25), ("menagerie", True, 25), ("menagerie-fitted", True, 25),
                ("project", False, 10), ("menagerie", False, 10), ("menagerie-fitted", False, 10)]
COLLECT = ["collect", "--append", "--expert", "ppo", "--noise-levels", "0.0", "0.04", "0.08",
           "--workers", "2", "--seed", "0", "--no-progress", "--json"]
# The networks predict the clean trajectory (prediction "x0") with x_0 also as input channels
# and kernel-3 convolutions: the training defaults (export/train/config.py). Planner 16000
# steps, dynamics 10000 (val loss 0.0040 / 0.0042), trained side by side on the 2 cores.
STEPS = {"planner": 16000, "dynamics": 10000}
# Windows that start in the last second before a fall are not trained on (fall_cut).
TRAIN = ["train", "--method", "mpdiffuser", "--components", "{component}", "--steps", "{steps}",
         "--set", "batch_size=128", "--set", "lr=1e-3", "--set", "ema_start=1000",
         "--set", "fall_cut=50",
         "--threads", "1", "--no-progress", "--json"]
# The paper's Go2 sampling (mpdiffuser.txt App. O): MPDiffuser's alternation of dynamics and
# planner, warm start 7 of K=10 levels, chunk of 4 actions, one sample, temperature 0.1.
# CFG w 1.3 was chosen by closed-loop measurement on these networks (docs/robustness.md):
# at w 1.0 the robot barely walked forward on the fitted Go2 (0.09 m/s at a 0.5 command).
# The real-time chunking forecaster (a one-step state model rolled over the committed actions
# inside the graph): 6000 steps, seconds per thousand. Only the joint positions of its
# forecast replace the measured state (forecast_states): forecasting the trunk's angular
# velocity and gravity, or the joint velocities, made the closed loop worse (docs/realtime.md).
FORECASTER = ["train", "--method", "mpdiffuser", "--components", "forecaster", "--set", "fall_cut=50",
              "--threads", "1", "--no-progress", "--json"]
EXPORT = ["export", "--method", "mpdiffuser", "--graph", "fused", "--warm-level", "7",
          "--temperature", "0.1", "--cfg-w", "1.3", "--chunk-size", "4",
          "--knob", "forecast_states=q_rel_", "--json"]
ENGINE_NAME = "go2.onnx"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str], log: list[dict], parallel: list[list[str]] | None = None) -> None:
    cmds = parallel or [args]
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "planner_runtime.cli", *c], stdout=subprocess.PIPE)
             for c in cmds]
    for c, p in zip(cmds, procs, strict=True):
        p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"failed ({p.returncode}): planner-runtime {shlex.join(c)}")
        sys.stderr.write(f"done: planner-runtime {shlex.join(c)}\n")
    log.append({"commands": ["planner-runtime " + shlex.join(c) for c in cmds],
                "wall_s": round(time.monotonic() - t0, 1)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.default_engine", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/default_engine", help="working directory")
    p.add_argument("--data", default=None, help="dataset path (default WORK/go2_expert.h5)")
    p.add_argument("--skip-collect", action="store_true", help="reuse an existing --data file")
    p.add_argument("--install", action="store_true", help="copy the engine into planner_runtime/engines/")
    p.add_argument("--skip-diffusion", action="store_true",
                   help="reuse WORK/checkpoints/{planner,dynamics}.pt (train only the forecaster, "
                        "then export); the earlier stages of WORK/PROVENANCE.json are kept")
    p.add_argument("--reexport", action="store_true",
                   help="only export again from WORK/checkpoints (after an engine contract change); "
                        "the earlier stages of WORK/PROVENANCE.json are kept")
    a = p.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data) if a.data else work / "go2_robust.h5"
    ck = work / "checkpoints"
    engine = work / ENGINE_NAME
    log: list[dict] = []
    if a.reexport or a.skip_diffusion:
        return _reexport(work, ck, engine, a.install, data if a.skip_diffusion else None)
    if not a.skip_collect:
        if data.exists():
            raise SystemExit(f"{data} exists: pass --skip-collect to train on it, or remove it")
        for model, randomize, minutes in COLLECT_RUNS:
            _run([*COLLECT[:1], "--out", str(data), "--model", model, "--minutes", str(minutes),
                  *(["--randomize"] if randomize else []), *COLLECT[1:]], log)
    # planner and dynamics are independent networks: train them side by side (2 cores)
    train = [[TRAIN[0], "--data", str(data), "--out", str(ck),
              *[t.format(component=c, steps=STEPS[c]) for t in TRAIN[1:]]] for c in STEPS]
    _run([], log, parallel=train)
    _run([FORECASTER[0], "--data", str(data), "--out", str(ck), *FORECASTER[1:]], log)
    _run([EXPORT[0], "--checkpoints", str(ck), "-o", str(engine), *EXPORT[1:]], log)
    prov = {"engine": ENGINE_NAME, "engine_sha256": _sha256(engine), "dataset": str(data),
            "dataset_sha256": _sha256(data), "stages": log,
            "total_wall_s": round(sum(s["wall_s"] for s in log), 1)}
    (work / "PROVENANCE.json").write_text(json.dumps(prov, indent=2))
    if a.install:
        dest = Path(__file__).resolve().parents[1] / "planner_runtime" / "engines"
        (dest / ENGINE_NAME).write_bytes(engine.read_bytes())
        (dest / "PROVENANCE.json").write_text(json.dumps(prov, indent=2))
    print(json.dumps(prov))
    return 0


def _reexport(work: Path, ck: Path, engine: Path, install: bool, data: Path | None) -> int:
    """Export again from WORK/checkpoints (training the forecaster first when ``data``)."""
    old = work / "PROVENANCE.json"
    if not old.is_file() or not ck.is_dir():
        raise SystemExit(f"--reexport / --skip-diffusion need {old} and {ck} from an earlier run of this recipe")
    prov = json.loads(old.read_text())
    log: list[dict] = []
    redo = (" export ",) + ((" forecaster ",) if data is not None else ())
    if data is not None:
        _run([FORECASTER[0], "--data", str(data), "--out", str(ck), *FORECASTER[1:]], log)
    _run([EXPORT[0], "--checkpoints", str(ck), "-o", str(engine), *EXPORT[1:]], log)
    dest = Path(__file__).resolve().parents[1] / "planner_runtime" / "engines"
    if install and (dest / "PROVENANCE.json").is_file():
        prov = {**json.loads((dest / "PROVENANCE.json").read_text()), **prov}  # keep its notes
    stages = [s for s in prov.get("stages", []) if not any(r in c for c in s["commands"] for r in redo)]
    prov.update(engine_sha256=_sha256(engine), stages=stages + log,
                total_wall_s=round(sum(s["wall_s"] for s in stages + log), 1),
                reexported_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    old.write_text(json.dumps(prov, indent=2))
    if install:
        (dest / ENGINE_NAME).write_bytes(engine.read_bytes())
        (dest / "PROVENANCE.json").write_text(json.dumps(prov, indent=2))
    print(json.dumps(prov))
    return 0


if __name__ == "__main__":
    sys.exit(main())
