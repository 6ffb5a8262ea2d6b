"""Robot profiles as plain dicts: what an engine's manifest is checked against.

The schema is ``planner_runtime.manifest.check_profile``'s. The exporter stores the
profile in the manifest (so ``planner-runtime info`` can report compatibility without
importing ``robot/``); the controller builds the same dict from ``robot.go2_constants``
at start and refuses an engine that does not match.
"""

from __future__ import annotations

from typing import Any


def go2_profile(history: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Unitree Go2 profile (SDK joint order, dimensions, 50 Hz policy). The action
    semantics (pose, scale, gains) are not part of it: they travel with the engine's data and
    the controller checks it can execute them (robot.actions)."""
    from robot import go2_constants as g
    from robot import observation as obs

    return {
        "name": g.ROBOT_NAME,
        "state_dim": obs.STATE_DIM,
        "action_dim": obs.ACTION_DIM,
        "condition_dim": len(obs.condition_names(history)),
        "joint_names": list(g.JOINT_NAMES),
        "policy_dt": float(g.POLICY_DT),
        "state_names": list(obs.STATE_NAMES),
        "condition_names": list(obs.condition_names(history)),
    }
