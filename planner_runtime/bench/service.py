"""Benchmark of the planner service: observation -> chunk latency over loopback ZeroMQ.

``run_bench(engine_path)`` starts a real ``planner-runtime serve`` subprocess on a loopback
port and drives it with ``PlannerClient``, one observation at a time (send, wait for its
chunk). Between blocks of 25 requests, a separate bench worker process plans 25 times with
the same engine in process (``AsyncPlanner.plan_once``, warm-started as served, no socket or
thread hand-off involved): that is the "sampler only" reading, interleaved with the requests
so that both see the same machine load (the worker, not the client, runs it: see
``_SamplerProcess``). It reports, in ms
(median / p99): the sampler only; end-to-end (observation sent -> its chunk decoded); the
engine time of those requests inside the service (the chunk's ``infer_ms``); per message,
end-to-end minus its engine time, split into the planner thread's own work and everything
outside it; how long the threads involved waited, runnable, for a CPU
(``/proc/<pid>/task/*/schedstat``); and the service process's CPU (``/proc/<pid>/stat``) and resident memory
(``/proc/<pid>/status`` VmRSS / VmHWM), answering and idle. The baseline measured in the
same run, in the same blocks: the floor (``_FloorBaseline``), a bare one-thread ZeroMQ
server that runs the same warm-started plan per request and answers with a chunk's bytes
(no protocol, no validation, no second thread); the service's per-message cost is quoted
as a ratio to the floor's, and the floor gets the same goal check. ``goal_e2e_p99_within_1ms``:
end-to-end p99 - sampler-only p99 <= 1 ms; ``goal_e2e_p99_ci``: how sure one run is of it (a
paired block-bootstrap interval for that difference and a verdict: met, missed or
undetermined; ``p99_gap_ci``). ``planner-runtime bench --what service`` runs it and prints
``format_report``; ``python -m planner_runtime.bench.service`` is only the entry of its two
worker processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from planner_runtime.bench.stats import histogram_png, summary
from planner_runtime.client import PlannerClient, wait_for_service
from planner_runtime.scheduling import parse_cpus
from planner_runtime.server import free_tcp_port

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


GOAL_GAP_MS = 1.0  # the service issue's goal: end-to-end p99 within 1 ms of the sampler's p99


def p99_gap_ci(e2e_ms: Any, sampler_ms: Any, block: int = 25, n_boot: int = 1000,
               level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """p99(e2e) - p99(sampler) with a paired block-bootstrap confidence interval.

    A p99 over 1000 readings rests on its 10 largest, so two runs of the same code differ by
    tenths of a millisecond: one run's point estimate cannot say whether a 1 ms goal is met.
    The readings were taken in alternating blocks (``block`` requests, then ``block``
    sampler-only plans), so block k of one array and block k of the other saw the same
    machine: each resample draws whole block indices with replacement and takes those blocks
    from both arrays (the machine's drift over the run stays paired, and within-block
    correlation is kept). Only whole blocks present in both arrays are resampled.

    Returns ``gap_ms`` (the point estimate, on all readings), ``ci`` [lo, hi] (percentile
    interval at ``level``), ``n_blocks``, and ``verdict``: "met" when hi <= 1 ms, "missed"
    when lo > 1 ms, otherwise "undetermined" (this run cannot tell)."""
    a = np.asarray(e2e_ms, np.float64)
    b = np.asarray(sampler_ms, np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("p99_gap_ci needs readings in both arrays")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("p99_gap_ci: readings must be finite")
    if block < 1 or n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bad bootstrap settings: block={block}, n_boot={n_boot}, level={level}")
    gap = summary(a)["p99"] - summary(b)["p99"]
    nb = min(a.size, b.size) // block
    out: dict[str, Any] = {"gap_ms": gap, "goal_ms": GOAL_GAP_MS, "level": level, "block": block,
                           "n_blocks": int(nb), "n_boot": int(n_boot)}
    if nb < 2:  # nothing to resample: the interval is unknown
        out.update(ci=None, verdict="undetermined")
        return out
    A = a[: nb * block].reshape(nb, block)
    B = b[: nb * block].reshape(nb, block)
    rng = np.random.default_rng(seed)
    gaps = np.empty(n_boot)
    step = max(1, 2_000_000 // (nb * block))  # resamples per batch: bounded memory
    for i in range(0, n_boot, step):
        k = min(step, n_boot - i)
        idx = rng.integers(0, nb, size=(k, nb))
        gaps[i:i + k] = (np.percentile(A[idx].reshape(k, -1), 99, axis=1)
                         - np.percentile(B[idx].reshape(k, -1), 99, axis=1))
    lo, hi = np.percentile(gaps, [50 * (1 - level), 50 * (1 + level)])
    out["ci"] = [float(lo), float(hi)]
    out["verdict"] = "met" if hi <= GOAL_GAP_MS else ("missed" if lo > GOAL_GAP_MS else "undetermined")
    return out


GOAL_LIMITS = {
    "machine": "the floor (a bare one-thread ZeroMQ server around the same plan) misses it too: "
               "at this setting this machine cannot meet the goal, whatever the service does",
    "service": "the floor meets it and the service is not shown to: the machine allows the goal, "
               "the service's own work is what keeps it from it",
}


def goal_limited_by(service_ci: dict[str, Any] | None, floor_ci: dict[str, Any] | None) -> str | None:
    """Who keeps the goal from being met in this run, from the service's and the floor's
    verdicts (``p99_gap_ci``): "machine" when even the floor misses it, "service" when the
    floor meets it and the service does not (missed or undetermined), None when the service
    meets it or the run cannot tell (the floor undetermined, or no floor)."""
    s = (service_ci or {}).get("verdict")
    f = (floor_ci or {}).get("verdict")
    if s == "met":
        return None
    limited_by: dict[str | None, str] = {"missed": "machine", "met": "service"}
    return limited_by.get(f)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (Linux /proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def task_schedstat(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread of a process: (CPU time, time runnable but waiting for a CPU), ns (Linux
    ``/proc/<pid>/task/*/schedstat``; empty where it is not available)."""
    out: dict[str, tuple[int, int]] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            out[tid] = (int(fields[0]), int(fields[1]))
        except (OSError, IndexError, ValueError):  # a thread that just ended, or no schedstat
            pass
    return out


