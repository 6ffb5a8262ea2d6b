#!/usr/bin/env python3
"""Health probe for the planner service (Docker HEALTHCHECK, compose, systemd, operators).

Sends a protocol ``ping`` with the project's client (``planner_runtime.client.PlannerClient``,
which resends until the connection is up) and waits for the ``health`` reply. Exit status 0:
the service answered with status "ok"; 1: no answer within the timeout, an error reply, or
another status. One line on stdout says which (with uptime, backend and plan count when
healthy), so `docker inspect` and `systemctl status` show it.

Endpoint: ``--endpoint`` or ``$PLANNER_ENDPOINT`` (default tcp://127.0.0.1:5555, the service's
default bind). For a CurveZMQ bind, ``$PLANNER_CURVE_SERVER_KEY`` (the server's public key file
or z85 key) and ``$PLANNER_CURVE_CLIENT_CERT`` (this client's ``.key_secret``) are used.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def probe(endpoint: str, timeout_s: float) -> tuple[bool, str]:
    """Ping the service once (resending until ``timeout_s``); (healthy, one-line description)."""
    from planner_runtime.client import PlannerClient, PlannerError

    curve_key = os.environ.get("PLANNER_CURVE_SERVER_KEY") or None
    curve_cert = os.environ.get("PLANNER_CURVE_CLIENT_CERT") or None
    with PlannerClient(endpoint, timeout=timeout_s, curve_server_key=curve_key,
                       curve_client_cert=curve_cert) as client:
        try:
            msg = client.ping()
        except PlannerError as exc:  # timeout or an error reply
            return False, f"{endpoint}: {type(exc).__name__}: {exc}"
    if msg.get("type") != "health":
        return False, f"unexpected reply type {msg.get('type')!r} from {endpoint}"
    status = msg.get("status")
    if status != "ok":
        return False, f"service at {endpoint} reports status {status!r}"
    uptime = msg.get("uptime_s")
    uptime_s = f"{uptime:.0f} s" if isinstance(uptime, (int, float)) else "?"
    return True, (f"ok: {endpoint} up {uptime_s}, backend {msg.get('backend')}, "
                  f"plans {msg.get('plans')}, engine errors {msg.get('engine_errors')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ping the planner service; exit 0 when healthy.")
    ap.add_argument("--endpoint", default=os.environ.get("PLANNER_ENDPOINT", DEFAULT_ENDPOINT))
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("PLANNER_HEALTH_TIMEOUT", "2")),
                    help="seconds to wait for the reply (default 2)")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        print(f"--timeout must be > 0, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        ok, text = probe(args.endpoint, args.timeout)
    except Exception as exc:  # a probe must answer, never hang or trace back
        ok, text = False, f"probe failed: {type(exc).__name__}: {exc}"
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
