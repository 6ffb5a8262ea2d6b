"""The typed manifest: parsing names every malformed field, the object is frozen and gives
back exactly the JSON it was parsed from, and its attributes are the stored values."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from planner_runtime import manifest as mf


@pytest.fixture
def good(engines) -> dict:
    from planner_runtime.engine_file import read_manifest

    return read_manifest(engines.get("planner", "fused")[0]).to_dict()


@pytest.fixture(scope="module")
def shipped() -> tuple[str, mf.Manifest]:
    """The stored manifest text of the shipped engine, and its parse."""
    import onnx

    from planner_runtime.engine_file import read_manifest
    from planner_runtime.engines import default_engine_path

    path = default_engine_path()
    model = onnx.load(str(path), load_external_data=False)
    text = {p.key: p.value for p in model.metadata_props}[mf.ONNX_METADATA_KEY]
    return text, read_manifest(path)


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
    (("action", "kp"), -1.0, "'action.kp' must be >= 0"),
    (("action", "source"), 3, "'action.source' must be a string"),
    (("control", "dt"), 0.0, "'control.dt' must be > 0"),
    (("control", "chunk_size"), 99, "exceeds H"),
    (("robot", "profile"), [1], "'robot.profile' must be an object"),
    (("checksums", "graph_sha256"), "abc", "64-hex"),
])
def test_bad_field_is_named(good, path, value, msg):
    m = copy.deepcopy(good)
    d = m
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(mf.ManifestError, match=msg):
        mf.parse(m)
    with pytest.raises(mf.ManifestError, match=msg):
        mf.Manifest.parse(m)


@pytest.mark.parametrize("field", ["method", "dims", "normalizer", "observation", "provenance", "checksums"])
def test_missing_section(good, field):
    m = copy.deepcopy(good)
    del m[field]
    with pytest.raises(mf.ManifestError, match=f"missing field '{field}'"):
        mf.parse(m)


def test_json_roundtrip_and_summary(good):
    m = mf.parse(good)
    assert m.to_dict() == good
    text = m.to_json()
    assert mf.from_json(text) == m and mf.from_json(text).to_dict() == good
    assert "graph       fused (n_steps 3)" in mf.summary(m)
    with pytest.raises(mf.ManifestError, match="not valid JSON"):
        mf.from_json(text[:-3])


def test_unknown_fields_are_kept_and_to_dict_is_a_fresh_copy(good):
    extra = {**copy.deepcopy(good), "future_field": {"x": [1, 2]}}
    m = mf.parse(extra)
    assert m.to_dict() == extra
    d = m.to_dict()
    d["dims"]["S"] = 999
    d["future_field"]["x"].append(3)
    assert m.dims.S == good["dims"]["S"] and m.to_dict() == extra


def test_manifest_is_frozen(good):
    m = mf.parse(good)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.dims = m.dims  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.dims.S = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.control.dt = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.provenance["dataset_sha256"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        m.method.knobs["n_samples"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        m.graph.inputs.append("x")  # type: ignore[attr-defined]


def test_public_form_has_no_normalizer_and_parses_only_as_public(good):
    m = mf.parse(good)
    pub = m.public_dict()
    assert "normalizer" not in pub and {**pub, "normalizer": good["normalizer"]} == good
    p = mf.parse(pub, public=True)
    assert p.normalizer is None and p.dims == m.dims and p.action == m.action
    with pytest.raises(mf.ManifestError, match="missing field 'normalizer'"):
        mf.parse(pub)
    assert mf.parse(m) is m  # an already parsed manifest is taken as it is


def test_shipped_engine_roundtrip_is_exact(shipped):
    text, m = shipped
    assert m.to_json() == text
    assert m.to_dict() == json.loads(text)


def test_shipped_engine_attributes_are_the_stored_values(shipped):
    text, m = shipped
    d = json.loads(text)
    assert m.format_version == d["format_version"]
    assert (m.method.name, mf.plain(m.method.knobs)) == (d["method"]["name"], d["method"]["knobs"])
    g = d["graph"]
    assert (m.graph.kind, m.graph.n_steps, list(m.graph.inputs), list(m.graph.outputs)) == \
        (g["kind"], g["n_steps"], g["inputs"], g["outputs"])
    assert dataclasses.asdict(m.dims) == d["dims"]
    f = d["diffusion"]
    assert (m.diffusion.K, m.diffusion.schedule, m.diffusion.warm_level, m.diffusion.cfg_w,
            m.diffusion.temperature) == (f["K"], f["schedule"], f["warm_level"], f["cfg_w"], f["temperature"])
    assert list(m.diffusion.cold_levels) == f["cold_levels"] and list(m.diffusion.warm_levels) == f["warm_levels"]
    assert mf.plain(m.diffusion.clip) == f["clip"]
    assert mf.plain(m.normalizer) == d["normalizer"]
    o = d["observation"]
    assert [list(m.observation.state_names), list(m.observation.condition_names),
            list(m.observation.action_names)] == [o["state_names"], o["condition_names"], o["action_names"]]
    assert {**mf.plain(m.observation.other), "state_names": o["state_names"],
            "condition_names": o["condition_names"], "action_names": o["action_names"]} == o
    a = d["action"]
    assert list(m.action.joint_names) == a["joint_names"] and list(m.action.default_joint_pos) == a["default_joint_pos"]
    assert mf.plain(m.action.scale) == a["scale"] and (m.action.kp, m.action.kd) == (a["kp"], a["kd"])
    assert (m.action.name, m.action.source) == (a.get("name"), a.get("source")) and m.action.to_dict() == a
    c = d["control"]
    assert (m.control.dt, m.control.chunk_size, m.control.dt_source) == (c["dt"], c["chunk_size"], c.get("dt_source"))
    assert (m.robot.name, mf.plain(m.robot.profile)) == (d["robot"]["name"], d["robot"]["profile"])
    assert mf.plain(m.provenance) == d["provenance"] and mf.plain(m.overrides) == d.get("overrides", {})
    assert (m.checksums.graph_sha256, m.checksums.plan_sha256) == (d["checksums"]["graph_sha256"], None)
    assert m.tensorrt is None and "tensorrt" not in d
