"""The robot's state tick against the host's clock (robot.dds_bridge.TickClock): its unit is
measured from the states read, not assumed, so skipped states and read delays stay right on a
robot whose tick counts microseconds or its own steps. Synthetic reads at 500 Hz; the DDS path
is in test_dds.py."""

from __future__ import annotations

import numpy as np
import pytest

from robot.dds_bridge import TickClock

STATE_HZ = 500.0


def feed(tick_hz: float, *, seconds: float = 2.0, start: int = 0, skip: set[int] | None = None,
         late: dict[int, float] | None = None) -> TickClock:
    """States published every 2 ms from t = 100 s with tick = start + t * tick_hz (uint32);
    read ``late[k]`` s after publication (else within 0.5 ms); those in ``skip`` never read."""
    clock = TickClock(STATE_HZ)
    rng = np.random.default_rng(0)
    for k in range(int(seconds * STATE_HZ)):
        if skip and k in skip:
            continue
        t = k / STATE_HZ
        tick = (start + int(round(t * tick_hz))) & 0xFFFFFFFF
        clock.add(tick, 100.0 + t + (late or {}).get(k, rng.uniform(0, 5e-4)))
    return clock


@pytest.mark.parametrize("tick_hz, unit", [(1e3, "ms"), (1e6, "us"), (STATE_HZ, "per state")])
def test_the_unit_is_identified_from_the_rate_and_gives_the_same_skips_and_delays(tick_hz, unit):
    skip = set(range(700, 710))  # 10 states never read, after the unit is known
    late = {900: 0.030}  # one state read 30 ms late
    c = feed(tick_hz, skip=skip, late=late, start=2**32 - int(0.3 * tick_hz))  # wraps 0.3 s in
    assert (c.unit, c.hz) == (unit, tick_hz)
    assert c.skipped == len(skip)
    d = c.delay_ms()
    assert d["n"] == 1000 - len(skip)
    assert d["median"] < 0.5 and 29.0 < d["max"] < 30.6, d


def test_skips_before_the_unit_is_known_are_counted_once_it_is():
    c = feed(1e6, skip=set(range(100, 150)))
    assert c.unit == "us" and c.skipped == 50


def test_an_unknown_rate_is_measured_and_a_coarse_tick_counts_no_skips():
    c = feed(200.0)  # a simulator counting its own 200 Hz steps: coarser than the states
    assert c.unit is not None and c.unit.endswith("Hz (measured)")
    assert c.hz == pytest.approx(200.0, rel=0.01)
    assert not c.resolves_states and c.skipped == 0
    assert c.delay_ms()["median"] < 5.0  # the 5 ms steps themselves, not seconds
    c = feed(2000.0, skip={300, 301, 800})  # a 0.5 ms tick resolves states
    assert c.resolves_states and c.skipped == 3


def test_a_tick_that_does_not_advance_gives_no_numbers_rather_than_wrong_ones():
    c = feed(0.0)
    assert c.unit == "not counting" and c.hz is None
    assert c.delay_ms() == {} and c.skipped == 0
    assert c._gaps == []  # nothing kept growing for the rest of the run


def test_before_a_second_of_reads_nothing_is_claimed():
    c = feed(1e3, seconds=0.5)
    assert c.unit is None and c.delay_ms() == {}