def proc_runqueue_wait_ms(pid: int) -> float:
    """Total time the threads of a process have spent runnable but waiting for a CPU, ms.

    On a machine with more runnable threads than cores this is where a latency tail comes
    from."""
    return sum(w for _, w in task_schedstat(pid).values()) / 1e6


def _request_waits(s0: dict[str, tuple[int, int]], s1: dict[str, tuple[int, int]],
                   c0: dict[str, tuple[int, int]], c1: dict[str, tuple[int, int]]) -> tuple[float, float]:
    """(all waits, waits off the engine call) in ms between two snapshots of the service's
    (s) and the client's (c) threads. The service thread that used the most CPU is the one
    that ran the engine; its waits are mostly time-slicing of the engine call (which the
    sampler-only reading suffers too), the others' are waits on the service's own path."""
    ds = {t: (s1[t][0] - s0[t][0], s1[t][1] - s0[t][1]) for t in s1 if t in s0}
    dc = sum(c1[t][1] - c0[t][1] for t in c1 if t in c0)
    total = sum(w for _, w in ds.values()) + dc
    engine_tid = max(ds, key=lambda t: ds[t][0]) if ds else None
    off = total - (ds[engine_tid][1] if engine_tid is not None else 0)
    return total / 1e6, off / 1e6


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident) of a process in MiB (Linux /proc)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024.0
    return out


