"""Does the ranker's pick beat a random candidate? (``planner-runtime eval --ranker-check``)

An engine exported with ``--n-samples N`` (N > 1) plans N candidates per call and its
ranker (MPDiffuser Alg. 2) picks one. Whether that choice is worth the N-fold compute is a
question about outcomes, so this check measures it against the simulator's truth: during a
lockstep evaluation episode, after every plan it copies the simulator
(``MujocoGo2.clone``: data, actuator-lag and observation-delay state) and executes
each candidate's H actions open loop from the very state the plan was made for, through the
controller's command filter and with the engine's action semantics. The true outcome of a
candidate is its discounted return and cost over those H ticks, scored by the reward the
training data was labelled with (``robot.observation.reward_cost``, at the state after each
tick, gamma from the engine's ranker).

Per plan (candidates i = 1..N, true returns R_i, the ranker's pick b):

    gain            R_b - mean_i R_i       the ranker's pick vs a random candidate's expectation
    oracle gain     max_i R_i - mean_i R_i  what a perfect ranker could gain
    win rate        share of the other candidates j with R_b > R_j   (random: 0.5)
    rank corr.      Spearman correlation of the ranker's score with R over the N candidates
    pooled corr.    Pearson correlation of score and R over all candidates of all plans (does
                    the ranker know good states from bad ones at all?)

Means over plans; the 95% interval of the gain is a bootstrap over episodes (plans within an
episode are correlated, so episodes are resampled whole). The ranker "measurably beats a
random sample" when that interval lies above 0.

The closed loop is unchanged (the chosen candidate drives the robot as without the check),
so the same run also reports falls and tracking for the N-candidate engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner_runtime.engine import PlanOutput


class CandidateScorer:
    """An engine proxy: plans with the wrapped engine, then scores every candidate of the
    plan by executing it open loop on a copy of the simulator (``attach`` sets which)."""

    def __init__(self, engine: Any, semantics: Any, gamma: float, condition_names: list[str],
                 writer: Any = None):
        from robot.controller import ControllerConfig

        self._engine = engine
        self.semantics = semantics
        self.gamma = float(gamma)
        names = list(condition_names)
        try:
            self._cmd_idx = [names.index(n) for n in ("cmd_vx", "cmd_vy", "cmd_yaw_rate")]
        except ValueError as exc:
            raise ValueError(f"--ranker-check needs the command in the engine's conditions, "
                             f"got {names}") from exc
        self._decimation = ControllerConfig().policy_decimation  # physics steps per plan row
        self.robot: Any = None
        self.episode = -1
        self.records: list[dict[str, Any]] = []
        # a planner_runtime.dataset.DatasetWriter: every candidate becomes an episode (the
        # plan's states and actions, the true per-tick rewards): ranker training data
        self.writer = writer

    def __getattr__(self, name: str) -> Any:  # everything else is the engine's
        return getattr(self._engine, name)

    def attach(self, robot: Any, episode: int) -> None:
        self.robot, self.episode = robot, episode

    def plan(self, x0: np.ndarray, cond: np.ndarray, *args: Any, **kw: Any) -> PlanOutput:
        out = self._engine.plan(x0, cond, *args, **kw)
        self._score(out, cond, x0)
        return out

    def plan_trusted(self, x0: np.ndarray, cond: np.ndarray, *args: Any, **kw: Any) -> PlanOutput:
        out = self._engine.plan_trusted(x0, cond, *args, **kw)
        self._score(out, cond, x0)
        return out

    def _write(self, plan: np.ndarray, x0: np.ndarray, cond: np.ndarray, r: np.ndarray,
               c: np.ndarray, fell: bool) -> None:
        """One candidate as a dataset episode: the (state, action) pairs the ranker scores
        (x_0 measured, then the plan's states) with the rewards executing it really earned."""
        from planner_runtime.dataset import Episode

        T, S = r.size, plan.shape[1] - len(self.semantics.joint_names)
        states = np.concatenate([np.asarray(x0, np.float64)[None], plan[:T - 1, :S]])
        self.writer.append(Episode(states.astype(np.float32), plan[:T, S:].astype(np.float32),
                                   np.repeat(np.asarray(cond, np.float32)[None], T, 0),
                                   r.astype(np.float32), c.astype(np.float32), terminal=fell))

    def _score(self, out: PlanOutput, cond: np.ndarray, x0: np.ndarray) -> None:
        if self.robot is None:
            raise RuntimeError("CandidateScorer.attach(robot, episode) before planning")
        plan = np.asarray(out.plan, np.float64)
        B = plan.shape[0]
        if B < 2:
            raise ValueError("--ranker-check needs an engine with N > 1 candidates "
                             "(planner-runtime export --n-samples N)")
        command = np.asarray(cond, np.float64)[0, self._cmd_idx]
        returns, costs = np.zeros(B), np.zeros(B)
        disc = self.gamma ** np.arange(plan.shape[1])
        for i in range(B):
            r, c, fell = self.rollout(plan[i], command)
            returns[i], costs[i] = float(disc[:r.size] @ r), float(disc[:c.size] @ c)
            if self.writer is not None:
                self._write(plan[i], x0[i], cond[i], r, c, fell)
        self.records.append({"episode": self.episode, "best": int(out.best),
                             "score": np.asarray(out.score, np.float64).copy(),
                             "returns": returns, "costs": costs})

    def rollout(self, plan: np.ndarray, command: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """True per-tick (rewards, costs, fell) of executing one candidate's actions open loop
        from the simulator's current state, on a copy (the real episode is untouched); the
        arrays end early at a fall."""
        from robot.observation import build_state, state_reward_cost
        from robot.safety import CommandFilter
        from robot.types import LowCmd

        sim = self.robot.clone()
        filt = CommandFilter()
        sem = self.semantics
        S = plan.shape[1] - len(sem.joint_names)
        n = len(sem.joint_names)
        rewards: list[float] = []
        costs: list[float] = []
        fell = False
        for t in range(plan.shape[0]):
            want = LowCmd(q=sem.to_target(plan[t, S:]), kp=np.full(n, sem.kp), kd=np.full(n, sem.kd))
            cmd, _ = filt.apply(want, sim.read_state())
            sim.step_policy(cmd, self._decimation)
            r, c = state_reward_cost(build_state(sim.read_state()), sim.base_lin_vel(), command)
            rewards.append(r)
            costs.append(c)
            if sim.fallen():
                fell = True
                break
        sim.close()
        return np.array(rewards), np.array(costs), fell


def open_writer(path: str, manifest: Any, cfg: Any) -> Any:
    """The dataset file ``--ranker-data`` writes the candidates to, with the engine's names,
    dt and action semantics (so a ranker trained on it matches the engine)."""
    from dataclasses import asdict

    from robot.recording import engine_dataset_writer

    return engine_dataset_writer(path, manifest, {
        "collector": "planner-runtime eval --ranker-check --ranker-data (sim/ranker_check.py)",
        "episode_states": "x_0 measured, then the plan's predicted states; rewards and costs: "
                          "what executing the candidate open loop in MuJoCo earned",
        "eval_config": {k: v for k, v in asdict(cfg).items() if v is not None}})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def summarize(records: list[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The statistics of the module docstring over the scored plans."""
    if not records:
        return {"plans": 0}
    gain = np.array([r["returns"][r["best"]] - r["returns"].mean() for r in records])
    oracle = np.array([r["returns"].max() - r["returns"].mean() for r in records])
    spread = np.array([r["returns"].std() for r in records])
    win = np.array([np.mean(np.delete(r["returns"][r["best"]] > r["returns"], r["best"])) for r in records])
    rho = np.array([_spearman(r["score"], r["returns"]) for r in records])
    pooled = np.corrcoef(np.concatenate([r["score"] for r in records]),
                         np.concatenate([r["returns"] for r in records]))[0, 1]
    cost_gain = np.array([r["costs"][r["best"]] - r["costs"].mean() for r in records])
    eps = np.array([r["episode"] for r in records])
    groups = [gain[eps == e] for e in np.unique(eps)]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        boots.append(float(np.mean(np.concatenate([groups[k] for k in pick]))))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"plans": len(records), "episodes": len(groups), "candidates": int(records[0]["returns"].size),
            "gain_mean": float(gain.mean()), "gain_ci95": [float(lo), float(hi)],
            "oracle_gain_mean": float(oracle.mean()), "return_spread_mean": float(spread.mean()),
            "return_mean": float(np.mean([r["returns"].mean() for r in records])),
            "win_rate": float(win.mean()), "rank_corr_mean": float(np.nanmean(rho)),
            "score_return_corr_pooled": float(pooled),
            "cost_gain_mean": float(cost_gain.mean()),
            "beats_random": bool(lo > 0)}
