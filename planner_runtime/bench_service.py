"""Benchmark of the planner service: observation -> chunk latency over loopback ZeroMQ.

``run_bench(engine_path)`` measures, on this machine:
1. sampler only: the engine's plan call in this process (warm-started plans, as served);
2. the service: a real ``planner-runtime serve`` subprocess on a loopback port, driven by
   ``PlannerClient`` one observation at a time (send, wait for its chunk): end-to-end
   latency, the sampler's own time inside the service (the chunk's ``infer_ms``), and the
   service process's CPU time (``/proc/<pid>/stat``) and resident memory
   (``/proc/<pid>/status`` VmRSS / VmHWM), busy and idle;
and returns one plain dict (median / p99 in milliseconds). ``planner-runtime bench --what
service`` calls it; ``python -m planner_runtime.bench_service --engine E.onnx`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.client import PlannerClient
from planner_runtime.server import free_tcp_port

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stats(ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    if a.size == 0:
        return {}
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (Linux /proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident) of a process in MiB (Linux /proc)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024.0
    return out


def sampler_latency(engine_path: str | Path, n: int, warmup: int, threads: int | None,
                    provider: str | None, seed: int = 0) -> dict[str, Any]:
    """Warm-started plans in this process, observations following the plan's stamps."""
    from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
    from planner_runtime.backends import load_engine
    from planner_runtime.protocol import Observation

    engine = load_engine(engine_path, provider=provider, threads=threads)
    try:
        spec = PlannerSpec.from_manifest(engine.manifest)
        planner = AsyncPlanner(engine, spec, seed=seed, cold_threshold=float("inf"))
        rng = np.random.default_rng(seed)
        state = rng.standard_normal(spec.S).astype(np.float32) * 0.1
        cond = np.zeros(spec.C, np.float32)
        last = None
        infer: list[float] = []
        for i in range(n + warmup):
            obs = Observation(i, i * spec.chunk * spec.dt, state, cond)
            chunk, last = planner.plan_once(obs, last)
            if i >= warmup:
                infer.append(chunk.timings["infer_ms"])
        return {"backend": engine.backend, "graph": spec.graph, "infer_ms": _stats(infer),
                "dims": dict(engine.manifest["dims"]), "warm_levels": spec.warm_levels.tolist()}
    finally:
        engine.close()


