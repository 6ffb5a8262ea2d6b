"""The ranker check (sim/ranker_check.py) with real MuJoCo: the simulator clone is exact and
independent, and the candidate scores follow what the candidates do to the robot."""

from __future__ import annotations

import numpy as np
import pytest

from planner_runtime.engine import PlanOutput

COND_NAMES = ["cmd_vx", "cmd_vy", "cmd_yaw_rate"]
S, A, H = 30, 12, 16


def test_clone_is_exact_and_independent(robot):
    robot.reset()
    robot.step(200)
    twin = robot.clone()
    assert twin.data is not robot.data
    twin.step(150)
    assert twin.now() > robot.now()
    assert not np.allclose(twin.data.qpos, robot.data.qpos)  # the original did not move
    robot.step(150)
    np.testing.assert_array_equal(twin.data.qpos, robot.data.qpos)  # same physics, same result
    np.testing.assert_array_equal(twin.data.qvel, robot.data.qvel)


def _stand(robot) -> None:
    from robot.actions import LEGGED_GYM
    from robot.types import LowCmd

    robot.reset()
    n = len(LEGGED_GYM.joint_names)
    robot.write_command(LowCmd(q=LEGGED_GYM.default_joint_pos.copy(), kp=np.full(n, 20.0), kd=np.full(n, 0.5)))
    robot.step(500)  # 1 s holding the default pose: standing, settled
    assert not robot.fallen()


class _TwoCandidates:
    """A stand-in engine (no network: the check only needs its candidates): candidate 0
    holds the legged-gym default pose, candidate 1 kicks every joint to the ends of its
    action range and back; ``best`` is whichever the test says."""

    def __init__(self, best: int):
        self.best = best
        self.manifest = {"name": "two-candidates"}

    def plan_trusted(self, x0, cond, *args, **kw) -> PlanOutput:
        plan = np.zeros((2, H, S + A), np.float32)
        plan[1, :, S:] = np.where(np.arange(H)[:, None] % 4 < 2, 4.0, -4.0)
        return PlanOutput(plan=plan, best=self.best, score=np.array([1.0, 0.0], np.float32), infer_ms=0.0)


@pytest.mark.parametrize("best", [0, 1])
def test_scores_follow_the_candidates_outcomes(robot, best):
    from robot.actions import LEGGED_GYM
    from sim.ranker_check import CandidateScorer, summarize

    _stand(robot)
    q_before = robot.data.qpos.copy()
    scorer = CandidateScorer(_TwoCandidates(best), LEGGED_GYM, 0.997, COND_NAMES)
    assert scorer.manifest == {"name": "two-candidates"}  # the proxy passes the engine through
    scorer.attach(robot, episode=0)
    cond = np.zeros((2, 3), np.float32)  # command: stand still
    out = scorer.plan_trusted(np.zeros((2, S), np.float32), cond)
    assert out.best == best
    np.testing.assert_array_equal(robot.data.qpos, q_before)  # rollouts ran on copies
    (rec,) = scorer.records
    # Standing still on a zero command earns close to the full reward (1.5 per tick); kicking
    # the legs about moves the base and earns less.
    assert rec["returns"][0] > rec["returns"][1] + 0.5
    assert rec["returns"][0] > 0.9 * 1.5 * H * 0.98
    s = summarize(scorer.records * 4, n_boot=50)
    sign = 1 if best == 0 else -1
    assert sign * s["gain_mean"] > 0
    assert s["win_rate"] == (1.0 if best == 0 else 0.0)
    assert s["oracle_gain_mean"] == pytest.approx(abs(s["gain_mean"]))


def test_refuses_engines_without_candidates_or_command(robot):
    from robot.actions import LEGGED_GYM
    from sim.ranker_check import CandidateScorer

    with pytest.raises(ValueError, match="command"):
        CandidateScorer(_TwoCandidates(0), LEGGED_GYM, 0.997, ["px", "py"])

    class _One(_TwoCandidates):
        def plan_trusted(self, *a, **kw):
            out = super().plan_trusted(*a, **kw)
            return PlanOutput(out.plan[:1], 0, out.score[:1], 0.0)

    scorer = CandidateScorer(_One(0), LEGGED_GYM, 0.997, COND_NAMES)
    scorer.attach(robot, 0)
    with pytest.raises(ValueError, match="N > 1"):
        scorer.plan_trusted(np.zeros((1, S), np.float32), np.zeros((1, 3), np.float32))


def test_ranker_data_writes_each_candidate_with_the_rewards_it_earned(robot, tmp_path):
    from planner_runtime.dataset import DatasetWriter, load_dataset
    from robot.actions import LEGGED_GYM
    from robot.observation import STATE_NAMES
    from sim.ranker_check import CandidateScorer

    _stand(robot)
    path = tmp_path / "cand.h5"
    writer = DatasetWriter(path, list(STATE_NAMES), [f"a{i}" for i in range(A)], COND_NAMES, 0.02, robot="go2")
    scorer = CandidateScorer(_TwoCandidates(0), LEGGED_GYM, 0.997, COND_NAMES, writer)
    scorer.attach(robot, 0)
    x0 = np.tile(np.linspace(-1, 1, S, dtype=np.float32), (2, 1))
    cond = np.tile(np.array([0.3, 0.0, 0.1], np.float32), (2, 1))
    scorer.plan_trusted(x0, cond)
    writer.close()
    ds = load_dataset(path)
    eps = list(ds.episodes())
    assert len(eps) == 2 and all(len(e) == H for e in eps)
    plan = _TwoCandidates(0).plan_trusted(x0, cond).plan
    (rec,) = scorer.records
    for i, e in enumerate(eps):
        np.testing.assert_array_equal(e.observations[0], x0[i])  # the measured state, then the plan's
        np.testing.assert_array_equal(e.observations[1:], plan[i, :-1, :S])
        np.testing.assert_array_equal(e.actions, plan[i, :, S:])
        np.testing.assert_array_equal(e.conditions, np.repeat(cond[i][None], H, 0))
        disc = 0.997 ** np.arange(H)
        assert float(disc @ e.rewards) == pytest.approx(rec["returns"][i], rel=1e-5)
    assert abs(eps[0].rewards.sum() - eps[1].rewards.sum()) > 0.1  # each its own outcome
