"""Step-graph engines: the run-time step overrides reach the engine's loop."""

from __future__ import annotations

import numpy as np

from planner_runtime import schedule
from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
from planner_runtime.backends import load_engine
from planner_runtime.client import PlannerClient
from planner_runtime.protocol import Observation
from planner_runtime.server import PlannerServer


def test_step_overrides_change_the_levels_the_loop_runs(step_engine_path, endpoint):
    eng = load_engine(step_engine_path, provider="cpu", threads=1)
    try:
        K = eng.manifest.diffusion.K
        spec = PlannerSpec.from_manifest(eng.manifest, steps=3, warm_level=2)
        assert spec.cold_levels.tolist() == schedule.ddim_levels(K, 3).tolist()
        assert spec.warm_levels.tolist() == [2, 1, 0]
        planner = AsyncPlanner(eng, spec, cold_threshold=float("inf"))
        x, c = np.zeros(spec.S, np.float32), np.zeros(spec.C, np.float32)
        ch, last = planner.plan_once(Observation(0, 0.0, x, c))
        assert sorted(k for k in ch.timings if k.startswith("step")) == ["step0_ms", "step1_ms", "step2_ms"]
        ch2, _ = planner.plan_once(Observation(1, spec.dt, x, c), last)
        assert not ch2.cold
        assert sorted(k for k in ch2.timings if k.startswith("step")) == ["step0_ms", "step1_ms"]
        srv = PlannerServer(eng, spec, bind=endpoint).start()
        try:
            with PlannerClient(endpoint, timeout=5.0) as cl:
                meta = cl.hello()
                assert meta["graph"] == "step" and meta["warm_levels"] == [2, 1, 0]
                seq = cl.send_observation(x, c)
                assert cl.wait_chunk(seq).obs_seq == seq
        finally:
            srv.stop()
    finally:
        eng.close()