class _InProcessSampler:
    """The same engine, planned in this (the bench's) process: the "sampler only" reading.

    Warm-started plans as the service makes them (``AsyncPlanner.plan_once`` with the same
    spec and cold threshold), observations following the plan's stamps."""

    def __init__(self, engine_path: str | Path, threads: int | None, provider: str | None,
                 seed: int = 0) -> None:
        from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
        from planner_runtime.backends import load_engine

        self.engine = load_engine(engine_path, provider=provider, threads=threads)
        try:
            self.spec = PlannerSpec.from_manifest(self.engine.manifest)
            self.planner = AsyncPlanner(self.engine, self.spec, seed=seed, cold_threshold=float("inf"))
        except Exception:
            self.engine.close()
            raise
        rng = np.random.default_rng(seed)
        self.state = rng.standard_normal(self.spec.S).astype(np.float32) * 0.1
        self.cond = np.zeros(self.spec.C, np.float32)
        self._last: Any = None
        self._i = 0

    def _obs(self, i: int) -> Any:
        from planner_runtime.protocol import Observation

        return Observation(i, i * self.spec.chunk * self.spec.dt, self.state, self.cond)

    def step(self) -> tuple[float, float]:
        """One plan; returns (engine infer_ms, ms this process waited for a CPU meanwhile)."""
        obs = self._obs(self._i)
        self._i += 1
        pid = os.getpid()
        w = proc_runqueue_wait_ms(pid)
        chunk, self._last = self.planner.plan_once(obs, self._last)
        return float(chunk.timings["infer_ms"]), proc_runqueue_wait_ms(pid) - w

    def info(self) -> dict[str, Any]:
        return {"backend": self.engine.backend, "graph": self.spec.graph,
                "dims": dataclasses.asdict(self.engine.manifest.dims), "warm_levels": self.spec.warm_levels.tolist()}

    def close(self) -> None:
        self.engine.close()


class _SamplerProcess:
    """An ``_InProcessSampler`` in its own process, stepped over a pipe.

    The bench's client process stays as light as a controller: if it ran the engine itself
    between requests, its own wake-ups for incoming chunks would queue behind that CPU use
    (the scheduler favours threads that have been sleeping) and inflate the end-to-end tail."""

    def __init__(self, engine_path: str | Path, threads: int | None, provider: str | None,
                 cpus: set[int] | None = None) -> None:
        self.proc = _start_worker(["--sampler-worker"], engine_path, threads, provider, cpus)
        self._info = json.loads(self._line())

    def _line(self) -> str:
        return _read_line(self.proc, "sampler worker")

    def step(self) -> tuple[float, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("plan\n")
        a, b = self._line().split()
        return float(a), float(b)

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def close(self) -> None:
        _stop_worker(self.proc)


def _read_line(proc: subprocess.Popen, what: str) -> str:
    """The worker's next line on its stdout; RuntimeError when it exited instead."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited with {proc.wait()}")
    return line


def _stop_worker(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Close the worker's stdin (its signal to finish) and wait; kill it if it does not."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _start_worker(role: list[str], engine_path: str | Path, threads: int | None, provider: str | None,
                  cpus: set[int] | None) -> subprocess.Popen:
    """A bench worker process (``role``: ``--sampler-worker`` or ``--floor-worker ...``) on a
    pipe: the engine, threads and provider of the service, pinned to the service's cores,
    so that its readings stay comparable with the service's. It exits when its stdin closes."""
    argv = [sys.executable, "-m", "planner_runtime.bench.service", *role,
            "--engine", str(engine_path), "--threads", str(threads if threads is not None else 0)]
    if provider is not None:
        argv += ["--provider", provider]
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=pre)


def _sampler_worker(engine: str, threads: int, provider: str | None) -> int:
    """``--sampler-worker``: one plan per ``plan`` line on stdin, "infer_ms wait_ms" back."""
    s = _InProcessSampler(engine, threads or None, provider)
    try:
        print(json.dumps(s.info()), flush=True)
        for line in sys.stdin:
            if line.strip() == "plan":
                a, b = s.step()
                print(f"{a!r} {b!r}", flush=True)
    finally:
        s.close()
    return 0


