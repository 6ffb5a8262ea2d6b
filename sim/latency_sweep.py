"""The latency sweep: ``planner-runtime eval`` over plan latencies x chunk rules.

    planner-runtime eval --latency-sweep runs/latency --episodes 20 --duration 20

Every cell is one ``planner-runtime eval --json --no-expert --latency MS <rule>`` run (a
subprocess, ``--jobs`` at a time) on the same seeds, with the first ``--engine`` (default:
the embedded Go2 engine): the eval defaults with the sweep run's model, episodes, duration,
seed and ``--randomize``, then the cell's latency and rule (:data:`RULES`: changed
``EvalConfig`` fields, checked by ``sim.eval_config.with_changes``). Rules are the chunk rules of ``planner_runtime.chunking``; ``hold``
is the behaviour before real-time chunking. Writes ``sweep.json`` (all cell reports),
``sweep.md`` (the table) and ``sweep.png`` (falls, tracking and chunk-switch jumps against
latency, one line per rule), and prints the goal verdict: at 40 ms the default rule tracks
within 1.2x of itself at 0 ms, at 80 ms it does not fall, and at 20-40 ms its mean
chunk-switch jump is at least 2x smaller than ``hold``'s.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from planner_runtime.config import ConfigError
from sim.eval_config import EvalConfig, given_options, with_changes
from sim.eval_matrix import cell_base, cell_command, run_cells

LATENCIES_MS = (0.0, 20.0, 40.0, 80.0)
RULES: dict[str, dict[str, Any]] = {  # rule -> the EvalConfig fields it changes
    "hold": {"merge": "hold"},
    "aligned": {"merge": "aligned"},
    "inpaint": {"merge": "inpaint"},
    "inpaint-every-4": {"merge": "inpaint", "replan_every": 4},  # the chunk-size schedule
    "forecast": {"merge": "aligned", "start_state": "forecast", "replan_every": 1},
    "forecast+blend": {"merge": "blend", "start_state": "forecast", "replan_every": 1},
}
# the options of the sweep run that its cells take over (the others keep their defaults)
FORWARDED = ("model", "episodes", "duration", "seed", "randomize")
# At 0 ms (lockstep) every rule with the same replan interval (ChunkConfig.interval: inpaint
# replans continuously like the forecast rules, aligned every chunk like hold) executes the
# same actions: only one of them is run there.
SAME_AT_ZERO = {"aligned": "hold", "inpaint-every-4": "hold", "inpaint": "forecast",
                "forecast+blend": "forecast"}
TRACKING_GOAL = 1.2  # at 40 ms, x the same rule's tracking at 0 ms
JUMP_GOAL = 2.0  # at 20-40 ms, hold's mean switch jump / the rule's


def sweep_base(cfg: EvalConfig) -> EvalConfig:
    """The config every cell starts from: :data:`FORWARDED` options of ``cfg``, its first
    engine, no reference policies (a --reference given is refused: the cells would not run it)."""
    if "reference" in given_options(cfg):
        raise ConfigError("latency sweep: its cells run the engine alone; --reference "
                          f"{' '.join(cfg.reference)} would not reach them")
    return with_changes(cell_base(cfg, (*FORWARDED, "engine", "no_expert", "reference"), "latency sweep"),
                        {"engine": cfg.engine[:1], "no_expert": True}, "latency sweep")


def cell_config(base: EvalConfig, latency: float, rule: str) -> EvalConfig:
    """One cell: ``base`` (:func:`sweep_base`) at ``latency`` ms under ``rule``."""
    return with_changes(base, {"latency": (float(latency),), **RULES[rule]},
                        f"latency sweep cell {latency:g} ms / {rule!r}")


def _result(cell: dict) -> dict:
    res = cell.get("results") or {}
    return next(iter(res.values()), {}) if res else {}


def run_sweep(cfg: EvalConfig) -> int:
    out = Path(str(cfg.latency_sweep))
    out.mkdir(parents=True, exist_ok=True)
    lats = [float(x) for x in (cfg.sweep_latencies or LATENCIES_MS)]
    rules = list(cfg.sweep_rules or RULES)
    bad = [r for r in rules if r not in RULES]
    if bad:
        print(f"error: unknown rule(s) {bad}; known: {list(RULES)}", file=sys.stderr)
        return 2
    cells = [(lat, r) for lat in lats for r in rules
             if not (lat == 0 and SAME_AT_ZERO.get(r) in rules)]
    try:
        base = sweep_base(cfg)
        configs = {cell: cell_config(base, *cell) for cell in cells}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = run_cells(cells, lambda cell: cell_command(configs[cell]), cfg.jobs, "sweep",
                        lambda cell: f"{cell[0]:g} ms / {cell[1]}", keep=out / "cells")
    # the rules not run at 0 ms share their twin's cell
    for lat, r in [(0.0, r) for r in rules if (0.0, r) not in results and 0.0 in lats]:
        twin = SAME_AT_ZERO[r]
        results[(lat, r)] = {**results[(lat, twin)], "same_as": twin}
    report = {"episodes": cfg.episodes, "duration_s": cfg.duration, "seed": cfg.seed,
              "model": cfg.model, "randomize": cfg.randomize,
              "engine": cfg.engine[0] if cfg.engine else "default (go2.onnx)",
              "wall_s": time.monotonic() - t0, "latencies_ms": lats, "rules": rules,
              "cells": [{"latency_ms": lat, "rule": r, **results[(lat, r)]}
                        for lat in lats for r in rules]}
    report["goals"] = {r: verdict(report, r) for r in rules}
    (out / "sweep.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "sweep.md").write_text(table(report))
    plot(report, out / "sweep.png")
    print(table(report))
    for r, g in report["goals"].items():
        print(f"goals for {r}: {json.dumps(g, default=float)}")
    return 0 if all("results" in c for c in report["cells"]) else 1


def _cell(report: dict, lat: float, rule: str) -> dict:
    for c in report["cells"]:
        if c["latency_ms"] == lat and c["rule"] == rule:
            return _result(c)
    return {}


def verdict(report: dict, rule: str) -> dict:
    """The issue's goals for one rule (None where the sweep lacks the cells)."""
    r0, r40, r80 = (_cell(report, x, rule) for x in (0.0, 40.0, 80.0))
    t0, t40 = r0.get("tracking_rmse_xy"), r40.get("tracking_rmse_xy")
    ratio = t40 / t0 if t0 and t40 is not None else None
    jumps = {}
    for lat in (20.0, 40.0):
        h, m = _cell(report, lat, "hold").get("switch_jump_mean"), _cell(report, lat, rule).get("switch_jump_mean")
        jumps[f"{lat:g}ms"] = h / m if h and m else None
    return {"tracking_40_vs_0": ratio, "tracking_met": ratio is not None and ratio <= TRACKING_GOAL,
            "falls_80": r80.get("falls"), "falls_80_met": r80.get("falls") == 0,
            "jump_reduction_vs_hold": jumps,
            "jump_met": all(v is not None and v >= JUMP_GOAL for v in jumps.values())}


