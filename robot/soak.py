"""Soak benchmark (not a CI test): the service, the controller and the simulated Go2 on
loopback DDS for a long time, at the robot's rates, watched for drift.

    python -m robot.soak --duration 3600 --out soak_out          # one hour (the default)
    python -m robot.soak --duration 180 --out soak_out --json     # a 3-minute smoke run

Three processes, as on the robot: ``planner-runtime serve`` (the engine: ``--engine``, by
default the Go2-sized probe engine, which stands while "planning"), ``python -m
sim.dds_robot`` (the MuJoCo Go2 on rt/lowstate / rt/lowcmd at 500 Hz) and ``planner-runtime
controller`` (500 Hz loop, replanning every 80 ms) with a local control endpoint. Every
``--interval`` seconds this script samples, from outside the processes:

- resident memory (VmRSS) and CPU use of each process (/proc);
- the controller's loop period and plan age (observation stamp -> chunk accepted) over the
  interval, through the control endpoint's ``stats`` command;
- the service's health (plans, last inference time) with a ``ping`` (a non-owner may ping).

It writes ``soak.json`` (every sample, the controller's and the stand-in's final reports,
and the analysis) and ``soak.png``, and prints the verdicts. After ``--warmup`` seconds:
memory drift = (mean RSS over the last tenth - mean over the first tenth) / first, with
a least-squares slope in MB/hour; latency trend = change of the windows' median plan age and
p99 loop period between the first and the last quarter, with the slope and its standard
error. Verdicts: faults (any damping before the end; watchdog holds, a chunk later than the
0.2 s grace, are counted and listed apart) 0; memory drift under 5 % for
the service and the controller (the simulated robot is reported, not judged: it is not
onboard); no latency trend (a change over 10 % whose slope is over 2 standard errors).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def _env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y over t (per hour) and its standard error."""
    if len(t) < 3 or np.ptp(t) <= 0:
        return float("nan"), float("nan")
    th = (t - t.mean()) / 3600.0
    slope = float(np.sum(th * (y - y.mean())) / np.sum(th * th))
    resid = y - y.mean() - slope * th
    se = float(np.sqrt(np.sum(resid ** 2) / (len(t) - 2) / np.sum(th * th)))
    return slope, se


