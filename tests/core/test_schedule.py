import numpy as np
import pytest

from planner_runtime import schedule


def test_cosine_alpha_bar_monotone_and_bounded():
    ab = schedule.alpha_bar(10, "cosine")
    assert ab.shape == (11,)
    assert ab[0] == 1.0
    assert np.all(np.diff(ab) < 0)
    assert 0.0 <= ab[-1] < 1e-3  # level K is (numerically) pure noise: a cold start
    # Nichol & Dhariwal closed form at an interior level
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    assert ab[7] == pytest.approx(f(0.7) / f(0.0), rel=1e-9)


def test_linear_schedule_and_unknown_kind():
    ab = schedule.alpha_bar(5, "linear", beta_start=0.1, beta_end=0.5)
    assert ab[1] == pytest.approx(0.9)
    assert ab[5] == pytest.approx(np.prod(1 - np.linspace(0.1, 0.5, 5)))
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        schedule.alpha_bar(5, "quadratic")


def test_level_sequences():
    assert schedule.warm_levels(7).tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    lv = schedule.ddim_levels(10, 7)
    assert lv[0] == 10 and lv[-1] == 0 and len(lv) == 8
    assert np.all(np.diff(lv) < 0)
    assert schedule.ddim_levels(10, 10).tolist() == list(range(10, -1, -1))
    with pytest.raises(ValueError, match="num_steps"):
        schedule.ddim_levels(10, 11)


def test_validate_levels_rejects_bad_sequences():
    assert schedule.validate_levels(np.array([3, 1, 0]), 10).dtype == np.int64
    for bad, msg in (([3, 3, 0], "decrease"), ([11, 0], "decrease"), ([3, 1], "decrease"),
                     ([2.0, 0.0], "integers"), ([0], ">= 2")):
        with pytest.raises(ValueError, match=msg):
            schedule.validate_levels(np.array(bad), 10)
