"""`planner-runtime serve --engine PATH`: the onboard planner service.

Loads the engine (ONNX Runtime or TensorRT; torch is never imported), starts the warm-
started background sampler and answers observations with action chunks over ZeroMQ until
SIGINT or SIGTERM, then finishes the plan in flight, closes the socket and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from planner_runtime.scheduling import priority_arg

HELP = "run the planner service: observations in, action chunks out (ZeroMQ + msgpack)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", required=True, help="engine file (.onnx or .plan)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="ZeroMQ endpoint (default loopback tcp://127.0.0.1:5555; a non-loopback "
                        "address needs --curve-secret-key)")
    p.add_argument("--threads", type=int, default=1,
                   help="inference threads (ONNX Runtime intra-op; default 1: the Go2-sized graphs "
                        "gained nothing from more, and idle extra threads spin on a core)")
    p.add_argument("--provider", default=None, help="ONNX Runtime provider: cpu, cuda, tensorrt (default: best available)")
    p.add_argument("--chunk", type=int, default=None, help="actions executed per plan (default: the manifest's)")
    p.add_argument("--send-steps", type=int, default=None,
                   help="plan rows sent per chunk, chunk..H (default H); valid_until = t0 + send_steps*dt")
    p.add_argument("--steps", type=int, default=None, help="cold-start DDIM steps (step-graph engines only)")
    p.add_argument("--warm-level", type=int, default=None, help="warm-start level k_w (step-graph engines only)")
    p.add_argument("--cfg-w", type=float, default=None, help="classifier-free guidance weight (default: manifest)")
    p.add_argument("--temperature", type=float, default=None, help="noise temperature (default: manifest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise generator")
    p.add_argument("--cold-threshold", type=float, default=1.0,
                   help="cold-start when the observation is farther than this from the plan's "
                        "prediction (RMS in normalizer units; inf disables)")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="pin the service to these CPU cores, e.g. 2,3 (keeps it off the controller's core)")
    p.add_argument("--rt-priority", type=priority_arg, default=None, metavar="N",
                   help="run the service under SCHED_FIFO at priority N (1-99; needs root or "
                        "CAP_SYS_NICE), below the controller's: it then plans ahead of normal-priority "
                        "load while the controller's loop still preempts it (default: normal priority)")
    p.add_argument("--owner-timeout", type=float, default=1.0, metavar="S",
                   help="the client that owns the planner (its claim, or its first observation) loses "
                        "it after S seconds without its observations (default 1.0; inf: only a "
                        "release or a lost connection ends it); others get a 'busy' error meanwhile")
    p.add_argument("--log-json", action="store_true", help="structured logs: one JSON object per line on stderr")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--curve-secret-key", default=None, metavar="FILE",
                   help="server CurveZMQ certificate (*.key_secret from zmq.auth.create_certificates)")
    p.add_argument("--curve-public-keys", default=None, metavar="DIR",
                   help="directory of allowed client public keys (*.key); without it any client "
                        "with the server key may connect")


def build_server(args: Any) -> Any:
    """Engine + planner + socket from parsed arguments (separate for tests)."""
    from planner_runtime.async_planner import PlannerSpec
    from planner_runtime.backends import load_engine
    from planner_runtime.server import CurveConfig, PlannerServer

    engine = load_engine(args.engine, provider=args.provider, threads=args.threads)
    try:
        spec = PlannerSpec.from_manifest(engine.manifest, chunk=args.chunk, steps=args.steps,
                                         warm_level=args.warm_level, cfg_w=args.cfg_w,
                                         temperature=args.temperature)
        curve = None
        if args.curve_secret_key:
            curve = CurveConfig(args.curve_secret_key, args.curve_public_keys)
        elif args.curve_public_keys:
            raise ValueError("--curve-public-keys needs --curve-secret-key (the server's certificate)")
        server = PlannerServer(engine, spec, bind=args.bind, seed=args.seed,
                               cold_threshold=args.cold_threshold, send_steps=args.send_steps,
                               curve=curve, owner_timeout=getattr(args, "owner_timeout", 1.0))
        ms = server.planner.warm_up()
        logging.getLogger("planner_runtime.serve").info(
            "engine warm-up: first call %.1f ms, last %.1f ms", ms[0], ms[-1],
            extra={"event": "warm_up", "ms": [round(m, 2) for m in ms]})
        return server
    except Exception:
        engine.close()
        raise


def run(args: argparse.Namespace) -> int:
    from planner_runtime.engine import EngineError
    from planner_runtime.scheduling import pin_cpus, set_realtime
    from planner_runtime.server import setup_logging

    setup_logging(args.log_json, getattr(logging, args.log_level.upper()))
    log = logging.getLogger("planner_runtime.serve")
    try:
        pin_cpus(args.cpus)  # before the engine starts its threads: they inherit it
    except (ValueError, OSError) as exc:
        print(f"error: --cpus {args.cpus!r}: {exc}", file=sys.stderr)
        return 2
    if args.rt_priority is not None:
        got = set_realtime(args.rt_priority)  # as pinning: before any thread starts (range checked when parsed)
        (log.info if got.startswith("SCHED_FIFO") else log.warning)("real-time scheduling: %s", got,
                                                                     extra={"event": "scheduling"})
    try:
        server = build_server(args)
    except (EngineError, ValueError, OSError) as exc:
        log.error("cannot start: %s", exc, extra={"event": "start_failed"})
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name, extra={"event": "signal"})
        server.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    finally:
        server.engine.close()
    return 0