def analyse(samples: list[dict], warmup: float, mem_limit_pct: float = 5.0,
            trend_limit_pct: float = 10.0) -> dict[str, Any]:
    """Drift and trend verdicts from the samples (see the module docstring)."""
    post = [s for s in samples if s["t"] >= warmup]
    out: dict[str, Any] = {"warmup_s": warmup, "samples_after_warmup": len(post)}
    if len(post) < 4:
        out["error"] = "too few samples after the warm-up: run longer or lower --warmup"
        return out
    t = np.array([s["t"] for s in post])
    span = t[-1] - t[0]
    win = max(span * 0.1, 1e-9)
    first_w, last_w = t <= t[0] + win, t >= t[-1] - win
    mem: dict[str, Any] = {}
    for name in ("serve", "controller", "robot"):
        y = np.array([s["rss_mb"].get(name) or np.nan for s in post], float)
        ok = np.isfinite(y)
        if ok.sum() < 4:
            continue
        if not (ok & first_w).any() or not (ok & last_w).any():
            continue
        a, b = float(np.mean(y[ok & first_w])), float(np.mean(y[ok & last_w]))
        slope, se = _fit(t[ok], y[ok])
        judged = name != "robot"
        drift = 100.0 * (b - a) / a
        mem[name] = {"first_mb": a, "last_mb": b, "drift_pct": drift, "slope_mb_per_h": slope,
                     "slope_se": se, "max_mb": float(np.nanmax(y)),
                     "verdict": ("ok" if abs(drift) < mem_limit_pct else "drift") if judged else "not judged"}
    out["memory"] = mem
    lat: dict[str, Any] = {}
    for key, field, stat in (("plan_age_median_ms", "plan_age_ms", "median"),
                             ("plan_age_p99_ms", "plan_age_ms", "p99"),
                             ("period_p99_ms", "period_ms", "p99"),
                             ("period_median_ms", "period_ms", "median")):
        y = np.array([(s["controller"].get(field) or {}).get(stat, np.nan) if s.get("controller") else np.nan
                      for s in post], float)
        ok = np.isfinite(y)
        if ok.sum() < 8:  # e.g. no plans after a fault: no trend can be judged
            lat[key] = {"samples": int(ok.sum()), "verdict": "too few samples"}
            continue
        tk, yk = t[ok], y[ok]  # the quarters of the samples that have a value
        q = max(2, len(tk) // 4)
        a, b = float(yk[:q].mean()), float(yk[-q:].mean())
        slope, se = _fit(tk, yk)
        change = 100.0 * (b - a) / a if a else float("nan")
        trend = abs(change) > trend_limit_pct and abs(slope) > 2 * se
        lat[key] = {"samples": int(ok.sum()), "first_quarter": a, "last_quarter": b, "change_pct": change,
                    "slope_per_h": slope, "slope_se": se, "verdict": "trend" if trend else "no trend"}
    out["latency"] = lat
    return out


def _plot(samples: list[dict], path: Path, warmup: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t = np.array([s["t"] for s in samples]) / 60.0
    fig, ax = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for name in ("serve", "controller", "robot"):
        ax[0].plot(t, [s["rss_mb"].get(name) or np.nan for s in samples], label=name)
    ax[0].set_ylabel("resident MB")
    ax[0].legend()

    def col(field: str, stat: str) -> list[float]:
        return [((s.get("controller") or {}).get(field) or {}).get(stat, np.nan) for s in samples]

    ax[1].plot(t, col("plan_age_ms", "median"), label="median")
    ax[1].plot(t, col("plan_age_ms", "p99"), label="p99")
    ax[1].set_ylabel("plan age at receipt, ms")
    ax[1].legend()
    ax[2].plot(t, col("period_ms", "median"), label="median")
    ax[2].plot(t, col("period_ms", "p99"), label="p99")
    ax[2].plot(t, col("period_ms", "max"), label="max", alpha=0.5)
    ax[2].set_ylabel("loop period, ms")
    ax[2].legend()
    for name in ("serve", "controller", "robot"):
        ax[3].plot(t, [s["cpu_pct"].get(name, np.nan) for s in samples], label=name)
    ax[3].set_ylabel("CPU %")
    ax[3].set_xlabel("minutes")
    ax[3].legend()
    for a in ax:
        a.axvline(warmup / 60.0, color="grey", ls=":", lw=1)
        a.grid(alpha=0.3)
    fig.suptitle("soak: service + controller + simulated Go2 on loopback DDS")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def run(args: argparse.Namespace) -> int:
    from planner_runtime.client import PlannerClient, PlannerError
    from planner_runtime.server import free_tcp_port
    from robot.control_endpoint import send

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = Path(args.engine) if args.engine else None
    if engine is None:
        from robot.probe_engine import build_probe_engine

        engine = build_probe_engine(out / "probe.onnx")
    domain = args.domain_id if args.domain_id is not None else random.randint(100, 200)
    ep = f"tcp://127.0.0.1:{free_tcp_port()}"
    control = f"ipc://{out.resolve()}/controller.sock"
    env = _env()
    py = sys.executable
    logs = {n: open(out / f"{n}.log", "w") for n in ("serve", "robot", "controller")}  # noqa: SIM115
    procs: dict[str, subprocess.Popen] = {}
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    samples: list[dict] = []
    summary: dict | None = None
    try:
        procs["serve"] = subprocess.Popen(
            [py, "-m", "planner_runtime.cli", "serve", "--engine", str(engine), "--bind", ep, "--threads", "1"],
            stdout=logs["serve"], stderr=subprocess.STDOUT, env=env)
        procs["robot"] = subprocess.Popen(
            [py, "-m", "sim.dds_robot", "--domain-id", str(domain), "--iface", "lo", "--dds-start-pose",
             "lying", "--dds-stats", str(out / "robot_stats.json")],
            stdout=subprocess.PIPE, stderr=logs["robot"], text=True, env=env)
        if '"ready"' not in (procs["robot"].stdout.readline() if procs["robot"].stdout else ""):
            raise RuntimeError("the simulated Go2 did not start (see robot.log)")
        with PlannerClient(ep, timeout=60.0) as c:
            c.hello(timeout=60.0)
        procs["controller"] = subprocess.Popen(
            [py, "-m", "planner_runtime.cli", "controller", "--iface", "lo", "--domain-id", str(domain),
             "--planner", ep, "--control", control, "--schedule", args.schedule,
             "--duration", str(args.duration), "--json", *args.controller_args.split()],
            stdout=subprocess.PIPE, stderr=logs["controller"], text=True, env=env)
        say(f"[soak] {args.duration:.0f} s: service {ep}, simulated Go2 on DDS domain {domain}, "
            f"engine {engine.name}; sampling every {args.interval:g} s into {out}")
        t0 = time.monotonic()
        cpu0 = {n: (cpu_s(p.pid), t0) for n, p in procs.items()}
        client = PlannerClient(ep, timeout=2.0)
        next_t = t0 + args.interval
        last_print = t0
        while procs["controller"].poll() is None:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += args.interval
            if procs["controller"].poll() is not None:
                break
            now = time.monotonic()
            s: dict[str, Any] = {"t": now - t0, "rss_mb": {}, "cpu_pct": {}}
            for n, p in procs.items():
                s["rss_mb"][n] = rss_mb(p.pid)
                c1 = cpu_s(p.pid)
                c0, tc0 = cpu0[n]
                if c1 is not None and c0 is not None and now > tc0:
                    s["cpu_pct"][n] = 100.0 * (c1 - c0) / (now - tc0)
                cpu0[n] = (c1, now)
            st = send(control, "stats", timeout=2.0)
            s["controller"] = st if st and st.get("ok") else None
            try:
                h = client.ping(timeout=2.0)
                s["service"] = {"plans": h["plans"], "last_infer_ms": h["last_infer_ms"],
                                "status": h["status"], "owner": bool((h.get("ownership") or {}).get("owner"))}
            except PlannerError:
                s["service"] = None
            samples.append(s)
            if now - last_print >= max(60.0, args.interval):
                last_print = now
                stats = s["controller"] or {}
                say(f"[soak] t={s['t']:6.0f} s mode {stats.get('mode')} rss serve {s['rss_mb'].get('serve') or 0:.1f} "
                    f"controller {s['rss_mb'].get('controller') or 0:.1f} robot {s['rss_mb'].get('robot') or 0:.1f} MB; "
                    f"plan age p99 {((stats.get('plan_age_ms') or {}).get('p99') or float('nan')):.1f} ms")
        client.close()
        ctl_out, _ = procs["controller"].communicate(timeout=60)
        lines = (ctl_out or "").strip().splitlines()
        summary = json.loads(lines[-1]) if lines else None
    except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError, PlannerError) as exc:
        print(f"error: {exc} (logs in {out})", file=sys.stderr)
        return 1
    finally:
        for n in ("controller", "robot", "serve"):
            proc = procs.get(n)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for f in logs.values():
            f.close()
    robot_stats = None
    if (out / "robot_stats.json").is_file():
        robot_stats = json.loads((out / "robot_stats.json").read_text())
        robot_stats.pop("trace", None)
    warmup = min(args.warmup, 0.5 * args.duration)
    result = analyse(samples, warmup)
    transitions = (summary or {}).get("transitions", [])
    t_plan = next((tr["t"] for tr in transitions if tr["to"] == "planning"), None)
    faults = [tr for tr in transitions if tr["to"] == "damping"]
    holds = [tr for tr in transitions if tr["to"] == "hold"]
    result.update({
        "duration_s": args.duration, "interval_s": args.interval, "engine": str(engine),
        "faults": len(faults), "fault_transitions": faults, "reached_planning": t_plan is not None,
        "watchdog_holds": len(holds), "hold_transitions": holds,
        "controller_exit": procs["controller"].returncode,
        "controller": None if summary is None else {k: summary.get(k) for k in (
            "mode", "ticks", "counts", "chunks_rejected", "period_ms", "period_error_ms", "plan_age_ms",
            "robot", "planner", "fault")},
        "robot": robot_stats,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
    })
    mem = result.get("memory", {})
    lat = result.get("latency", {})
    result["verdicts"] = {
        "faults": "ok" if not faults and t_plan is not None else "FAULTS" if faults else "never planned",
        "memory": {k: v["verdict"] for k, v in mem.items()},
        "latency": {k: v["verdict"] for k, v in lat.items()},
    }
    result["plot"] = _plot(samples, out / "soak.png", warmup)
    (out / "soak.json").write_text(json.dumps({**result, "samples": samples}, indent=1, default=float))
    if args.json:
        print(json.dumps(result, default=float))
    else:
        say(f"[soak] faults (damping): {len(faults)}; watchdog holds (a chunk over --grace late): "
            f"{len(holds)}; reached planning: {t_plan is not None}")
        for k, v in mem.items():
            say(f"[soak] memory {k:10s} {v['first_mb']:.1f} -> {v['last_mb']:.1f} MB ({v['drift_pct']:+.2f} %, "
                f"{v['slope_mb_per_h']:+.2f} +- {v['slope_se']:.2f} MB/h): {v['verdict']}")
        for k, v in lat.items():
            if "first_quarter" not in v:
                say(f"[soak] {k:20s} {v['samples']} samples: {v['verdict']}")
                continue
            say(f"[soak] {k:20s} {v['first_quarter']:.3f} -> {v['last_quarter']:.3f} ({v['change_pct']:+.1f} %, "
                f"{v['slope_per_h']:+.3f} +- {v['slope_se']:.3f} /h; {v['samples']} samples): {v['verdict']}")
        say(f"[soak] report {out / 'soak.json'}, plot {result['plot']}")
    bad = bool(faults) or t_plan is None or any(v == "drift" for v in result["verdicts"]["memory"].values())
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds of controller run (default 3600)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--warmup", type=float, default=120.0,
                    help="seconds excluded from the drift and trend analysis (default 120; at most half the run)")
    ap.add_argument("--engine", default=None, help="engine to serve (default: the Go2-sized probe engine)")
    ap.add_argument("--schedule", default="0:0.3,0,0;60:0,0,0.4", help="controller command schedule")
    ap.add_argument("--controller-args", default="", metavar="ARGS",
                    help="more `planner-runtime controller` options, e.g. '--rt-priority 80' (default: "
                         "none: the robot's timeouts, e.g. --state-timeout 0.1)")
    ap.add_argument("--domain-id", type=int, default=None, help="DDS domain (default: random 100-200)")
    ap.add_argument("--out", default="soak_out", help="output directory (default soak_out)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (without the samples)")
    args = ap.parse_args(argv)
    if not (args.duration > 0 and args.interval > 0):
        print("error: --duration and --interval must be > 0", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
