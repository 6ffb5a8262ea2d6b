"""DyDiff rollouts on the dynamics diffusion model: fixed actions, lengths, relabelling,
averaging, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.dydiff import DyDiff

torch.set_num_threads(1)


def _dydiff(lin, one_step=None):
    return DyDiff(lin.models["dynamics"], one_step or lin.models["forward"], lin.data.norms,
                  lin.S, lin.A, lin.C, lin.H, lin.K)


def test_open_loop_actions_are_kept_and_length_is_exact(lin):
    L = 2 * lin.H + 3  # not a multiple of H: the last segment is padded and cut
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1.0, 1.0, size=(L, lin.A)).astype(np.float32)
    x0 = np.array([[0.5, -0.3], [1.0, 0.2]], np.float32)
    res = _dydiff(lin).rollout(x0, acts, np.zeros(lin.C, np.float32), length=L, rounds=2, steps=5)
    assert res.length == L and res.states.shape == (2, L + 1, lin.S)
    assert res.actions.shape == (2, L, lin.A)
    np.testing.assert_array_equal(res.actions, np.broadcast_to(acts, (2, L, lin.A)))
    np.testing.assert_array_equal(res.states[:, 0], x0)
    assert len(res.round_states) == 3 and np.all(np.isfinite(res.states))
    # each diffusion round changed the states (round 0 is the one-step model's rollout)
    assert not np.allclose(res.round_states[1], res.round_states[0])
    with pytest.raises(ValueError, match="fixed actions"):
        _dydiff(lin).rollout(x0, acts[:-1], np.zeros(lin.C), length=L)


def test_policy_relabels_actions_on_final_states(lin):
    K_gain = np.array([[0.8, 0.3], [0.2, 0.9]], np.float32)

    def policy(x):
        return -x @ K_gain.T

    res = _dydiff(lin).rollout(np.array([1.0, -1.0], np.float32), policy, np.zeros(lin.C),
                               length=12, rounds=2, steps=4)
    np.testing.assert_allclose(res.actions, -res.states[:, :-1] @ K_gain.T, rtol=1e-6, atol=1e-6)
    # a torch policy works as well
    tp = torch.nn.Linear(lin.S, lin.A)
    res_t = _dydiff(lin).rollout(np.zeros(lin.S, np.float32), tp, np.zeros(lin.C), length=5,
                                 rounds=1, steps=2)
    with torch.no_grad():
        want = tp(torch.from_numpy(res_t.states[:, :-1])).numpy()
    np.testing.assert_allclose(res_t.actions, want, rtol=1e-5, atol=1e-6)


def test_averaging_weight_and_determinism(lin):
    acts = np.full((10, lin.A), 0.2, np.float32)
    x0 = np.array([0.3, 0.1], np.float32)
    dd = _dydiff(lin, one_step=lin.sys.next_state)  # the true one-step model (raw units)
    kw = dict(length=10, rounds=1, steps=4, seed=3)
    keep = dd.rollout(x0, acts, np.zeros(lin.C), avg_weight=0.0, **kw)
    exact = x0.copy()
    for t in range(10):
        exact = lin.sys.next_state(exact[None], acts[t:t + 1])[0]
        np.testing.assert_allclose(keep.states[0, t + 1], exact, rtol=1e-5, atol=1e-5)
    a, b = (dd.rollout(x0, acts, np.zeros(lin.C), avg_weight=0.5, **kw) for _ in range(2))
    np.testing.assert_array_equal(a.states, b.states)
    full = dd.rollout(x0, acts, np.zeros(lin.C), avg_weight=1.0, **kw)
    # within the first segment the average is exact (later segments start from the averaged
    # end of the previous one, so they chain)
    n = lin.H + 1
    np.testing.assert_allclose(a.states[:, :n], 0.5 * (full.states[:, :n] + keep.states[:, :n]),
                               rtol=1e-5, atol=1e-5)
    other = dd.rollout(x0, acts, np.zeros(lin.C), avg_weight=0.5, length=10, rounds=1, steps=4,
                       seed=4)
    assert not np.allclose(other.states, a.states)
    with pytest.raises(ValueError, match="avg_weight"):
        dd.rollout(x0, acts, np.zeros(lin.C), avg_weight=1.5, length=10)
