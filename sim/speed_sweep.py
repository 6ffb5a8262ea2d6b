"""The speed sweep: ``planner-runtime eval`` at constant straight-ahead commands.

    planner-runtime eval --speed-sweep runs/speed --reference ppo --episodes 2 --duration 10

Random command schedules (eval's default, and every matrix cell) change the command every
2-5 s, so a method that cannot hold a slow walk, or overshoots a fast one, is averaged away
in one tracking number. The sweep asks each method for one speed at a time: every cell is
one ``planner-runtime eval --json --command V 0 0`` run (a subprocess, ``--jobs`` at a
time) from a standing start, on the same seeds for every method, with the sweep run's
methods, model, physics options, episodes, duration and seed (:data:`FORWARDED`). The
speed a method reaches is the mean body vx once each command has settled for 1 s
(``mean_vx_settled``). Writes ``sweep.json`` (all cell reports), ``sweep.md`` (the table)
and ``sweep.png`` (reached against commanded speed, one line per method), and prints, per
method, the slowest command from which it walks: reaching at least half of that command
and of every faster one in the sweep (:func:`walks_from`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from planner_runtime.config import ConfigError
from sim.eval_config import EvalConfig, with_changes
from sim.eval_matrix import cell_base, cell_command, run_cells

SPEEDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)  # m/s, inside the schedules' vx range (sim.commands)
# the options of the sweep run that its cells take over (the others keep their defaults)
FORWARDED = ("engine", "no_expert", "reference", "model", "episodes", "duration", "seed", "randomize",
             "friction", "mass_delta", "actuator_lag", "pushes", "replan_every", "cfg_w")
WALK_FRACTION = 0.5  # "walks at v": reaches at least this fraction of the commanded v


def physics_label(cfg: EvalConfig) -> str:
    """The sweep's physics options in words (for the plot's title; empty: nominal)."""
    parts = ["randomized physics"] if cfg.randomize else []
    if cfg.friction is not None:
        parts.append(f"foot friction {cfg.friction[0]:g}-{cfg.friction[1]:g}")
    if cfg.mass_delta is not None:
        parts.append(f"trunk {cfg.mass_delta[0]:+g}..{cfg.mass_delta[1]:+g} kg")
    if cfg.actuator_lag is not None:
        parts.append(f"actuator lag {cfg.actuator_lag:g} ms")
    if cfg.pushes:
        parts.append("pushes")
    return ", ".join(parts)


def cell_config(base: EvalConfig, speed: float) -> EvalConfig:
    """One cell: ``base`` (``cell_base(run, FORWARDED, ...)``) at a constant (speed, 0, 0)."""
    return with_changes(base, {"command": (float(speed), 0.0, 0.0)}, f"speed sweep cell {speed:g} m/s")


def reached(report: dict) -> dict[str, list[float | None]]:
    """Method -> the settled mean vx it reached at each of the report's speeds (None where
    the cell failed or the method is missing)."""
    methods: list[str] = []
    for c in report["cells"]:
        methods += [m for m in c.get("results", {}) if m not in methods]
    return {m: [c.get("results", {}).get(m, {}).get("mean_vx_settled") for c in report["cells"]]
            for m in methods}


def walks_from(speeds: list[float], vx: list[float | None]) -> float | None:
    """The slowest commanded speed from which the method reaches at least
    :data:`WALK_FRACTION` of every command up to the fastest in the sweep (None: not even
    at the fastest). ``speeds`` ascending."""
    best = None
    for v, got in reversed(list(zip(speeds, vx, strict=True))):
        if got is None or got < WALK_FRACTION * v:
            break
        best = v
    return best


def table(report: dict) -> str:
    """Markdown: one row per commanded speed, the speed each method reached (and its falls)."""
    res = reached(report)
    methods = list(res)
    head = ("| command vx (m/s) | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n")
    rows = []
    for i, c in enumerate(report["cells"]):
        if "results" not in c:
            rows.append(f"| {c['speed']:g} | " + " | ".join("error" for _ in methods) + " |")
            continue
        cells = []
        for m in methods:
            r = c["results"].get(m, {})
            v = res[m][i]
            cells.append("-" if v is None else f"{v:.3f}" + (f" ({r['falls']} falls)" if r.get("falls") else ""))
        rows.append(f"| {c['speed']:g} | " + " | ".join(cells) + " |")
    foot = "| walks from | " + " | ".join(
        "-" if (w := report["walks_from"].get(m)) is None else f"{w:g}" for m in methods) + " |"
    return head + "\n".join(rows + [foot]) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speeds = report["speeds"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(speeds, speeds, "k--", lw=1, label="commanded")
    for m, vx in reached(report).items():
        ax.plot(speeds, [float("nan") if v is None else v for v in vx], "o-", label=m)
    physics = f", {report['physics']}" if report.get("physics") else ""
    ax.set(xlabel="commanded vx (m/s), constant, from a stand", ylabel="reached vx (m/s), settled mean",
           title=f"{report['model']} Go2{physics}, {report['episodes']} x {report['duration_s']:g} s per point")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_sweep(cfg: EvalConfig) -> int:
    out = Path(str(cfg.speed_sweep))
    speeds = sorted(float(v) for v in (cfg.sweep_speeds or SPEEDS))
    if not speeds or any(v <= 0 for v in speeds):
        print(f"error: --sweep-speeds must be positive speeds (m/s), got {speeds}", file=sys.stderr)
        return 2
    try:
        base = cell_base(cfg, FORWARDED, "speed sweep")
        configs = {v: cell_config(base, v) for v in speeds}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results = run_cells([(v,) for v in speeds], lambda c: cell_command(configs[c[0]]), cfg.jobs, "speed sweep",
                        lambda c: f"{c[0]:g} m/s", keep=out / "cells")
    report: dict[str, Any] = {"episodes": cfg.episodes, "duration_s": cfg.duration, "seed": cfg.seed, "model": cfg.model,
              "physics": physics_label(cfg), "wall_s": time.monotonic() - t0, "speeds": speeds,
              "cells": [{"speed": v, **results[(v,)]} for v in speeds]}
    report["walks_from"] = {m: walks_from(speeds, vx) for m, vx in reached(report).items()}
    (out / "sweep.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "sweep.md").write_text(table(report))
    plot(report, out / "sweep.png")
    print(table(report))
    for m, w in report["walks_from"].items():
        print(f"{m}: walks from {'-' if w is None else f'{w:g} m/s'} (reaches >= {WALK_FRACTION:g}x the command "
              f"there and at every faster one)")
    return 0 if all("results" in c for c in report["cells"]) else 1
