"""Manifest validation: every malformed field is named in the error."""

from __future__ import annotations

import copy

import pytest

from planner_runtime import manifest as mf


@pytest.fixture
def good(engines) -> dict:
    from planner_runtime.engine_file import read_manifest

    return read_manifest(engines.get("planner", "fused")[0])


@pytest.mark.parametrize("path,value,msg", [
    (("format",), "other", "'format' must be"),
    (("format_version",), 2, "unknown engine format_version 2"),
    (("dims", "S"), 0, "'dims.S' must be >= 1"),
    (("dims", "H"), "16", "'dims.H' must be an integer"),
    (("graph", "kind"), "loop", "'graph.kind' must be one of"),
    (("graph", "inputs"), ["x0"], "'graph.inputs' must be"),
    (("diffusion", "warm_level"), 11, "exceeds K"),
    (("diffusion", "warm_levels"), [3, 3, 1, 0], "must decrease strictly"),
    (("diffusion", "cold_levels"), [10, 0], "must have 4 entries"),
    (("diffusion", "schedule"), "sigmoid", "'diffusion.schedule' is unknown"),
    (("diffusion", "clip"), [1.0, -1.0], "lo < hi"),
    (("diffusion", "temperature"), float("nan"), "finite number"),
    (("observation", "state_names"), ["a"], "S=6 names"),
    (("action", "default_joint_pos"), [0.0], "must have 3 entries"),
    (("control", "dt"), 0.0, "'control.dt' must be > 0"),
    (("control", "chunk_size"), 99, "exceeds H"),
    (("checksums", "graph_sha256"), "abc", "64-hex"),
])
def test_bad_field_is_named(good, path, value, msg):
    m = copy.deepcopy(good)
    d = m
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(mf.ManifestError, match=msg):
        mf.validate(m)


@pytest.mark.parametrize("field", ["method", "dims", "normalizer", "observation", "provenance", "checksums"])
def test_missing_section(good, field):
    m = copy.deepcopy(good)
    del m[field]
    with pytest.raises(mf.ManifestError, match=f"missing field '{field}'"):
        mf.validate(m)


def test_json_roundtrip_and_summary(good):
    text = mf.to_json(good)
    assert mf.from_json(text) == good
    assert "graph       fused (n_steps 3)" in mf.summary(good)
    with pytest.raises(mf.ManifestError, match="not valid JSON"):
        mf.from_json(text[:-3])