def _floor_worker(engine: str, threads: int, provider: str | None, bind: str) -> int:
    """``--floor-worker``: the floor baseline's server. One thread, one ROUTER socket, a
    blocking receive; per message one warm-started plan (the same ``plan_once`` as the
    sampler worker) and a reply of the engine time plus a chunk's worth of bytes (a real
    encoded chunk, made once). No decoding, validation, slot, second thread or encoding per
    request: what ZeroMQ and the engine cost with nothing of the service around them."""
    from planner_runtime import protocol as P

    s = _InProcessSampler(engine, threads or None, provider)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(bind)
        chunk, last = s.planner.plan_once(s._obs(0), None)
        body = P.encode(chunk.to_msg())
        i = 0
        print(json.dumps({"ready": True, "chunk_bytes": len(body)}), flush=True)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(sys.stdin, zmq.POLLIN)  # the bench holds the other end: EOF = it is gone
        while True:
            ready = dict(poller.poll())
            if sock not in ready:
                return 0
            ident, _ = sock.recv_multipart()
            # plan_once itself (not step(): its CPU-wait bookkeeping reads /proc)
            i += 1
            planned, last = s.planner.plan_once(s._obs(i), last)
            sock.send_multipart([ident, struct.pack("<d", planned.timings["infer_ms"]) + body])
    finally:
        sock.close(0)
        ctx.term()
        s.close()


class _FloorBaseline:
    """Client side of the floor baseline: a bare DEALER socket, a fixed encoded observation,
    a blocking receive; e2e per request and the engine time the server measured."""

    def __init__(self, engine_path: str | Path, threads: int | None, provider: str | None,
                 cpus: set[int] | None = None, dims: tuple[int, int] = (1, 1)) -> None:
        from planner_runtime import protocol as P

        endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        self.proc = _start_worker(["--floor-worker", "--bind", endpoint], engine_path, threads, provider, cpus)
        self.info = json.loads(_read_line(self.proc, "floor baseline server"))
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        self.sock.connect(endpoint)
        # an observation message of the service's size (the floor server does not read it)
        self._obs = P.encode(P.Observation(0, 0.0, np.zeros(dims[0], np.float32),
                                           np.zeros(dims[1], np.float32)).to_msg())

    def step(self) -> tuple[float, float]:
        """One request: (e2e ms, the server's engine ms)."""
        t = time.perf_counter()
        self.sock.send(self._obs)
        reply = self.sock.recv()
        e2e = (time.perf_counter() - t) * 1e3
        return e2e, struct.unpack("<d", reply[:8])[0]

    def close(self) -> None:
        _stop_worker(self.proc)
        self.sock.close(0)
        self._ctx.term()


