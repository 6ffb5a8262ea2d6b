"""STAND-IN (not Unitree code, not the robot): a motion-switcher service on loopback DDS.

The Go2 runs a "motion_switcher" RPC service; this child process plays it for the tests
with unitree_sdk2py's own RPC server class, so the controller's real MotionSwitcherClient
talks to it over real cyclonedds exactly as it would to the robot: CheckMode (1001)
answers {"form": "0", "name": MODE}, ReleaseMode (1003) empties the name (unless --stuck),
SelectMode (1002) sets it. It prints one "ready" JSON line, and on SIGTERM writes its
counters as JSON to STATS.
Usage: python tests/robot/_motion_switcher_standin.py DOMAIN MODE STATS [--stuck]
"""

from __future__ import annotations

import json
import signal
import sys
import threading


def main() -> int:
    domain, mode, stats_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    stuck = "--stuck" in sys.argv[4:]
    from unitree_sdk2py.comm.motion_switcher.motion_switcher_api import (
        MOTION_SWITCHER_API_ID_CHECK_MODE,
        MOTION_SWITCHER_API_ID_RELEASE_MODE,
        MOTION_SWITCHER_API_ID_SELECT_MODE,
        MOTION_SWITCHER_API_VERSION,
        MOTION_SWITCHER_SERVICE_NAME,
    )
    from unitree_sdk2py.rpc.server import Server

    from robot.dds_bridge import init_channels

    init_channels(domain, "lo")
    state = {"mode": mode, "checks": 0, "releases": 0, "selects": 0}

    def check(_param: str):
        state["checks"] += 1
        return 0, json.dumps({"form": "0", "name": state["mode"]})

    def release(_param: str):
        state["releases"] += 1
        if not stuck:
            state["mode"] = ""
        return 0, ""

    def select(param: str):
        state["selects"] += 1
        state["mode"] = str(json.loads(param).get("name", ""))
        return 0, ""

    srv = Server(MOTION_SWITCHER_SERVICE_NAME)
    srv._SetApiVersion(MOTION_SWITCHER_API_VERSION)
    srv._RegistHandler(MOTION_SWITCHER_API_ID_CHECK_MODE, check, False)
    srv._RegistHandler(MOTION_SWITCHER_API_ID_RELEASE_MODE, release, False)
    srv._RegistHandler(MOTION_SWITCHER_API_ID_SELECT_MODE, select, False)
    srv.Start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(json.dumps({"event": "ready"}), flush=True)
    done.wait(120)
    with open(stats_path, "w") as f:
        json.dump(state, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
