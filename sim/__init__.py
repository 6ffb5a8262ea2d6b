"""Simulation: the project's Go2 MJCF and MuJoCo harness (default, CPU), the Isaac Lab
harness (GPU), the expert trot used to collect data, collection and closed-loop evaluation."""
