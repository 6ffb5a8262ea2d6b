"""The planner interface: what a controller (or any caller) needs from a planner.

``PlannerLink``: send an observation, poll the newest chunk, close; ``inpaints`` says
whether the planner's engine holds committed actions (real-time chunking,
``planner_runtime.chunking``). Implemented by the ZeroMQ service link of the Go2 controller
(``robot.controller.ServiceLink``, over ``planner_runtime.client.PlannerClient``) and by
:class:`InProcessPlanner`, which plans on the caller's thread (lockstep evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
from planner_runtime.engine import Engine
from planner_runtime.protocol import ActionChunk, Observation


class PlannerLink(Protocol):
    """What the controller needs from a planner connection (non-blocking)."""

    def send_observation(self, obs: Observation) -> None: ...

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        """The newest chunk received (waiting up to ``timeout`` s), or None."""
        ...

    def close(self) -> None: ...


class InProcessPlanner:
    """A ``PlannerLink`` that plans synchronously with the runtime's planner (the warm-start
    bookkeeping of ``planner_runtime.async_planner``) on the caller's thread: the planner of
    lockstep evaluation (``planner-runtime eval``, ``eval --env``), where the controller
    runs on a simulated clock.

    With ``latency`` (seconds: (lo, hi), drawn per plan from ``rng``) a plan is released to
    the controller only once ``clock()`` (the simulated time) reaches its observation's send
    time plus the latency; it warm-starts from the newest plan released by then. With
    ``latencies`` (seconds, a measured sequence) plan ``i`` takes ``latencies[i]`` instead,
    cycling: a real-time run's turnarounds replayed in order."""

    def __init__(self, engine: Engine, spec: PlannerSpec, seed: int = 0,
                 latency: tuple[float, float] = (0.0, 0.0), clock: Callable[[], float] | None = None,
                 rng: np.random.Generator | None = None, latencies: Sequence[float] | None = None) -> None:
        self.planner = AsyncPlanner(engine, spec, seed=seed)
        self.inpaints = bool(getattr(engine, "inpaints", False))
        self.latency = (float(latency[0]), float(latency[1]))
        self.replay = None if latencies is None else np.asarray(latencies, np.float64).reshape(-1)
        if self.replay is not None and (self.replay.size == 0 or not np.all(np.isfinite(self.replay))
                                        or np.any(self.replay < 0)):
            raise ValueError("latencies must be a non-empty sequence of finite seconds >= 0")
        self.clock = clock
        self.rng = rng or np.random.default_rng(seed)
        self._released_last: Any = None  # warm-start record of the newest released plan
        self._queue: list[tuple[float, ActionChunk, Any]] = []  # (release time, chunk, record)
        self.chunks: list[ActionChunk] = []  # every chunk produced, for consistency metrics
        self.sent_at: list[float] = []  # per chunk: when its observation was sent
        self.obs_states: list[np.ndarray] = []  # per chunk: the state its observation carried
        self.released_at: list[float] = []  # per chunk: when it became available
        self.infer_ms: list[float] = []

    def _now(self) -> float:
        return 0.0 if self.clock is None else float(self.clock())

    def send_observation(self, obs: Observation) -> None:
        now = self._now()
        self._release(now)
        chunk, last = self.planner.plan_once(obs, self._released_last)
        lo, hi = self.latency
        if self.replay is not None:
            lat = float(self.replay[len(self.chunks) % self.replay.size])
        else:
            lat = lo if hi <= lo else float(self.rng.uniform(lo, hi))
        self._queue.append((now + lat, chunk, last))
        if lat <= 0:
            self._released_last = last
        self.chunks.append(chunk)
        self.sent_at.append(now)
        self.obs_states.append(np.asarray(obs.state, np.float64))
        self.released_at.append(now + lat)
        self.infer_ms.append(float(chunk.timings.get("infer_ms", np.nan)))

    def _release(self, now: float) -> ActionChunk | None:
        out = None
        while self._queue and self._queue[0][0] <= now + 1e-9:
            _, out, self._released_last = self._queue.pop(0)
            out.received_at = now
        return out

    def poll_chunk(self, timeout: float = 0.0) -> ActionChunk | None:
        return self._release(self._now())

    def close(self) -> None:
        pass