def table(report: dict) -> str:
    """Markdown: one row per (latency, rule): falls, tracking, switch jumps, jerk, forecasts."""
    head = ("| latency | rule | falls | tracking RMSE (m/s) | switch jump mean / max (rad) | "
            "other-tick jump mean (rad) | jerk RMS (rad/s^3) | forecast error stale / plan / dynamics |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []

    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    for c in report["cells"]:
        r = _result(c)
        if not r:
            rows.append(f"| {c['latency_ms']:g} ms | {c['rule']} | error | | | | | |")
            continue
        rows.append(
            f"| {c['latency_ms']:g} ms | {c['rule']}{' (= ' + c['same_as'] + ')' if c.get('same_as') else ''} "
            f"| {r.get('falls')}/{r.get('episodes')} | {f(r.get('tracking_rmse_xy'))} "
            f"| {f(r.get('switch_jump_mean'))} / {f(r.get('switch_jump_max'))} | {f(r.get('step_jump_mean'))} "
            f"| {f(r.get('jerk_rms'), '.0f')} | {f(r.get('forecast_err_stale'))} / "
            f"{f(r.get('forecast_err_plan'))} / {f(r.get('forecast_err_dynamics'))} |")
    return head + "\n".join(rows) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lats = report["latencies_ms"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in report["rules"]:
        vals = [_cell(report, lat, r) for lat in lats]
        for ax, key in zip(axes, ("falls", "tracking_rmse_xy", "switch_jump_mean"), strict=True):
            ax.plot(lats, [v.get(key, float("nan")) if v.get(key) is not None else float("nan")
                           for v in vals], "o-", label=r)
    axes[0].set(title=f"falls of {report['episodes']} episodes", xlabel="plan latency (ms)")
    axes[1].set(title="velocity-tracking RMSE xy", xlabel="plan latency (ms)", ylabel="m/s")
    axes[2].set(title="mean joint-target jump at a chunk switch", xlabel="plan latency (ms)", ylabel="rad")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['engine']} on the {report['model']} Go2, {report['episodes']} x "
                 f"{report['duration_s']:g} s episodes per point", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
