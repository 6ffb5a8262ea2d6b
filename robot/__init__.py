"""The Go2 side: robot profile, state/command types, the observation builder (written once),
the controller loop with its safety state machine, the unitree_sdk2py DDS bridge and the
velocity estimator. Depends on planner_runtime; never the other way round."""
