"""The robustness matrix: ``planner-runtime eval`` over Go2 models x physics conditions.

    planner-runtime eval --matrix runs/matrix --engine default=planner_runtime/engines/go2.onnx \\
        --engine planner-only=runs/planner_only.onnx --reference trot ppo --episodes 20 --duration 20

Every cell is one ``planner-runtime eval --json`` run (a subprocess, ``--jobs`` at a time) on
the same seeds, so every method in a cell sees the same episodes. A cell's config is the
eval defaults with the matrix run's methods, episodes, duration, seed and replan interval (:data:`FORWARDED`),
then the cell's model and condition (:data:`CONDITIONS`: changed ``EvalConfig`` fields,
checked by ``sim.eval_config.with_changes``). Writes ``matrix.json`` (all
cell reports), ``matrix.md`` (the table) and ``matrix.png`` (falls and tracking per cell), and
prints the goal verdict of the first engine: 0 falls, tracking RMSE <= 1.3x the PPO policy's,
and no episode over the cost budget, in every cell (undetermined where only the tracking ratio
decides and the run has no PPO reference).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from planner_runtime.config import ConfigError
from sim.eval_config import EvalConfig, as_flags, given_options, to_argv, with_changes

MODELS = ("project", "menagerie", "menagerie-fitted")
CONDITIONS: dict[str, dict[str, Any]] = {  # condition -> the EvalConfig fields it changes
    "nominal": {},
    "randomized": {"randomize": True},
    "friction 0.4-0.5": {"friction": (0.4, 0.5)},
    "+3 kg": {"mass_delta": (3.0, 3.0)},
    "pushes": {"pushes": True},
    "actuator lag 15 ms": {"actuator_lag": 15.0},
}
# the options of the matrix run that its cells take over (the others keep their defaults)
FORWARDED = ("engine", "no_expert", "reference", "episodes", "duration", "seed", "replan_every")
TRACKING_GOAL = 1.3  # x the PPO policy's tracking RMSE


# options that steer the matrix / sweep run itself, not its cells
RUN_OPTIONS = ("json", "plot", "no_progress", "matrix", "matrix_models", "matrix_conditions", "matrix_ppo_from", "jobs",
               "latency_sweep", "sweep_latencies", "sweep_rules", "speed_sweep", "sweep_speeds", "threads")


def cell_base(cfg: EvalConfig, forwarded: tuple[str, ...], where: str) -> EvalConfig:
    """The config every cell of a matrix or sweep run starts from: the eval defaults with the
    ``forwarded`` options of ``cfg``, no progress bar, one JSON report on stdout. Any other
    option the run was given is refused (ConfigError): a cell would not apply it."""
    ignored = [k for k in given_options(cfg) if k not in forwarded and k not in RUN_OPTIONS]
    if ignored:
        raise ConfigError(f"{where}: {as_flags(ignored)} would not reach "
                          f"the cells (they take only {as_flags(forwarded)}); "
                          "run a single eval for other settings")
    return with_changes(EvalConfig(no_progress=True, json=True),
                        {k: getattr(cfg, k) for k in forwarded}, where)


def cell_config(base: EvalConfig, model: str, condition: str) -> EvalConfig:
    """One cell: ``base`` (:func:`cell_base`) on ``model`` under ``condition``."""
    return with_changes(base, {"model": model, **CONDITIONS[condition]},
                        f"matrix cell {model!r} / {condition!r}")


def cell_command(cell: EvalConfig) -> list[str]:
    """The subprocess that runs one cell."""
    return [sys.executable, "-m", "planner_runtime.cli", "eval", *to_argv(cell)]


def verdict(cell: dict, engine: str) -> dict:
    """The issue's goals for one engine in one cell. ``met`` is None where they depend on the
    tracking ratio alone and the cell has no PPO reference to take it against."""
    r = cell["results"].get(engine, {})
    ppo = cell["results"].get("ppo", {}).get("tracking_rmse_xy")
    ratio = r.get("tracking_rmse_xy") / ppo if ppo and r.get("tracking_rmse_xy") is not None else None
    safe = r.get("falls") == 0 and not r.get("episodes_over_budget")
    met = None if safe and ppo is None else bool(safe and ratio is not None and ratio <= TRACKING_GOAL)
    return {"falls": r.get("falls"), "tracking_vs_ppo": ratio,
            "over_budget": r.get("episodes_over_budget"), "met": met}


def goal(verdicts: list[dict], engine: str) -> dict:
    """The goals over the cells: met, missed, and undetermined (no PPO reference)."""
    met = [v["met"] for v in verdicts]
    return {"engine": engine, "cells": len(met), "cells_met": met.count(True),
            "cells_undetermined": met.count(None), "all_met": bool(met) and all(m is True for m in met)}


def goal_line(g: dict) -> str:
    line = f"goal for {g['engine']}: met in {g['cells_met']} of {g['cells']} cells"
    if g["cells_undetermined"]:
        line += (f"; undetermined in {g['cells_undetermined']} (0 falls and within the cost budget, "
                 "but no PPO reference to take the tracking ratio against: add --reference ppo, "
                 "or --matrix-ppo-from an earlier run that had it)")
    return line


def cell_file(label: str) -> str:
    """The file name a finished cell's report is kept under (``run_cells(keep=...)``)."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_") + ".json"


