"""planner_runtime/config.py, the one reader of configs from JSON / dicts: nested dataclasses,
required fields, typed values (tuples, unions, literals), partial sections, to_dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from planner_runtime.config import ConfigError, check_mapping, from_mapping, overrides, to_dict


@dataclass
class Inner:
    gain: float = 1.0
    axes: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Outer:
    name: str
    mode: Literal["hold", "blend"] = "hold"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] = overrides(Inner)


def test_nested_values_are_built_checked_and_round_trip():
    o = from_mapping(Outer, {"name": "a", "inner": {"axes": [1, 2, 3]}, "extra": {"gain": 2}}, "t")
    assert o.inner == Inner(1.0, (1.0, 2.0, 3.0)) and o.limit is None and o.extra == {"gain": 2.0}
    d = to_dict(o)
    assert d == {"name": "a", "mode": "hold", "limit": None, "inner": {"gain": 1.0, "axes": [1.0, 2.0, 3.0]},
                 "extra": {"gain": 2.0}}
    assert from_mapping(Outer, d, "t") == o


@pytest.mark.parametrize("data, msg", [
    ({}, r"t: missing 'name'"),
    ({"name": "a", "inner": {"axes": [1, 2]}}, r"'inner.axes' must have 3 entries"),
    ({"name": "a", "mode": "blnd"}, r"'mode' must be one of \['hold', 'blend'\], got 'blnd'"),
    ({"name": "a", "limit": 2.5}, r"'limit' must be int, got 2.5"),
    ({"name": "a", "limit": True}, r"'limit' must be int, got True"),
    ({"name": "a", "inner": {"gian": 2}}, r"unknown key 'inner.gian' \(did you mean 'gain'\?\); allowed in 'inner': gain, axes"),
    ({"name": "a", "extra": {"axis": [1, 2, 3]}}, r"unknown key 'extra.axis' \(did you mean 'axes'\?\)"),
    ({"name": "a", "inner": 3}, r"'inner' must be object, got 3"),
])
def test_bad_input_names_the_field(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_mapping(Outer, data, "t")


def test_partial_check_fills_nothing():
    assert check_mapping(Outer, {"inner": {"gain": 3}}, "t") == {"inner": {"gain": 3.0}}
    with pytest.raises(ConfigError, match=r"'inner.gain' must be float, got 'x'"):
        check_mapping(Outer, {"inner": {"gain": "x"}}, "t")