def service_latency(engine_path: str | Path, n: int, warmup: int, threads: int | None,
                    provider: str | None, rate_hz: float | None = None,
                    startup_timeout: float = 120.0, idle_s: float = 1.0,
                    sampler_n: int | None = None, block: int = 25,
                    service_cpus: set[int] | None = None,
                    client_cpus: set[int] | None = None,
                    floor: bool = True) -> dict[str, Any]:
    """Drive a real ``planner-runtime serve`` subprocess over loopback ZeroMQ, and plan with
    the same engine in a sampler worker process in between: after every ``block`` requests,
    ``block`` sampler-only plans, so both readings see the same machine load.

    ``service_cpus`` pins the service (``serve --cpus``) and the sampler worker to those
    CPUs, ``client_cpus`` this (client) process, as a robot would keep the planner and the
    controller on cores of their own.

    ``floor``: a third reading in the same blocks, the floor baseline (``_FloorBaseline``): a
    bare one-thread ROUTER server running the same warm-started plan per request, driven by
    a bare DEALER socket. What ZeroMQ round trips and the engine cost on this machine with
    none of the service around them; the service's numbers are quoted against it."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    argv = [sys.executable, "-m", "planner_runtime.cli", "serve", "--engine", str(engine_path),
            "--bind", endpoint, "--cold-threshold", "inf", "--log-level", "warning"]
    if service_cpus:
        argv += ["--cpus", ",".join(str(c) for c in sorted(service_cpus))]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if provider is not None:
        argv += ["--provider", provider]
    sampler_n = n if sampler_n is None else int(sampler_n)
    if rate_hz:
        # Paced: one sampler-only plan in the slack after each request, so that it runs as
        # seldom as the served plans do (a plan every period starts with colder caches than
        # back-to-back plans, and the comparison must not favour either side).
        block = 1
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result: dict[str, Any] = {"endpoint": endpoint, "pid": proc.pid,
                              "service_cpus": sorted(service_cpus) if service_cpus else None,
                              "client_cpus": sorted(client_cpus) if client_cpus else None}
    local: _SamplerProcess | None = None
    base: _FloorBaseline | None = None
    own_affinity = os.sched_getaffinity(0)
    try:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        local = (_SamplerProcess(engine_path, threads, provider, service_cpus)
                 if sampler_n > 0 else None)
        if local is not None:
            for _ in range(warmup):
                local.step()
        with PlannerClient(endpoint, timeout=10.0) as client:
            meta = wait_for_service(client, proc, startup_timeout)
            S, C, dt, chunk = meta["state_dim"], meta["cond_dim"], meta["dt"], meta["chunk"]
            result["memory_after_load_mb"] = proc_memory_mb(proc.pid)
            if floor and sampler_n > 0:
                base = _FloorBaseline(engine_path, threads, provider, service_cpus, (S, C))
                for _ in range(warmup):
                    base.step()
            f_e2e: list[float] = []
            f_infer: list[float] = []
            state = np.zeros(S, np.float32)
            cond = np.zeros(C, np.float32)
            e2e: list[float] = []
            timings: list[dict[str, float]] = []
            s_infer: list[float] = []
            s_wait: list[float] = []
            waits: list[float] = []
            off_waits: list[float] = []
            me = os.getpid()
            t_stamp0 = time.monotonic()
            busy_wall = cpu0 = 0.0
            period = None if not rate_hz else 1.0 / rate_hz
            next_t = time.perf_counter()
            for i in range(n + warmup):
                if i == warmup:
                    cpu0 = proc_cpu_seconds(proc.pid)
                if period is not None:  # absolute deadlines, never accumulated sleeps
                    next_t += period
                    time.sleep(max(0.0, next_t - time.perf_counter()))
                s0, c0 = task_schedstat(proc.pid), task_schedstat(me)
                t_send = time.perf_counter()
                seq = client.send_observation(state, cond, stamp=t_stamp0 + i * chunk * dt)
                if seq is None:
                    raise RuntimeError("observation could not be queued: service not connected")
                ch = client.wait_chunk(seq, timeout=10.0)
                t_recv = time.perf_counter()
                s1, c1 = task_schedstat(proc.pid), task_schedstat(me)
                if i >= warmup:
                    w_all, w_off = _request_waits(s0, s1, c0, c1)
                    waits.append(w_all)
                    off_waits.append(w_off)
                    busy_wall += t_recv - t_send
                    e2e.append((t_recv - t_send) * 1e3)
                    timings.append(ch.timings)
                # Sampler-only plans run in blocks between blocks of requests: requests go back
                # to back within a block (an engine run in between would leave the client's and
                # the service's caches cold and add that to every request), and both readings
                # still share the machine's load over the run.
                due = (i + 1 - warmup) // block * block if i + 1 < n + warmup else n
                ran = False
                while local is not None and len(s_infer) < min(due, sampler_n):
                    a, b = local.step()
                    s_infer.append(a)
                    s_wait.append(b)
                    ran = True
                while base is not None and len(f_e2e) < min(due, sampler_n):
                    fe, fi = base.step()
                    f_e2e.append(fe)
                    f_infer.append(fi)
                    ran = True
                if ran and period is not None and time.perf_counter() > next_t + period:
                    next_t = time.perf_counter()  # a plan overran the period: no catch-up burst
            cpu1 = proc_cpu_seconds(proc.pid)
            # the service is idle while the sampler process plans, so its CPU time over the
            # loop is spent answering the requests
            busy_cpu = cpu1 - cpu0
            time.sleep(idle_s)  # idle: the service should not spin
            idle_cpu = proc_cpu_seconds(proc.pid) - cpu1
            health = client.ping()
            e = np.asarray(e2e)
            infer = np.asarray([t.get("infer_ms", np.nan) for t in timings])
            planner_ms = np.asarray([t.get("queue_ms", 0.0) + t.get("plan_ms", np.nan) + t.get("post_ms", 0.0)
                                     for t in timings])
            result.update({
                "backend": meta["backend"], "graph": meta["graph"], "e2e_ms": summary(e),
                "service_infer_ms": summary(infer),
                # what the service adds to each request: e2e minus that request's engine time
                "overhead_ms": summary(e - infer),
                # where that goes (medians): the planner thread's own work around the engine
                # call, and everything outside the planner thread (client encode/decode, ZeroMQ
                # both ways, server decode, the two thread hand-offs, chunk encode)
                "overhead_split_ms": {
                    "queue_median": summary(t["queue_ms"] for t in timings if "queue_ms" in t).get("median"),
                    "prep_median": summary(t["prep_ms"] for t in timings if "prep_ms" in t).get("median"),
                    "engine_wrapper_median": summary(t["plan_ms"] - t["prep_ms"] - t["infer_ms"]
                                                     for t in timings).get("median"),
                    "post_median": summary(t["post_ms"] for t in timings if "post_ms" in t).get("median"),
                    "outside_planner_thread": summary(e - planner_ms),
                },
                "cpu_percent_busy": 100.0 * busy_cpu / busy_wall if busy_wall > 0 else None,
                "cpu_percent_idle": 100.0 * idle_cpu / idle_s,
                "memory_mb": proc_memory_mb(proc.pid), "torch_loaded": health["torch_loaded"],
                "plans": health["plans"], "rate_hz": rate_hz, "_e2e_raw": e2e,
                # time the service's and the client's threads spent runnable but waiting for a
                # CPU during each request (schedstat; summed over threads, so two threads
                # waiting at once count twice): the machine's share of the latency
                "runqueue_wait_ms": summary(waits),
                # the same without the thread that ran the engine: waits on the service's path
                "runqueue_wait_off_engine_ms": summary(off_waits),

            })
            if local is not None:
                mode = (f"one plan after each request, paced at {rate_hz} Hz" if rate_hz else
                        f"in blocks of {block} between blocks of {block} service requests")
                if base is not None:
                    fe_a, fi_a = np.asarray(f_e2e), np.asarray(f_infer)
                    result["_floor"] = {"e2e_ms": summary(fe_a), "infer_ms": summary(fi_a), "_e2e_raw": f_e2e,
                                        "overhead_ms": summary(fe_a - fi_a), "chunk_bytes": base.info["chunk_bytes"]}
                result["_sampler"] = {**local.info(), "mode": mode,
                                      "infer_ms": summary(s_infer), "runqueue_wait_ms": summary(s_wait),
                                      "_infer": s_infer}
    finally:
        if client_cpus:
            os.sched_setaffinity(0, own_affinity)
        if local is not None:
            local.close()
        if base is not None:
            base.close()
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


def _ci_text(ci: dict[str, Any] | None) -> str:
    if not ci or ci.get("ci") is None:
        return "no interval: too few blocks"
    lo, hi = ci["ci"]
    return f"{100 * ci['level']:.0f}% block-bootstrap interval {lo:+.3f} .. {hi:+.3f} ms: {ci['verdict']}"


def run_bench(engine_path: str | Path, n: int = 500, warmup: int = 30, *,
              histogram: str | Path | None = None, threads: int | None = 1,
              provider: str | None = None, rate_hz: float | None = None,
              sampler_n: int | None = None, service_cpus: str | None = None,
              client_cpus: str | None = None, block: int = 25, floor: bool = True) -> dict[str, Any]:
    """Sampler-only and end-to-end service latency, CPU and memory; one plain dict.

    The sampler-only reading is the same engine planned in process by a bench worker,
    interleaved with the service requests (blocks of 25 of each), so that both see the same
    machine load; ``sampler_n`` (default ``n``) caps how many in-process plans are timed.
    The goal "end-to-end p99 within 1 ms of the sampler's p99" is judged on these two
    readings of one run (``goal_e2e_p99_within_1ms``)."""
    service = service_latency(engine_path, n, warmup, threads, provider, rate_hz, sampler_n=sampler_n,
                              service_cpus=parse_cpus(service_cpus), client_cpus=parse_cpus(client_cpus),
                              block=block, floor=floor)
    e2e_raw = service.pop("_e2e_raw", [])
    sampler = service.pop("_sampler", None) or {"infer_ms": {}}
    base = service.pop("_floor", None)
    out: dict[str, Any] = {
        "engine": str(engine_path), "n": n, "warmup": warmup, "threads": threads,
        "sampler": sampler, "service": service,
        "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
    }
    s_p99 = sampler["infer_ms"].get("p99")
    e_p99 = service.get("e2e_ms", {}).get("p99")
    i_p99 = service.get("service_infer_ms", {}).get("p99")
    boot_block = block if not rate_hz else 25  # paced runs alternate per request
    s_raw = sampler.get("_infer") or []
    if s_p99 is not None and e_p99 is not None:
        # the gap, and how sure this run is of it: paired block bootstrap (see p99_gap_ci)
        ci = out["goal_e2e_p99_ci"] = p99_gap_ci(e2e_raw, s_raw, boot_block)
        out["e2e_minus_sampler_p99_ms"] = ci["gap_ms"]
        out["goal_e2e_p99_within_1ms"] = bool(ci["gap_ms"] <= GOAL_GAP_MS)
    if i_p99 is not None and e_p99 is not None:
        # the same requests' own engine time inside the service (no second process involved)
        out["e2e_minus_service_infer_p99_ms"] = e_p99 - i_p99
    if base is not None and s_p99 is not None:
        # the floor: the same goal for a bare ZeroMQ server around the same plan, same run
        ci = base["goal_e2e_p99_ci"] = p99_gap_ci(base.pop("_e2e_raw"), s_raw, boot_block)
        base["e2e_minus_sampler_p99_ms"] = ci["gap_ms"]
        base["goal_e2e_p99_within_1ms"] = bool(ci["gap_ms"] <= GOAL_GAP_MS)
        out["floor"] = base
        out["goal_limited_by"] = goal_limited_by(out.get("goal_e2e_p99_ci"), ci)
        so, fo = service["overhead_ms"], base["overhead_ms"]
        out["overhead_vs_floor"] = {"median_ratio": so["median"] / fo["median"], "p99_ratio": so["p99"] / fo["p99"],
                                    "median_excess_ms": so["median"] - fo["median"],
                                    "p99_excess_ms": so["p99"] - fo["p99"]}
    sampler.pop("_infer", None)
    rss = service.get("memory_mb", {}).get("VmRSS")
    if rss is not None:
        out["goal_rss_le_300mb"] = bool(rss <= 300.0)
    if histogram is not None and e2e_raw:
        out["histogram"] = histogram_png({"end-to-end": e2e_raw, "sampler only": s_raw}, histogram,
                                         f"planner service over loopback ZeroMQ (n={len(e2e_raw)})",
                                         "observation -> chunk latency (ms)")
    return out


def format_report(res: dict[str, Any]) -> str:
    """The human-readable lines of a ``run_bench`` result (what ``planner-runtime bench
    --what service`` prints without ``--json``)."""
    lines: list[str] = []
    s, v = res["sampler"]["infer_ms"], res["service"]
    e, o = v["e2e_ms"], v["overhead_ms"]
    sp = v["overhead_split_ms"]
    lines.append(f"engine        {res['engine']} ({v['backend']}, {v['graph']} graph), n={e['n']}, "
                 f"load average {res['load_average'][0]:.2f} on {res['cpus']} CPUs")
    lines.append(f"sampler only  median {s['median']:.3f} ms  p99 {s['p99']:.3f} ms  "
                 f"(same engine in process, no service; {res['sampler'].get('mode', '')})")
    lines.append(f"in service    median {v['service_infer_ms']['median']:.3f} ms  p99 {v['service_infer_ms']['p99']:.3f} ms  "
                 "(engine time of the requests below)")
    lines.append(f"end-to-end    median {e['median']:.3f} ms  p99 {e['p99']:.3f} ms  "
                 f"(observation sent -> its chunk decoded by the client)")
    lines.append(f"goal          e2e p99 - sampler p99 = {res['e2e_minus_sampler_p99_ms']:+.3f} ms (<= 1 ms: "
                 f"{res['goal_e2e_p99_within_1ms']}; {_ci_text(res.get('goal_e2e_p99_ci'))}); vs the in-service "
                 f"engine p99: {res['e2e_minus_service_infer_p99_ms']:+.3f} ms")
    lines.append(f"per message   e2e - its engine time: median {o['median']:.3f} ms  p99 {o['p99']:.3f} ms "
                 f"(planner thread: prep {sp['prep_median']:.3f}, engine wrapper {sp['engine_wrapper_median']:.3f}, "
                 f"post {sp['post_median']:.3f}, queue {sp['queue_median']:.3f}; outside it median "
                 f"{sp['outside_planner_thread']['median']:.3f} ms)")
    fl = res.get("floor")
    if fl:
        r = res["overhead_vs_floor"]
        lines.append(f"floor         bare one-thread ZeroMQ server, same plan, same blocks: e2e - engine median "
                     f"{fl['overhead_ms']['median']:.3f} / p99 {fl['overhead_ms']['p99']:.3f} ms; its e2e p99 - sampler p99 = "
                     f"{fl['e2e_minus_sampler_p99_ms']:+.3f} ms ({_ci_text(fl.get('goal_e2e_p99_ci'))})")
        lines.append(f"vs floor      the service's e2e - engine: median x{r['median_ratio']:.2f} ({r['median_excess_ms']:+.3f} ms), "
                     f"p99 x{r['p99_ratio']:.2f} ({r['p99_excess_ms']:+.3f} ms)")
        lim = res.get("goal_limited_by")
        if lim:
            lines.append(f"limited by    {lim}: {GOAL_LIMITS[lim]}")
        elif res.get("goal_e2e_p99_ci", {}).get("verdict") != "met":
            lines.append("limited by    undetermined: the floor's own verdict is undetermined (more requests narrow it)")
    w, wo, sw = v["runqueue_wait_ms"], v["runqueue_wait_off_engine_ms"], res["sampler"].get("runqueue_wait_ms", {})
    if w and sw:
        lines.append(f"CPU waits     runnable but waiting for a CPU, per request: service + client threads median "
                     f"{w['median']:.3f} / p99 {w['p99']:.3f} ms (without the engine's thread {wo['median']:.3f} / "
                     f"{wo['p99']:.3f} ms); sampler-only process per plan {sw['median']:.3f} / {sw['p99']:.3f} ms")
    lines.append(f"service       RSS {v['memory_mb']['VmRSS']:.1f} MiB (peak {v['memory_mb']['VmHWM']:.1f})  "
                 f"CPU while answering {v['cpu_percent_busy']:.1f} %  idle {v['cpu_percent_idle']:.1f} %  "
                 f"torch loaded: {v['torch_loaded']}")
    if res.get("histogram"):
        lines.append(f"histogram     {res['histogram']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The bench's worker processes (``_start_worker``); the bench itself is run by
    ``planner-runtime bench --what service``."""
    ap = argparse.ArgumentParser(description="worker process of the service benchmark")
    ap.add_argument("--engine", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--provider", default=None)
    role = ap.add_mutually_exclusive_group(required=True)
    role.add_argument("--sampler-worker", action="store_true")
    role.add_argument("--floor-worker", action="store_true")
    ap.add_argument("--bind", default=None)
    args = ap.parse_args(argv)
    if args.sampler_worker:
        return _sampler_worker(args.engine, args.threads, args.provider)
    return _floor_worker(args.engine, args.threads, args.provider, args.bind)


if __name__ == "__main__":
    sys.exit(main())