def cell_label(cell: tuple[str, str]) -> str:
    return f"{cell[0]} / {cell[1]}"


def earlier_ppo(folder: Path, cell: tuple[str, str], cfg: EvalConfig) -> dict:
    """The PPO reference of ``cell`` in an earlier matrix run's folder, checked against this
    run's episodes, duration and seed (ValueError otherwise). Its conditions (model, physics
    ranges, ...) are compared with the cell's own once the cell has reported them."""
    path = folder / "cells" / cell_file(cell_label(cell))
    if not path.is_file():
        raise ValueError(f"--matrix-ppo-from: {path} is missing (no such cell in that run)")
    d = json.loads(path.read_text())
    ppo = d.get("results", {}).get("ppo")
    if ppo is None:
        raise ValueError(f"--matrix-ppo-from: {path} has no PPO reference (that run lacked --reference ppo)")
    mine = {"episodes": cfg.episodes, "duration_s": float(cfg.duration), "seed": cfg.seed}
    theirs = {k: d.get(k) for k in mine}
    if theirs != mine:
        raise ValueError(f"--matrix-ppo-from: {path} was run with {theirs}, this run with {mine}")
    return {"ppo": ppo, "conditions": d.get("conditions"), "path": str(path)}


def merge_ppo(res: dict, earlier: dict) -> dict:
    """A cell's report with the earlier run's PPO reference added (marked with where it came
    from), or with ``ppo_from_error`` and no reference where the two cells' conditions differ."""
    if "results" not in res:
        return res
    if earlier["conditions"] != res.get("conditions"):
        return {**res, "ppo_from_error": f"{earlier['path']}: its conditions {earlier['conditions']} "
                                         f"differ from this cell's {res.get('conditions')}"}
    return {**res, "results": {"ppo": {**earlier["ppo"], "from": earlier["path"]}, **res["results"]}}


