"""Robot profiles as plain dicts: what an engine's manifest is checked against.

The schema is ``planner_runtime.manifest.check_profile``'s. The exporter stores the
profile in the manifest (so ``planner-runtime info`` can report compatibility without
importing ``robot/``); the controller builds the same dict from ``robot.go2_constants``
at start and refuses an engine that does not match.
"""

from __future__ import annotations

from typing import Any


def go2_profile() -> dict[str, Any]:
    """The Unitree Go2 profile (SDK joint order, default pose, action scale, 50 Hz policy)."""
    from robot import go2_constants as g
    from robot import observation as obs

    return {
        "name": g.ROBOT_NAME,
        "state_dim": obs.STATE_DIM,
        "action_dim": obs.ACTION_DIM,
        "condition_dim": obs.CONDITION_DIM,
        "joint_names": list(g.JOINT_NAMES),
        "default_joint_pos": [float(v) for v in g.DEFAULT_JOINT_POS],
        "action_scale": float(g.ACTION_SCALE),
        "policy_dt": float(g.POLICY_DT),
        "state_names": list(obs.STATE_NAMES),
        "condition_names": list(obs.CONDITION_NAMES),
    }
