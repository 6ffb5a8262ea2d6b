"""The base reference sampler: the engine contract of ``planner_runtime/engine.py`` in torch.

A method's sampler subclasses :class:`DiffusionSampler` and supplies ONE hook,
``denoise_step`` (one reverse step k -> k' in normalized space); ranking is a second,
optional hook (``rank``). The base class owns everything else, written once: input
normalization, the first iterate (q_sample of the shifted previous plan: warm start, or
pure noise at level K: cold start), the unrolled reverse loop, unnormalization, and the two
graph shapes:

Fused (``FusedSampler(s)``, or ``s(...)`` directly):
    forward(x0 [B, S], cond [B, C], prev_plan [B, H, D], noise [B, H, D],
            levels [n + 1] int64, cfg_w [1] f32, prefix [B, H, A] f32, n_prefix [1] int64)
      -> plan [B, H, D] raw, score [B], best [1] int64
    The loop over n = levels.shape[0] - 1 steps is unrolled in Python: n is fixed when the
    graph is traced/exported; the level values stay graph inputs (coefficients gathered).

Step (``StepSampler(s)``):
    forward(x0, cond, prev_plan, noise, tau [B, H, D] normalized, level [1] i64,
            next_level [1] i64, start [1] i64, cfg_w [1], prefix, n_prefix)
      -> tau_next [B, H, D] normalized, plan [B, H, D] raw (unnormalized clean estimate x0_hat)
    With start = 1 the iterate is q_sample(normalize(prev_plan), noise, level) and ``tau`` is
    ignored (selected with Where, so a NaN there cannot leak through).

Committed-prefix inpainting (real-time chunking): the actions of rows t < n_prefix are the
ones the robot executes while the plan is computed; they are held fixed at every reverse
step, in the base class (so every method gets it): after the first iterate and after each
step, the action channels of those rows are replaced by the committed actions noised to the
iterate's level with the plan's own noise (q_sample(normalize(prefix), noise, k'); at
level 0 exactly the committed actions), and the returned plan carries them bit for bit.
States are not held: the method's own networks (MPDiffuser's dynamics model) denoise the
states that follow from the committed actions, which is the forecast of the state at the
first free row. ``n_prefix = 0`` (rows of ``prefix`` ignored) is the plain sampler. The
prefix is optional (``prefix=None``) in torch; the exported graphs always take it.

With a forecaster (``set_forecaster``: a one-step state model, export/models/forecaster.py)
the prefix is handled by forecasting instead: the forecaster is rolled from x_0 over the
n_prefix committed actions, the forecast replaces the selected state dimensions of x_0
(``forecast_states``; the others stay as measured), the warm-start plan is shifted by
n_prefix more rows, and the method samples an ordinary plan from that execution-time state.
The returned plan has the committed actions (with the forecaster's states) as rows
0..n_prefix-1 and the new plan from row n_prefix on (its last n_prefix rows fall off the
horizon), so the contract is the same: row t applies at t0 + t dt. A condition with history
blocks (``set_history``: the previous tick's state / action, built at observation time) is
moved to that execution time too: the previous action becomes the last committed action and
the previous state the forecast state before it.

Condition targets (``set_targets``): a scalar target extra of the condition (``cost_to_go``)
can be fixed at export; the graph's ``cond`` input then has ``C_in`` columns (the others)
and the constant is inserted before normalization. A target can also switch on the start
state's tilt (``set_target_gate``): another value while the measured x_0 tilts at least a
given angle (its projected gravity z, a state named ``gravity_z``), so a plan from a tilted
state asks for a stronger recovery than one from upright walking. The manifest's method
knobs record both (``condition_targets``, ``condition_target_gate``).

Temperature: the runtime (or caller) scales ``noise`` by sqrt(temperature) before the call;
with DDIM (eta = 0) no further noise is added, so temperature only widens the start.
All inputs and outputs at this boundary are raw units; x_0 is normalized with the state
part of the trajectory normalizer, cond with the condition normalizer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from export.data import HISTORY_EXTRAS, Normalizers, extra_columns, extra_widths
from export.sampling.common import Normalize, Schedule, q_sample, shift_plan


class DiffusionSampler(nn.Module):
    """Shared machinery of every method's sampler. Subclasses implement ``denoise_step``."""

    method: str = "base"

    def __init__(self, norms: Normalizers, S: int, A: int, C: int, H: int, num_levels: int,
                 schedule: str = "cosine", clip: float | None = None):
        super().__init__()
        if norms.traj.dim != S + A or norms.cond.dim != C:
            raise ValueError(f"normalizer dims (traj {norms.traj.dim}, cond {norms.cond.dim}) do "
                             f"not match S + A = {S + A}, C = {C}")
        self.S, self.A, self.C, self.H, self.K = S, A, C, H, num_levels
        self.D = S + A
        self.sched = Schedule(num_levels, schedule)
        self.norm_traj = Normalize(norms.traj)
        self.norm_x0 = Normalize(norms.traj.slice(0, S))
        self.norm_cond = Normalize(norms.cond)
        # minmax data lives in [-1, 1]: clip x0_hat there; std data is not clipped by default
        self.clip = clip if clip is not None else norms.traj.clip
        self.forecaster: nn.Module | None = None
        self.forecast_states: list[int] = []
        self.register_buffer("forecast_mask", torch.zeros(S, dtype=torch.bool), persistent=False)
        self.history: dict[str, int] = {}  # history block -> its first condition column
        # condition targets fixed at export (``set_targets``): extra name -> (its column in the
        # networks' condition, its value); the graph's cond input has the other C_in columns
        self.targets: dict[str, tuple[int, float]] = {}
        # a tilt gate on targets (``set_target_gate``): name -> value while tilted, the angle,
        # the gravity_z state's index and the value x_0's gravity z reaches at that angle
        self.gate: dict[str, float] = {}
        self.gate_deg, self.gate_index, self.gate_gz = 0.0, -1, 0.0

    @property
    def C_in(self) -> int:
        """Width of the graph's ``cond`` input: the networks' C less the fixed targets."""
        return self.C - len(self.targets)

    def set_targets(self, extras: list[str] | tuple[str, ...], values: dict[str, float]) -> None:
        """Fix scalar target extras of the condition (``cost_to_go``: the discounted tilt cost
        the plan should have over its horizon) to constants in the graph; the caller then
        supplies the other columns only. ``extras``: the training order (COND_EXTRAS)."""
        cols = extra_columns(extras, self.S, self.A, self.C)
        bad = [k for k in values if k not in cols or k in HISTORY_EXTRAS or extra_widths(self.S, self.A)[k] != 1]
        if bad:
            raise ValueError(f"condition targets {bad} are not scalar target extras of this condition "
                             f"(cond_extras {list(extras)})")
        vals = {k: float(v) for k, v in values.items()}
        if not all(math.isfinite(v) for v in vals.values()):
            raise ValueError(f"condition targets must be finite, got {vals}")
        self.targets = {k: (cols[k], vals[k]) for k in sorted(vals, key=lambda k: cols[k])}

    def set_target_gate(self, state_names: list[str], values: dict[str, float], tilt_deg: float) -> None:
        """While the start state x_0 tilts at least ``tilt_deg`` (arccos of minus its projected
        gravity z, the state named ``gravity_z``), the fixed targets in ``values`` take those
        values instead (``cost_to_go``: ask a plan from a tilted state for less tilt than the
        data ever had). Needs ``set_targets`` first."""
        bad = [k for k in values if k not in self.targets]
        if bad:
            raise ValueError(f"a tilt gate needs fixed targets; {bad} are not (targets: {list(self.targets)})")
        if len(state_names) != self.S or "gravity_z" not in state_names:
            raise ValueError("a tilt gate reads the start state's projected gravity: the networks' data must "
                             f"name a 'gravity_z' state (state names: {list(state_names) or 'none recorded'})")
        vals = {k: float(v) for k, v in values.items()}
        if not all(math.isfinite(v) for v in vals.values()):
            raise ValueError(f"gated targets must be finite, got {vals}")
        deg = float(tilt_deg)
        if not 0.0 < deg < 90.0:
            raise ValueError(f"the tilt gate's angle must be in (0, 90) degrees, got {tilt_deg}")
        self.gate, self.gate_deg = vals, deg
        self.gate_index = state_names.index("gravity_z")
        self.gate_gz = -math.cos(math.radians(deg))  # upright: -1; tilted at least deg: >= this

    def _full_cond(self, cond: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The networks' raw condition [B, C] from the graph's [B, C_in] (targets inserted; a
        gated target's value from the raw start state x0 [B or 1, S])."""
        if not self.targets:
            return cond
        parts, at = [], 0
        for i, (name, (col, value)) in enumerate(self.targets.items()):
            j = col - i  # the target's place among the input columns
            v = torch.ones_like(cond[:, :1]) * value
            if name in self.gate:
                tilted = x0[:, self.gate_index:self.gate_index + 1] >= self.gate_gz
                v = torch.where(tilted, torch.ones_like(v) * self.gate[name], v)
            parts += [cond[:, at:j], v]
            at = j
        return torch.cat([*parts, cond[:, at:]], dim=-1)

    def set_history(self, extras: list[str] | tuple[str, ...]) -> None:
        """The condition's trailing extras (export.data.COND_EXTRAS, in the training order):
        where its ``prev_state`` / ``prev_action`` blocks sit, so a forecast plan's condition
        can be moved to the forecast's time."""
        cols = extra_columns(extras, self.S, self.A, self.C)
        self.history = {e: c for e, c in cols.items() if e in HISTORY_EXTRAS}

    def set_forecaster(self, net: nn.Module, states: list[int] | None = None) -> None:
        """Handle a committed prefix by forecasting the execution-time state with ``net``;
        ``states``: the state dimensions the forecast replaces (None: all)."""
        idx = list(range(self.S)) if states is None else sorted({int(i) for i in states})
        if not idx or idx[0] < 0 or idx[-1] >= self.S:
            raise ValueError(f"forecast states must be a non-empty subset of 0..{self.S - 1}, got {states}")
        self.forecaster = net
        self.forecast_states = idx
        mask = torch.zeros(self.S, dtype=torch.bool)
        mask[idx] = True
        self.forecast_mask = mask

    # ---- hooks ---------------------------------------------------------------------------
    def denoise_step(self, tau: torch.Tensor, level: torch.Tensor, next_level: torch.Tensor,
                     x0n: torch.Tensor, yn: torch.Tensor, cfg_w: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step in normalized space: (tau^{k'} [B, H, D], x0_hat [B, H, D])."""
        raise NotImplementedError

    def rank(self, plan: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [B], best [1] int64) from the raw plans. Default: no ranker."""
        B = plan.shape[0]
        return (torch.zeros(B, dtype=plan.dtype, device=plan.device),
                torch.zeros(1, dtype=torch.int64, device=plan.device))

    def knobs(self) -> dict:
        """The method's sampling knobs (plain types) for the engine manifest."""
        k: dict = {"clip": self.clip, "prefix": "forecast" if self.forecaster is not None else "inpaint"}
        if self.forecaster is not None:
            k["forecast_states"] = list(self.forecast_states)
        if self.targets:
            k["condition_targets"] = {n: v for n, (_, v) in self.targets.items()}
        if self.gate:
            k["condition_target_gate"] = {"tilt_deg": self.gate_deg, "targets": dict(self.gate)}
        return k

    # ---- shared --------------------------------------------------------------------------
    def start(self, prev_plan: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """First iterate: the shifted previous plan noised to ``level`` (cold: zeros at K)."""
        return q_sample(self.sched, self.norm_traj(prev_plan), noise, level)

    # ---- committed-prefix inpainting ------------------------------------------------------
    def _prefix(self, prefix: torch.Tensor | None, n_prefix: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(normalized committed actions [B, H, A], row mask [1, H, 1]) or None (no prefix)."""
        if prefix is None or n_prefix is None:
            return None
        S = self.S
        un = (prefix - self.norm_traj.shift[S:]) / self.norm_traj.scale[S:]
        rows = torch.arange(self.H, device=prefix.device).reshape(1, self.H, 1)
        mask = (rows < n_prefix.reshape(1, 1, 1)).to(prefix.dtype)  # float: Where's condition via > 0
        return un, mask

    def _hold(self, tau: torch.Tensor, held: tuple[torch.Tensor, torch.Tensor] | None,
              noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The iterate at ``level`` with the committed rows' actions replaced by the
        committed actions noised to that level (the plan's own noise)."""
        if held is None:
            return tau
        un, mask = held
        S = self.S
        u = torch.where(mask > 0, q_sample(self.sched, un, noise[..., S:], level), tau[..., S:])
        return torch.cat([tau[..., :S], u], dim=-1)

    def _exact(self, plan: torch.Tensor, prefix: torch.Tensor | None,
               held: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """A raw plan whose committed rows carry the committed actions exactly."""
        if held is None or prefix is None:
            return plan
        mask = held[1]
        S = self.S
        return torch.cat([plan[..., :S], torch.where(mask > 0, prefix, plan[..., S:])], dim=-1)

    # ---- committed prefix by forecasting -------------------------------------------------
    def _forecast(self, x0n: torch.Tensor, prefix: torch.Tensor, n_prefix: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0 for the plan [B, S] normalized: the forecast after n_prefix committed actions
        in the forecast dimensions, measured elsewhere; the committed rows [B, H, D] raw)."""
        S, H = self.S, self.H
        assert self.forecaster is not None
        un = (prefix - self.norm_traj.shift[S:]) / self.norm_traj.scale[S:]
        n = n_prefix.reshape(1, 1)
        x = x0n
        states = []
        for t in range(H):  # unrolled; steps at or past n_prefix leave the state as it is
            x = torch.where(n > t, self.forecaster(x, un[:, t]), x)
            states.append(x)
        xs = torch.stack(states, dim=1) * self.norm_traj.scale[:S] + self.norm_traj.shift[:S]
        return torch.where(self.forecast_mask, x, x0n), torch.cat([xs, prefix], dim=-1)

    def _forecast_cond(self, x0: torch.Tensor, cond: torch.Tensor, pre: torch.Tensor,
                       n_prefix: torch.Tensor) -> torch.Tensor:
        """The raw condition at the forecast's time: history blocks (``set_history``) from the
        committed rows ``pre`` [B, H, D] (the last committed action; the forecast state one
        tick before the plan's x_0, x_0 itself after one committed action, in the forecast
        dimensions; the other dimensions keep their measured pair, as x_0 does); unchanged at
        n_prefix = 0 or without history."""
        if not self.history:
            return cond
        S, widths = self.S, extra_widths(self.S, self.A)
        n = n_prefix.reshape(1)
        last = torch.index_select(pre, 1, torch.clamp(n - 1, min=0))[:, 0]  # row n - 1 [B, D]
        before = torch.index_select(pre, 1, torch.clamp(n - 2, min=0))[:, 0, :S]
        cols = []
        at = 0
        for name, start in self.history.items():  # in column order
            width = widths[name]
            old = cond[:, start:start + width]
            if name == "prev_state":
                new = torch.where(self.forecast_mask, torch.where(n > 1, before, x0), old)
            else:
                new = last[:, S:]
            cols += [cond[:, at:start], torch.where(n > 0, new, old)]
            at = start + width
        return torch.cat([*cols, cond[:, at:]], dim=-1)

    def _compose(self, inner: torch.Tensor, pre: torch.Tensor, n_prefix: torch.Tensor) -> torch.Tensor:
        """Rows t < n_prefix from ``pre``, row t >= n_prefix from ``inner[t - n_prefix]``
        (the new plan delayed by n_prefix rows: the reverse of the warm-start shift)."""
        rows = torch.arange(self.H, device=inner.device)
        delayed = torch.index_select(inner, 1, torch.clamp(rows - n_prefix.reshape(1), min=0))
        return torch.where(rows.reshape(1, self.H, 1) < n_prefix.reshape(1, 1, 1), pre, delayed)

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, levels: torch.Tensor, cfg_w: torch.Tensor,
                prefix: torch.Tensor | None = None, n_prefix: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused graph: (plan [B, H, D] raw, score [B], best [1] int64)."""
        cond = self._full_cond(cond, x0)
        x0n = self.norm_x0(x0)
        if self.forecaster is not None and prefix is not None and n_prefix is not None:
            x0f, pre = self._forecast(x0n, prefix, n_prefix)
            yn = self.norm_cond(self._forecast_cond(x0, cond, pre, n_prefix))
            n = int(levels.shape[0]) - 1
            tau = self.start(shift_plan(prev_plan, n_prefix), noise, levels[0:1])
            for i in range(n):
                tau, _ = self.denoise_step(tau, levels[i:i + 1], levels[i + 1:i + 2], x0f, yn, cfg_w)
            plan = self._compose(self.norm_traj.inverse(tau), pre, n_prefix)
            score, best = self.rank(plan, x0, cond)
            return plan, score, best
        yn = self.norm_cond(cond)
        held = self._prefix(prefix, n_prefix)
        n = int(levels.shape[0]) - 1  # static at export time
        tau = self._hold(self.start(prev_plan, noise, levels[0:1]), held, noise, levels[0:1])
        for i in range(n):
            tau, _ = self.denoise_step(tau, levels[i:i + 1], levels[i + 1:i + 2], x0n, yn, cfg_w)
            tau = self._hold(tau, held, noise, levels[i + 1:i + 2])
        plan = self._exact(self.norm_traj.inverse(tau), prefix, held)
        score, best = self.rank(plan, x0, cond)
        return plan, score, best

    def step(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
             noise: torch.Tensor, tau: torch.Tensor, level: torch.Tensor,
             next_level: torch.Tensor, start: torch.Tensor, cfg_w: torch.Tensor,
             prefix: torch.Tensor | None = None, n_prefix: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step graph: (tau_next normalized, plan raw = unnormalized x0_hat)."""
        cond = self._full_cond(cond, x0)
        x0n = self.norm_x0(x0)
        if self.forecaster is not None and prefix is not None and n_prefix is not None:
            x0f, pre = self._forecast(x0n, prefix, n_prefix)
            yn = self.norm_cond(self._forecast_cond(x0, cond, pre, n_prefix))
            first = self.start(shift_plan(prev_plan, n_prefix), noise, level)
            tau = torch.where(start.reshape(1, 1, 1) > 0, first, tau)
            tau_next, x0_hat = self.denoise_step(tau, level, next_level, x0f, yn, cfg_w)
            return tau_next, self._compose(self.norm_traj.inverse(x0_hat), pre, n_prefix)
        yn = self.norm_cond(cond)
        held = self._prefix(prefix, n_prefix)
        first = self._hold(self.start(prev_plan, noise, level), held, noise, level)
        tau = torch.where(start.reshape(1, 1, 1) > 0, first, tau)
        tau_next, x0_hat = self.denoise_step(tau, level, next_level, x0n, yn, cfg_w)
        tau_next = self._hold(tau_next, held, noise, next_level)
        return tau_next, self._exact(self.norm_traj.inverse(x0_hat), prefix, held)


class FusedSampler(nn.Module):
    """The fused graph of a sampler (what the exporter traces): engine.FUSED_INPUTS/OUTPUTS."""

    def __init__(self, sampler: DiffusionSampler):
        super().__init__()
        self.sampler = sampler

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, levels: torch.Tensor, cfg_w: torch.Tensor,
                prefix: torch.Tensor | None = None, n_prefix: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler(x0, cond, prev_plan, noise, levels, cfg_w, prefix, n_prefix)


class StepSampler(nn.Module):
    """The step graph of a sampler: engine.STEP_INPUTS/STEP_OUTPUTS."""

    def __init__(self, sampler: DiffusionSampler):
        super().__init__()
        self.sampler = sampler

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, tau: torch.Tensor, level: torch.Tensor,
                next_level: torch.Tensor, start: torch.Tensor, cfg_w: torch.Tensor,
                prefix: torch.Tensor | None = None, n_prefix: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.step(x0, cond, prev_plan, noise, tau, level, next_level, start, cfg_w,
                                 prefix, n_prefix)
