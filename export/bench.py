"""`planner-runtime bench`: latency of the sampler, the service and the controller loop.

Sections (``--what``, comma-separated, default ``sampler``; ``all`` = every section):

- sampler: plan latency of a Go2-sized MPDiffuser (S=30, A=12, C=3, H=16, K=10, warm start
  7 steps, CFG, N=1; planner + dynamics U-Nets) in ONE run: the fused ONNX graph and the step
  graph on ONNX Runtime (CPU unless ``--provider``), the torch reference sampler in eager
  mode on the same inputs, and the fused graph as traced (``ort_fused_traced``: without
  ``export.graph_passes``' exact rewrites, the same plans bit for bit); the variants take
  turns in blocks of ``--block`` consecutive calls (default 25), round after round, so
  machine load hits every variant alike while each runs back to back as the service does
  (one call of each in turn put every ONNX call behind a 50 ms torch call that had evicted
  its weights from the caches). Median, p99, the speed-up over eager torch and the graph
  passes' (traced / fused). Models are random-init with the given size
  (latency does not depend on the weights) unless ``--checkpoints`` is given.
  ``--device cuda`` adds a torch CUDA-graph baseline (GPU machines only).
- cadence: ``planner_runtime.bench.cadence.cadence_bench``: one engine (``--engine``, else
  the sampler section's fused graph, else the embedded default) back to back vs paced at
  its chunk period with sleep (as the service runs) vs with a busy wait.
- service: ``planner_runtime.bench.service.run_bench`` (the service's end-to-end ZeroMQ
  latency against the sampler alone and a bare-server floor, same run).
- controller: ``robot.bench_loop.run_bench`` (500 Hz loop jitter and the watchdog's times
  after the planner is killed).
- training: ``export.train.bench.training_bench`` (offline: steps/s of the Go2-sized planner
  and dynamics networks, 1 and 2 processes; not in ``all``).
Only the sampler and training sections need torch; the others run on the robot's computer. Summaries go
through ``planner_runtime.bench.stats.summary``. A section whose dependencies are missing
reports ``"not available"``. ``--plot DIR`` writes a latency histogram PNG per section.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.bench.stats import histogram_png, summary, tail_bursts

HELP = "latency of the sampler (fused/step ONNX vs eager torch), the service and the controller loop"
GO2 = {"S": 30, "A": 12, "C": 3, "H": 16, "K": 10, "warm": 7}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--what", default="sampler",
                   help="sections: sampler,cadence,service,controller,training; all = every latency section")
    p.add_argument("--iters", type=int, default=200, help="timed calls per variant")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op and torch threads")
    p.add_argument("--provider", default="cpu", help="ORT execution provider: cpu, cuda, tensorrt")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="torch baseline device (cuda adds a CUDA-graph baseline)")
    # random-init defaults = the training config's Go2 architecture (export/train/config.py)
    p.add_argument("--dim", type=int, default=32, help="U-Net base channels (random-init models)")
    p.add_argument("--mults", default="1,2", help="U-Net channel multipliers")
    p.add_argument("--kernel", type=int, default=3, help="U-Net conv kernel size")
    p.add_argument("--act", default="silu", help="U-Net activation (silu, mish, ...)")
    p.add_argument("--mid-blocks", type=int, default=1, help="U-Net residual blocks at the bottom")
    p.add_argument("--x0-channels", action=argparse.BooleanOptionalAction, default=True,
                   help="x_0 also as U-Net input channels (the Go2 default)")
    p.add_argument("--checkpoints", type=Path, default=None, help="bench trained checkpoints instead")
    p.add_argument("--method", default=None,
                   help="sampler method (with --checkpoints; default: an engine file's own, else mpdiffuser)")
    p.add_argument("--knob", action="append", default=[], metavar="KEY=VALUE",
                   help="method knob, as `export --knob` (with --checkpoints), repeatable; from an "
                        "engine file its own knobs are used and these replace single ones")
    p.add_argument("--warm-level", type=int, default=None, metavar="K",
                   help="warm-start reverse steps of the timed plans (default: an engine file's own "
                        f"with --checkpoints ENGINE.onnx, else {GO2['warm']})")
    p.add_argument("--prefix", type=int, default=2, metavar="N",
                   help="committed-prefix rows held in every timed plan (real-time chunking; "
                        "default 2 = a 40 ms delay at 50 Hz; 0 = none)")
    p.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    # training section (export/train/bench.py)
    p.add_argument("--train-steps", type=int, default=200, help="training section: steps per run")
    p.add_argument("--train-procs", type=int, nargs="+", default=[1, 2],
                   help="training section: process counts (2 = torchrun, gloo on CPU)")
    p.add_argument("--train-data", default=None, help="training section: dataset (default: synthetic Go2-shaped)")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="training section: config override (repeatable)")
    p.add_argument("--engine", type=Path, default=None,
                   help="engine for the service section (default: the sampler section's fused graph)")
    p.add_argument("--keep", type=Path, default=None, help="directory to keep the exported engines in")
    p.add_argument("--plot", type=Path, default=None, help="directory for latency histogram PNGs")
    p.add_argument("--requests", type=int, default=500, metavar="N",
                   help="service section: timed requests (default 500; the 95%% interval narrows with more)")
    p.add_argument("--rate-hz", type=float, default=None, metavar="R",
                   help="service section: pace the requests at R Hz, e.g. 12.5 (the Go2's replanning "
                        "rate: every 4th 50 Hz tick); default back to back")
    p.add_argument("--service-cpus", default=None, metavar="LIST",
                   help="service section: pin the service (serve --cpus) and the sampler-only worker, e.g. 2,3")
    p.add_argument("--client-cpus", default=None, metavar="LIST",
                   help="service section: pin the bench client (the controller's stand-in), e.g. 0")
    p.add_argument("--block", type=int, default=25,
                   help="consecutive calls per variant before the next takes its turn: sampler section "
                        "(fused, step, eager torch), and service section back to back (requests, then "
                        "as many sampler-only and floor plans); default 25")
    p.add_argument("--no-floor", action="store_true",
                   help="service section: skip the floor (a bare one-thread ZeroMQ server around the same plan)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def go2_sampler(dim: int, mults: tuple[int, ...], kernel: int, act: str = "silu", seed: int = 0,
                mid_blocks: int = 1, x0_channels: bool = True) -> Any:
    """A random-init Go2-sized MPDiffuser (planner + dynamics) with a fitted std normalizer."""
    import torch

    from export.data import Normalizer, Normalizers
    from export.models.unet import TemporalUnet
    from export.sampling.mpdiffuser import MPDiffuserSampler

    S, A, C, H, K = GO2["S"], GO2["A"], GO2["C"], GO2["H"], GO2["K"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norms = Normalizers(Normalizer.fit(rng.normal(size=(256, S + A)), "minmax"),
                        Normalizer.fit(rng.normal(size=(256, C)), "minmax"))
    def net(out: int) -> TemporalUnet:
        return TemporalUnet(H, S + A, out, S, C, dim=dim, mults=mults, kernel=kernel, act=act,
                            mid_blocks=mid_blocks, x0_channels=x0_channels)

    s = MPDiffuserSampler(net(S + A), net(S), norms, S, A, C, H, K)
    return s.eval().requires_grad_(False)


def _inputs(s: Any, warm: int, seed: int = 1, prefix: int = 0) -> dict[str, Any]:
    from planner_runtime.schedule import warm_levels

    rng = np.random.default_rng(seed)
    B = int(getattr(s, "n_samples", 1))
    return {"x0": rng.normal(size=(B, s.S)).astype(np.float32),
            "cond": rng.normal(size=(B, s.C_in)).astype(np.float32),
            "prev_plan": rng.normal(size=(B, s.H, s.D)).astype(np.float32),
            "noise": rng.normal(size=(B, s.H, s.D)).astype(np.float32),
            "levels": warm_levels(warm),
            "prefix": rng.normal(size=(B, s.H, s.A)).astype(np.float32), "n_prefix": int(prefix)}


def bench_sampler(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[float]], Path]:
    import torch

    from export.models.unet import count_params
    from export.onnx_export import export_engine, generic_meta, go2_meta
    from planner_runtime.backends import load_engine

    torch.set_num_threads(args.threads)
    mults = tuple(int(m) for m in str(args.mults).split(","))
    if args.checkpoints is not None:
        from export.cli_export import source_settings
        from export.sampling.registry import build_sampler

        # the settings an export would take: an engine file's own, --knob / --method /
        # --warm-level replacing single ones (so the bench times that engine's graph)
        src = argparse.Namespace(checkpoints=args.checkpoints, knob=args.knob, method=args.method,
                                 warm_level=args.warm_level)
        knobs = source_settings(src)
        warm = int(src.warm_level)
        s = build_sampler(args.checkpoints, src.method, graph="sampler", n_samples=src.n_samples, **knobs)
        model_desc: dict[str, Any] = {"checkpoints": str(args.checkpoints), "method": src.method,
                                      "knobs": knobs}
    else:
        warm = GO2["warm"] if args.warm_level is None else int(args.warm_level)
        s = go2_sampler(args.dim, mults, args.kernel, args.act, mid_blocks=args.mid_blocks,
                        x0_channels=args.x0_channels)
        model_desc = {"random_init": True, "method": "mpdiffuser", "dim": args.dim,
                      "mults": list(mults), "kernel": args.kernel, "act": args.act,
                      "mid_blocks": args.mid_blocks, "x0_channels": args.x0_channels}
    nets = {n: count_params(getattr(s, n)) for n in ("planner", "dynamics") if hasattr(s, n)}
    model_desc.update(params=nets, params_total=sum(nets.values()),
                      dims={"S": s.S, "A": s.A, "C": s.C_in, "H": s.H, "K": s.K},
                      warm_steps=warm, cfg=True, n_samples=int(getattr(s, "n_samples", 1)))
    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="prt-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dims = (int(s.S), int(s.A), int(s.C_in))
    meta = go2_meta(warm_level=warm) if dims == (30, 12, 3) else generic_meta(*dims, warm_level=warm, control_dt=0.02, dt_source="bench (latency only)")
    t0 = time.perf_counter()
    paths = {}
    for g in ("fused", "step"):
        paths[g] = out_dir / f"bench_{g}.onnx"
        export_engine(s, paths[g], graph=g, meta=meta, exporter=args.exporter)
    export_s = time.perf_counter() - t0
    # the baseline of the graph passes: the same fused graph as traced
    paths["fused_traced"] = out_dir / "bench_fused_traced.onnx"
    export_engine(s, paths["fused_traced"], graph="fused", meta=meta, exporter=args.exporter, passes=())
    engines = {g: load_engine(p, provider=args.provider, threads=args.threads) for g, p in paths.items()}
    inp = _inputs(s, warm, prefix=args.prefix)
    t_args = [torch.as_tensor(inp[k]) for k in ("x0", "cond", "prev_plan", "noise", "levels")]
    w = torch.tensor([2.0])
    t_prefix = (torch.as_tensor(inp["prefix"]), torch.tensor([inp["n_prefix"]], dtype=torch.int64))

    calls: dict[str, Any] = {}

    def eager() -> None:
        with torch.no_grad():
            s(*t_args, w, *t_prefix)

    calls["torch_eager"] = eager
    calls["ort_fused"] = lambda: engines["fused"].plan(**inp, cfg_w=2.0)
    calls["ort_step"] = lambda: engines["step"].plan(**inp, cfg_w=2.0)
    calls["ort_fused_traced"] = lambda: engines["fused_traced"].plan(**inp, cfg_w=2.0)
    if args.device == "cuda":
        calls["torch_cuda_graph"] = _cuda_graph_call(s, t_args, w, t_prefix)

    # correctness first: a benchmark of a wrong graph is worthless
    with torch.no_grad():
        ref = s(*t_args, w, *t_prefix)[0].numpy()
    plans = {g: e.plan(**inp).plan for g, e in engines.items()}
    err = {g: float(np.abs(p - ref).max()) for g, p in plans.items()}
    traced_same = bool(np.array_equal(plans["fused"], plans["fused_traced"]))

    for _ in range(args.warmup):
        for f in calls.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    # Python's cyclic GC off while timing (as timeit does): the eager torch calls leave
    # garbage whose collection would otherwise land inside whichever call came next; the
    # service keeps its own collections off the plan path (gc.freeze after start-up).
    import gc

    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        # Variants take turns in blocks, round after round: load from other processes hits
        # every variant alike, and each runs back to back as the service plans.
        for start in range(0, args.iters, args.block):  # run() refuses a block < 1
            for k, f in calls.items():
                for _ in range(min(args.block, args.iters - start)):
                    c = time.thread_time()
                    t = time.perf_counter()
                    f()
                    samples[k].append((time.perf_counter() - t) * 1e3)
                    cpu[k].append((time.thread_time() - c) * 1e3)
    finally:
        if gc_was_on:
            gc.enable()
    res = {k: summary(v, suffix="_ms", digits=3) for k, v in samples.items()}
    # CPU time of the calling thread (all work runs on it with 1 thread): a load-robust
    # estimate of the unloaded latency on a shared machine; wall time is what a robot sees.
    for k, v in cpu.items():
        c = summary(v, digits=3)
        res[k]["cpu_median_ms"], res[k]["cpu_p99_ms"] = c["median"], c["p99"]
    eager_s = res["torch_eager"]
    report = {
        "model": model_desc,
        "provider": engines["fused"].backend,
        "threads": args.threads,
        "block": args.block,
        "exporter": args.exporter,
        "committed_prefix_rows": int(args.prefix),
        "export_s": round(export_s, 1),
        "graph_nodes": {g: _node_count(p) for g, p in paths.items()},
        # which graphs were timed (compare with an engine's `info`: the same sha256, the same graph)
        "graph_sha256": {g: e.manifest.checksums.graph_sha256 for g, e in engines.items()},
        "max_abs_err_vs_torch": err,
        "fused_equals_traced_bitwise": traced_same,
        "latency": res,
        # do the slow calls come in runs (the machine) or alone (the work)? per variant, in
        # its own call order (its blocks back to back)
        "tail_bursts": {k: tail_bursts(v) for k, v in samples.items()},
        "speedup_vs_eager": {k: {"median": round(eager_s["median_ms"] / r["median_ms"], 2),
                                 "p99": round(eager_s["p99_ms"] / r["p99_ms"], 2)}
                             for k, r in res.items() if k != "torch_eager"},
        "graph_passes_speedup": {q: round(res["ort_fused_traced"][f"{q}_ms"] / res["ort_fused"][f"{q}_ms"], 3)
                                 for q in ("median", "p99")},
        "goals": {"fused_p99_le_10ms": res["ort_fused"]["p99_ms"] <= 10.0,
                  "fused_cpu_p99_le_10ms": res["ort_fused"]["cpu_p99_ms"] <= 10.0,
                  "fused_3x_eager_median": eager_s["median_ms"] / res["ort_fused"]["median_ms"] >= 3.0},
        "engines": {g: str(p) for g, p in paths.items()},
    }
    return report, samples, paths["fused"]


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(path).graph.node)


def _cuda_graph_call(s: Any, t_args: list, w: Any, extra: tuple = ()) -> Any:
    """torch CUDA-graph baseline: the sampler captured once, replayed per call (GPU only)."""
    import torch

    dev = torch.device("cuda")
    sc = s.to(dev)
    static = [a.to(dev) for a in t_args] + [w.to(dev)] + [a.to(dev) for a in extra]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(3):
            sc(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = sc(*static)

    def call() -> None:
        graph.replay()
        out[0].cpu()  # includes the device->host copy the runtime also pays

    return call


def _external(section: str, engine: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """The service and controller sections; missing dependencies -> "not available"."""
    plot = None if args.plot is None else str(args.plot / f"{section}_latency.png")
    try:
        if section == "service":
            from planner_runtime.bench.service import run_bench as svc

            if engine is None:
                return {"status": "not available", "reason": "no engine: run the sampler section or pass --engine"}
            return svc(str(engine), n=args.requests, histogram=plot, threads=args.threads,
                       provider=args.provider, rate_hz=args.rate_hz, service_cpus=args.service_cpus,
                       client_cpus=args.client_cpus, block=args.block, floor=not args.no_floor)
        from robot.bench_loop import run_bench as ctl

        return ctl(engine_path=None if engine is None else str(engine), histogram=plot)
    except ImportError as exc:
        return {"status": "not available", "reason": str(exc)}


def run(args: argparse.Namespace) -> int:
    what = [w.strip() for w in str(args.what).split(",") if w.strip()]
    if "all" in what:
        what = ["sampler", "cadence", "service", "controller"]
    unknown = set(what) - {"sampler", "cadence", "service", "controller", "training"}
    if unknown:
        print(f"error: unknown --what section(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    rate = args.rate_hz
    if args.requests < 1 or args.block < 1 or (rate is not None and not 0 < rate < float("inf")):
        print(f"error: --requests must be >= 1, --block >= 1 and --rate-hz a finite rate > 0 "
              f"(got {args.requests}, {args.block}, {rate})", file=sys.stderr)
        return 2
    if args.knob and (args.checkpoints is None or "sampler" not in what):
        print("error: --knob sets a knob of the --checkpoints sampler the sampler section exports; "
              "without both it would change nothing", file=sys.stderr)
        return 2
    import os

    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_before": list(os.getloadavg()),
                              "machine_note": "wall-clock numbers depend on machine load; "
                                              "cpu_* are the calling thread's CPU time"}
    engine = args.engine
    if "sampler" in what:
        try:
            rep, samples, fused = bench_sampler(args)
        except (ValueError, OSError) as exc:  # checkpoints or an engine that cannot be read, a bad knob
            print(f"error: {exc}", file=sys.stderr)
            return 2
        report["sampler"] = rep
        engine = engine or fused
        if args.plot:
            rep["plot"] = histogram_png(samples, args.plot / "sampler_latency.png",
                                        f"Go2 MPDiffuser plan latency (warm start {rep['model']['warm_steps']} steps, CFG)")
        if not args.json:
            _print_sampler(rep)
    if "cadence" in what:
        from planner_runtime.bench.cadence import cadence_bench
        from planner_runtime.engines import default_engine_path

        cad = cadence_bench(engine or default_engine_path(), n=args.iters, threads=args.threads,
                            provider=args.provider)
        samples_c = cad.pop("samples_ms")
        report["cadence"] = cad
        if args.plot:
            cad["plot"] = histogram_png(samples_c, args.plot / "cadence_latency.png",
                                        f"plan latency at the chunk period ({cad['period_ms']:.0f} ms) vs back to back")
        if not args.json:
            print("cadence: " + ", ".join(f"{k} {cad[k]['median_ms']:.2f} / {cad[k]['p99_ms']:.2f} ms"
                                          for k in ("back_to_back", "paced_sleep", "paced_spin")))
    for sec in ("service", "controller"):
        if sec in what:
            report[sec] = _external(sec, engine, args)
            if args.json:
                continue
            if sec == "service" and "status" not in report[sec]:
                from planner_runtime.bench.service import format_report

                print("service:\n" + format_report(report[sec]))
            else:
                print(f"{sec}: {json.dumps(report[sec])}")
    if "training" in what:
        from export.train.bench import format_report as format_training
        from export.train.bench import training_bench

        report["training"] = training_bench(args.train_steps, args.train_procs, args.threads,
                                            args.train_data, args.train_set)
        if not args.json:
            print("training:\n" + format_training(report["training"]))
    report["load_average_after"] = list(os.getloadavg())
    if "sampler" in what and args.keep is None:  # exported engines were temporary
        import shutil

        shutil.rmtree(Path(report["sampler"]["engines"]["fused"]).parent, ignore_errors=True)
        report["sampler"]["engines"] = {g: "(deleted; use --keep DIR)" for g in report["sampler"]["engines"]}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"load average before/after: {report['load_average_before']} / {report['load_average_after']} "
              f"on {report['cpus']} CPUs")
    return 0


def _print_sampler(rep: dict[str, Any]) -> None:
    m = rep["model"]
    print(f"sampler: {m['method']} S={m['dims']['S']} A={m['dims']['A']} C={m['dims']['C']} "
          f"H={m['dims']['H']} K={m['dims']['K']}, warm start {m['warm_steps']} steps, CFG; "
          f"params {m['params']} ({m['params_total']} total)")
    print(f"  backend {rep['provider']}, threads {rep['threads']}, exporter {rep['exporter']}, "
          f"nodes {rep['graph_nodes']}, max |err| vs torch {rep['max_abs_err_vs_torch']}")
    print(f"  graph sha256 {', '.join(f'{g} {h[:16]}...' for g, h in rep['graph_sha256'].items())}")
    for k, r in rep["latency"].items():
        sp = rep["speedup_vs_eager"].get(k)
        extra = f"  ({sp['median']}x / {sp['p99']}x vs eager)" if sp else ""
        print(f"  {k:16s} median {r['median_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   "
              f"(thread CPU median {r['cpu_median_ms']:.2f} p99 {r['cpu_p99_ms']:.2f}){extra}")
    gp = rep["graph_passes_speedup"]
    print(f"  graph passes: fused vs as traced {gp['median']}x median, {gp['p99']}x p99 "
          f"(same plans bit for bit: {rep['fused_equals_traced_bitwise']})")
    tb = rep["tail_bursts"].get("ort_fused") or {}
    if tb:
        print(f"  slow calls (fused, slowest 1%): {tb['neighbour_share']:.0%} next to another "
              f"(independent: ~{tb['chance']:.0%}); {tb['window']}-call medians "
              f"{tb['window_median_min']:.2f}-{tb['window_median_max']:.2f} ms")
    print(f"  goals: {rep['goals']}")
