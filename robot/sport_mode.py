"""Release the Go2's sport mode before low-level control (``controller --release-sport-mode``).

A Go2 boots into sport mode: Unitree's own locomotion controller owns the motors. Low-level
commands on rt/lowcmd must not fight it, so it is released first through the robot's
motion-switcher service, with unitree_sdk2py's ``MotionSwitcherClient`` (an RPC over DDS on
``rt/api/motion_switcher/request`` and ``/response``): ``CheckMode`` returns the active mode
as JSON (``{"name": "normal", ...}``; an empty name means no high-level mode is active),
``ReleaseMode`` asks the active one to stop. ``release_sport_mode`` checks, releases, and
checks again until the name is empty or its attempts run out, and raises with what to do
when it cannot. With ``dry_run`` it only checks and reports: releasing sport mode makes a
standing robot sit down, and a dry run sends no motor command to hold it.

Needs ``robot.dds_bridge.init_channels`` first (the SDK's channel factory).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

log = logging.getLogger("robot.sport_mode")


class SportModeError(RuntimeError):
    pass


class MotionSwitcher(Protocol):
    """What ``release_sport_mode`` needs of unitree_sdk2py's ``MotionSwitcherClient``: each
    call returns the SDK's (RPC code, data) pair."""

    def CheckMode(self) -> tuple[int, Any]: ...  # noqa: N802 (the SDK's names)

    def ReleaseMode(self) -> tuple[int, Any]: ...  # noqa: N802


def _mode_name(code: int, data: Any, what: str) -> str:
    if code != 0:
        raise SportModeError(
            f"motion switcher {what} failed with RPC code {code} (3104 = no answer in time): is this a "
            "Go2 with its motion-switcher service running, on this DDS domain and interface?")
    if not isinstance(data, dict):
        raise SportModeError(f"motion switcher {what} answered {data!r}, not a mode object")
    return str(data.get("name") or "")


def release_sport_mode(*, timeout: float = 3.0, attempts: int = 5, settle_s: float = 1.0,
                       dry_run: bool = False, client: MotionSwitcher | None = None) -> dict[str, Any]:
    """Make sure no high-level motion mode owns the motors. Returns {"before", "after",
    "release_calls", "dry_run"}; raises ``SportModeError`` when the service does not answer
    or the mode will not go."""
    if client is None:
        from unitree_sdk2py.comm.motion_switcher.motion_switcher_client import MotionSwitcherClient

        sdk_client = MotionSwitcherClient()
        sdk_client.SetTimeout(float(timeout))
        sdk_client.Init()
        client = sdk_client
    code, data = client.CheckMode()
    before = name = _mode_name(code, data, "CheckMode")
    out: dict[str, Any] = {"before": before, "after": before, "release_calls": 0, "dry_run": dry_run}
    if not before:
        log.info("sport mode: no high-level mode active")
        return out
    if dry_run:
        log.warning("sport mode %r is active; a dry run does not release it (the robot would sit "
                    "down with nothing holding it)", before)
        return out
    for _ in range(max(1, attempts)):
        log.warning("releasing the Go2's high-level mode %r (MotionSwitcherClient.ReleaseMode)", name)
        code, _ = client.ReleaseMode()
        out["release_calls"] += 1
        if code != 0:
            log.warning("ReleaseMode returned RPC code %d", code)
        time.sleep(settle_s)
        code, data = client.CheckMode()
        name = _mode_name(code, data, "CheckMode")
        if not name:
            out["after"] = ""
            log.warning("sport mode %r released", before)
            return out
    raise SportModeError(
        f"the Go2's mode {name!r} is still active after {out['release_calls']} ReleaseMode calls: "
        "release it from the Unitree app (or power-cycle into low-level mode) and retry")