def service_latency(engine_path: str | Path, n: int, warmup: int, threads: int | None,
                    provider: str | None, rate_hz: float | None = None,
                    startup_timeout: float = 120.0, idle_s: float = 1.0) -> dict[str, Any]:
    """Drive a real ``planner-runtime serve`` subprocess over loopback ZeroMQ."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    argv = [sys.executable, "-m", "planner_runtime.cli", "serve", "--engine", str(engine_path),
            "--bind", endpoint, "--cold-threshold", "inf", "--log-level", "warning"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if provider is not None:
        argv += ["--provider", provider]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result: dict[str, Any] = {"endpoint": endpoint, "pid": proc.pid}
    try:
        with PlannerClient(endpoint, timeout=10.0) as client:
            meta = client.hello(timeout=startup_timeout)
            S, C, dt, chunk = meta["state_dim"], meta["cond_dim"], meta["dt"], meta["chunk"]
            result["memory_after_load_mb"] = proc_memory_mb(proc.pid)
            state = np.zeros(S, np.float32)
            cond = np.zeros(C, np.float32)
            e2e: list[float] = []
            infer: list[float] = []
            t_stamp0 = time.monotonic()
            cpu0 = wall0 = 0.0
            period = None if not rate_hz else 1.0 / rate_hz
            next_t = time.perf_counter()
            for i in range(n + warmup):
                if i == warmup:
                    cpu0, wall0 = proc_cpu_seconds(proc.pid), time.perf_counter()
                if period is not None:  # absolute deadlines, never accumulated sleeps
                    next_t += period
                    time.sleep(max(0.0, next_t - time.perf_counter()))
                t_send = time.perf_counter()
                seq = client.send_observation(state, cond, stamp=t_stamp0 + i * chunk * dt)
                if seq is None:
                    raise RuntimeError("observation could not be queued: service not connected")
                ch = client.wait_chunk(seq, timeout=10.0)
                t_recv = time.perf_counter()
                if i >= warmup:
                    e2e.append((t_recv - t_send) * 1e3)
                    infer.append(ch.timings.get("infer_ms", float("nan")))
            busy_wall = time.perf_counter() - wall0
            busy_cpu = proc_cpu_seconds(proc.pid) - cpu0
            cpu1 = proc_cpu_seconds(proc.pid)
            time.sleep(idle_s)  # idle: the service should not spin
            idle_cpu = proc_cpu_seconds(proc.pid) - cpu1
            health = client.ping()
            result.update({
                "backend": meta["backend"], "graph": meta["graph"], "e2e_ms": _stats(e2e),
                "service_infer_ms": _stats(infer),
                # what the service adds to each request: e2e minus that request's sampler time
                "overhead_ms": _stats(np.asarray(e2e) - np.asarray(infer)),
                "cpu_percent_busy": 100.0 * busy_cpu / busy_wall if busy_wall > 0 else None,
                "cpu_percent_idle": 100.0 * idle_cpu / idle_s,
                "memory_mb": proc_memory_mb(proc.pid), "torch_loaded": health["torch_loaded"],
                "plans": health["plans"], "rate_hz": rate_hz, "_e2e_raw": e2e,
            })
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        else:
            _, err = proc.communicate()
        result["returncode"] = proc.returncode
        if proc.returncode not in (0, None):
            result["stderr_tail"] = (err or "")[-2000:]
    return result


def save_histogram(e2e_ms: list[float], sampler_ms: dict[str, float], path: str | Path) -> str | None:
    """Histogram PNG of end-to-end latency with the sampler's median/p99 marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    a = np.asarray(e2e_ms)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(a, bins=min(80, max(10, a.size // 10)), color="tab:blue", alpha=0.8, label="end-to-end")
    ax.axvline(np.median(a), color="tab:blue", ls="-", label="end-to-end median")
    ax.axvline(np.percentile(a, 99), color="tab:blue", ls="--", label="end-to-end p99")
    if sampler_ms:
        ax.axvline(sampler_ms["median"], color="tab:orange", ls="-", label="sampler median")
        ax.axvline(sampler_ms["p99"], color="tab:orange", ls="--", label="sampler p99")
    ax.set_xlabel("observation -> chunk latency (ms)")
    ax.set_ylabel("count")
    ax.set_title(f"planner service over loopback ZeroMQ (n={a.size})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def run_bench(engine_path: str | Path, n: int = 500, warmup: int = 30, *,
              histogram: str | Path | None = None, threads: int | None = 1,
              provider: str | None = None, rate_hz: float | None = None,
              sampler_n: int | None = None) -> dict[str, Any]:
    """Sampler-only and end-to-end service latency, CPU and memory; one plain dict."""
    sampler = sampler_latency(engine_path, sampler_n or n, warmup, threads, provider)
    service = service_latency(engine_path, n, warmup, threads, provider, rate_hz)
    e2e_raw = service.pop("_e2e_raw", [])
    out: dict[str, Any] = {
        "engine": str(engine_path), "n": n, "warmup": warmup, "threads": threads,
        "sampler": sampler, "service": service,
        "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
    }
    s_p99 = sampler["infer_ms"].get("p99")
    e_p99 = service.get("e2e_ms", {}).get("p99")
    i_p99 = service.get("service_infer_ms", {}).get("p99")
    # Two readings of "end-to-end p99 within 1 ms of the sampler's p99": against the sampler
    # measured alone (a different time window: on a loaded machine mostly load noise), and
    # against the sampler's time inside the service for the same requests (the strict one,
    # used for the goal flag).
    if s_p99 is not None and e_p99 is not None:
        out["e2e_minus_sampler_p99_ms"] = e_p99 - s_p99
    if i_p99 is not None and e_p99 is not None:
        out["e2e_minus_service_infer_p99_ms"] = e_p99 - i_p99
        out["goal_e2e_p99_within_1ms"] = bool(e_p99 - i_p99 <= 1.0)
    rss = service.get("memory_mb", {}).get("VmRSS")
    if rss is not None:
        out["goal_rss_le_300mb"] = bool(rss <= 300.0)
    if histogram is not None and e2e_raw:
        out["histogram"] = save_histogram(e2e_raw, sampler["infer_ms"], histogram)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--provider", default=None)
    ap.add_argument("--rate-hz", type=float, default=None,
                    help="pace observations (default: back to back, one in flight)")
    ap.add_argument("--histogram", default=None, help="write a latency histogram PNG here")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    res = run_bench(args.engine, n=args.n, warmup=args.warmup, histogram=args.histogram,
                    threads=args.threads, provider=args.provider, rate_hz=args.rate_hz)
    if args.json:
        print(json.dumps(res))
        return 0
    s, v = res["sampler"]["infer_ms"], res["service"]
    e = v["e2e_ms"]
    print(f"engine      {res['engine']} ({res['sampler']['backend']}, {res['sampler']['graph']} graph)")
    print(f"sampler     median {s['median']:.3f} ms  p99 {s['p99']:.3f} ms  (in process, n={s['n']})")
    print(f"in service  median {v['service_infer_ms']['median']:.3f} ms  p99 {v['service_infer_ms']['p99']:.3f} ms")
    print(f"end-to-end  median {e['median']:.3f} ms  p99 {e['p99']:.3f} ms  "
          f"(p99 - sampler p99: {res['e2e_minus_sampler_p99_ms']:+.3f} ms alone, "
          f"{res['e2e_minus_service_infer_p99_ms']:+.3f} ms in service; goal <= 1 ms: "
          f"{res['goal_e2e_p99_within_1ms']})")
    o = v["overhead_ms"]
    print(f"overhead    median {o['median']:.3f} ms  p99 {o['p99']:.3f} ms  (per request: e2e - its in-service sampler time)")
    print(f"service     RSS {v['memory_mb']['VmRSS']:.1f} MiB (peak {v['memory_mb']['VmHWM']:.1f})  "
          f"CPU busy {v['cpu_percent_busy']:.1f} %  idle {v['cpu_percent_idle']:.1f} %  "
          f"torch loaded: {v['torch_loaded']}")
    if res.get("histogram"):
        print(f"histogram   {res['histogram']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