def run_matrix(cfg: EvalConfig) -> int:
    out = Path(str(cfg.matrix))
    out.mkdir(parents=True, exist_ok=True)
    models = list(cfg.matrix_models or MODELS)
    conds = list(cfg.matrix_conditions or CONDITIONS)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad:
        print(f"error: unknown condition(s) {bad}; known: {list(CONDITIONS)}", file=sys.stderr)
        return 2
    cells = [(m, c) for m in models for c in conds]
    try:
        base = cell_base(cfg, FORWARDED, "matrix")
        configs = {cell: cell_config(base, *cell) for cell in cells}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    earlier: dict = {}
    if cfg.matrix_ppo_from:
        if "ppo" in (cfg.reference or ()):  # (--no-expert beside --reference is refused earlier)
            print("error: --matrix-ppo-from takes the PPO column from an earlier run: "
                  "drop ppo from --reference", file=sys.stderr)
            return 2
        try:
            earlier = {cell: earlier_ppo(Path(cfg.matrix_ppo_from), cell, cfg) for cell in cells}
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    def with_ppo(cell, res: dict) -> dict:  # the earlier PPO column, before the cell is kept
        res = merge_ppo(res, earlier[cell])
        if "ppo_from_error" in res:
            print(f"warning: no PPO reference for {cell_label(cell)}: {res['ppo_from_error']}", file=sys.stderr)
        return res

    t0 = time.monotonic()
    results = run_cells(cells, lambda cell: cell_command(configs[cell]), cfg.jobs,
                        "matrix", cell_label, keep=out / "cells", post=with_ppo if earlier else None)
    engines = [e.split("=", 1)[0] if "=" in e else Path(e).stem for e in cfg.engine]
    report = {"episodes": cfg.episodes, "duration_s": cfg.duration, "seed": cfg.seed,
              "wall_s": time.monotonic() - t0, "engines": engines,
              "cells": [{"model": m, "condition": c, **results[(m, c)]} for m, c in cells],
              **({"ppo_from": cfg.matrix_ppo_from} if cfg.matrix_ppo_from else {})}
    if engines:
        report["goal"] = goal([verdict(cell, engines[0]) for cell in report["cells"] if "results" in cell],
                              engines[0])
    (out / "matrix.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "matrix.md").write_text(table(report))
    plot(report, out / "matrix.png")
    print(table(report))
    if "goal" in report:
        print(goal_line(report["goal"]))
    return 0 if all("results" in c for c in report["cells"]) else 1


def run_cells(cells: list, command, jobs: int, tag: str, label, keep: Path | None = None,
              post=None) -> dict:
    """Run one ``planner-runtime eval --json`` subprocess per cell, ``jobs`` at a time, with
    a progress line per finished cell; cell -> its JSON report (or {"error": stderr tail}),
    passed through ``post(cell, report)`` when given. With ``keep`` (a folder) each finished
    cell's report is also written there at once, as ``<label>.json``, so a run stopped part
    way keeps the cells it finished."""
    t0 = time.monotonic()
    done = 0
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)

    def one(cell):
        nonlocal done
        res = subprocess.run(command(cell), capture_output=True, text=True)
        done += 1
        print(f"[{tag}] {done}/{len(cells)} {label(cell)}: exit {res.returncode} "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        out = ({"error": res.stderr[-2000:]} if res.returncode != 0
               else json.loads(res.stdout.strip().splitlines()[-1]))
        if post is not None:
            out = post(cell, out)
        if keep is not None:
            (keep / cell_file(str(label(cell)))).write_text(json.dumps({"cell": list(cell), **out}, default=float))
        return cell, out

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return dict(pool.map(one, cells))


def methods_of(cells: list[dict]) -> list[str]:
    """Every method any finished cell reports, in first-seen order (a cell can lack one, e.g.
    the PPO column where ``--matrix-ppo-from`` found other conditions)."""
    return list(dict.fromkeys(m for c in cells for m in c["results"]))


def table(report: dict) -> str:
    """Markdown: one row per cell, per method falls / tracking RMSE (x PPO) / cost."""
    cells = [c for c in report["cells"] if "results" in c]
    if not cells:
        return "no cell finished\n"
    methods = methods_of(cells)
    head = "| model | condition | " + " | ".join(methods) + " |\n"
    head += "|---|---|" + "---|" * len(methods) + "\n"
    rows = []
    for c in cells:
        ppo = c["results"].get("ppo", {}).get("tracking_rmse_xy")
        vals = []
        for m in methods:
            r = c["results"].get(m)
            if r is None:  # not run in this cell
                vals.append("-")
                continue
            rm = r.get("tracking_rmse_xy")
            ratio = f" ({rm / ppo:.2f}x)" if rm is not None and ppo and m != "ppo" else ""
            vals.append(f"{r.get('falls', '-')}/{r.get('episodes', '-')} falls, "
                        f"{'-' if rm is None else f'{rm:.3f}'}{ratio}, cost {r.get('cost_mean', float('nan')):.1f}")
        rows.append(f"| {c['model']} | {c['condition']} | " + " | ".join(vals) + " |")
    return head + "\n".join(rows) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = [c for c in report["cells"] if "results" in c]
    if not cells:
        return
    methods = methods_of(cells)
    labels = [f"{c['model']}\n{c['condition']}" for c in cells]
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 0.8 * len(cells)), 8), sharex=True)
    x = np.arange(len(cells))
    w = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        falls = [c["results"].get(m, {}).get("falls", np.nan) for c in cells]
        rm = [c["results"].get(m, {}).get("tracking_rmse_xy", np.nan) for c in cells]
        axes[0].bar(x + k * w, falls, w, label=m)
        axes[1].bar(x + k * w, rm, w, label=m)
    axes[0].set(ylabel=f"falls of {report['episodes']}", title="falls per cell")
    axes[1].set(ylabel="tracking RMSE xy (m/s)", title="velocity tracking per cell")
    axes[1].set_xticks(x + 0.4 - w / 2, labels, rotation=60, fontsize=7)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
