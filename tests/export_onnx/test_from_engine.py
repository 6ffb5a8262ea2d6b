"""The networks inside an engine file, recovered as checkpoints (export/from_engine.py).

Real exports and real ONNX files throughout: the embedded default engine, and tiny engines
exported through `planner-runtime export` from random-init checkpoints in the trainer's
format. Recovery is exact or refused, so the tests compare weights with ``torch.equal`` and
graphs by their checksum.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from planner_runtime.cli import main
from planner_runtime.engine_file import load_onnx, sha256_hex

torch = pytest.importorskip("torch")

EMBEDDED = Path(__file__).resolve().parents[2] / "planner_runtime" / "engines" / "go2.onnx"
S, A, C, H = 5, 2, 2, 8


def _tiny_engine(tmp_path: Path, write_checkpoints_fn, graph: str = "fused", n_samples: int = 1,
                 method: str = "mpdiffuser") -> tuple[Path, Path]:
    """(checkpoint folder, engine exported from it by the CLI): planner, dynamics and a ranker."""
    from export.sampling.mpdiffuser import RankerNet

    torch.manual_seed(3)
    ck = write_checkpoints_fn(tmp_path / "ck", S, A, C, H, extra={"ranker": RankerNet(S, A, C, hidden=(8,))})
    out = tmp_path / f"{method}_{graph}_{n_samples}.onnx"
    args = ["export", "--checkpoints", str(ck), "--method", method, "--graph", graph, "--dt", "0.05",
            "--warm-level", "3", "--n-samples", str(n_samples), "-o", str(out)]
    if n_samples > 1:
        args += ["--knob", "budget=2.5", "--knob", "gamma=0.9"]
    assert main(args) == 0
    return ck, out


def _rewrite_manifest(src: Path, dst: Path, edit) -> Path:
    """A copy of engine ``src`` with its manifest changed by ``edit(dict)``; the graph (and so
    its checksum) untouched."""
    from planner_runtime import manifest as mf

    model = onnx.load(str(src))
    prop = next(p for p in model.metadata_props if p.key == mf.ONNX_METADATA_KEY)
    d = json.loads(prop.value)
    edit(d)
    prop.value = json.dumps(d)
    onnx.save_model(model, str(dst))
    return dst


@pytest.mark.parametrize("graph,n_samples", [("fused", 2), ("step", 1)])
def test_recovered_weights_are_the_checkpoints_weights(tmp_path, write_checkpoints_fn, graph, n_samples):
    """Every component the engine composes comes back with exactly its checkpoint's EMA
    weights (including the ranker of an N > 1 engine and its knobs), in the trainer's format."""
    from export.from_engine import builder_knobs, recover_components, write_checkpoints
    from export.train.checkpoint import load_checkpoint

    ck, engine = _tiny_engine(tmp_path, write_checkpoints_fn, graph, n_samples)
    _, man = load_onnx(engine)
    want = {"planner", "dynamics"} | ({"ranker"} if n_samples > 1 else set())
    assert set(man.provenance["checkpoints"]) == want
    if n_samples > 1:
        assert builder_knobs(man.to_dict()) | {"budget": 2.5, "gamma": 0.9} == builder_knobs(man.to_dict())
    for source in (recover_components(engine), {c: load_checkpoint(p) for c, p in
                                                 write_checkpoints(engine, tmp_path / "rec").items()}):
        assert set(source) == want
        for comp, rec in source.items():
            orig = load_checkpoint(ck / f"{comp}.pt")
            assert rec["model_class"] == orig["model_class"] and rec["model_config"] == orig["model_config"]
            assert rec["dims"] == orig["dims"] and rec["schedule"] == orig["schedule"]
            assert rec["recovered_from"]["engine_sha256"] == sha256_hex(engine.read_bytes())
            assert set(rec["ema"]) == set(orig["ema"])
            for k, v in orig["ema"].items():
                assert torch.equal(rec["ema"][k], v), (comp, k)
            np.testing.assert_array_equal(rec["normalizers"]["traj"]["shift"], orig["normalizers"]["traj"]["shift"])
    # the folder reads like `train --out`'s: the training config the manifest records beside the files
    assert json.loads((tmp_path / "rec" / "config.json").read_text()) == dict(man.provenance["training_config"])


def test_export_from_an_engine_file_records_where_the_networks_came_from(tmp_path, write_checkpoints_fn, capsys):
    """`export --checkpoints ENGINE.onnx`: the planner-only ablation of an engine's networks,
    whose manifest names the engine it came from and lists only the planner."""
    _, engine = _tiny_engine(tmp_path, write_checkpoints_fn)
    capsys.readouterr()
    out = tmp_path / "po.onnx"
    assert main(["export", "--checkpoints", str(engine), "--method", "planner", "--dt", "0.05",
                 "--warm-level", "3", "-o", str(out), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["engines"][str(out)]
    assert m["method"]["name"] == "planner" and m["method"]["knobs"]["alternation"] is False
    assert set(m["provenance"]["checkpoints"]) == {"planner"}
    src = sha256_hex(engine.read_bytes())
    assert m["provenance"]["recovered_from"]["engine_sha256"] == src
    assert m["provenance"]["checkpoints"]["planner"]["sha256"] == src
    assert main(["info", str(out)]) == 0
    assert f"networks from {engine.name} (sha256 {src[:16]}...)" in capsys.readouterr().out


def test_the_recipes_export_of_the_embedded_engines_networks_is_the_embedded_graph(tmp_path):
    """The shipped engine's networks, recovered from the shipped file and exported by the
    recipe's own final export command, give the shipped graph bit for bit."""
    from export.default_engine import _final_export

    _, man = load_onnx(EMBEDDED)
    out = tmp_path / "go2.onnx"
    cmd = _final_export(EMBEDDED, out, (False, True))  # the recipe's default variant (the cost condition)
    assert main(cmd) == 0
    _, again = load_onnx(out)
    assert again.checksums.graph_sha256 == man.checksums.graph_sha256
    assert set(again.provenance["checkpoints"]) == {"planner", "dynamics", "forecaster"}
    assert again.method.knobs == man.method.knobs
    # with no sampling options at all the export takes the source engine's own: the same engine
    bare = tmp_path / "bare.onnx"
    assert main(["export", "--checkpoints", str(EMBEDDED), "-o", str(bare)]) == 0
    _, same = load_onnx(bare)
    assert same.checksums.graph_sha256 == man.checksums.graph_sha256
    assert (same.diffusion.cfg_w, same.diffusion.temperature, same.control.chunk_size) == (1.3, 0.1, 4)


def test_what_cannot_be_recovered_exactly_is_refused(tmp_path, write_checkpoints_fn, capsys):
    from export.from_engine import RecoveryError, recover_components
    from export.models.guidance import InverseDynamicsVAE

    _, engine = _tiny_engine(tmp_path, write_checkpoints_fn)
    plan = tmp_path / "go2.plan"
    plan.write_bytes(b"not an onnx file")
    with pytest.raises(RecoveryError, match="TensorRT plan"):
        recover_components(plan)

    def wider(d):
        d["provenance"]["checkpoints"]["planner"]["model_config"]["dim"] = 16

    with pytest.raises(RecoveryError, match="other constants"):  # a manifest that does not describe its graph
        recover_components(_rewrite_manifest(engine, tmp_path / "wider.onnx", wider))

    def unrecorded(d):
        for c in d["provenance"]["checkpoints"].values():
            c.pop("model_config")

    with pytest.raises(RecoveryError, match="does not record its networks"):
        recover_components(_rewrite_manifest(engine, tmp_path / "old.onnx", unrecorded))

    def unknown_knob(d):
        d["method"]["knobs"]["eta"] = 0.5

    with pytest.raises(RecoveryError, match="unknown sampling knobs"):
        recover_components(_rewrite_manifest(engine, tmp_path / "knob.onnx", unknown_knob))

    # weights changed after export: the file's checksum no longer matches, nothing recovered
    model = onnx.load(str(engine))
    init = next(i for i in model.graph.initializer if i.name.startswith("sampler.planner."))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save_model(model, str(tmp_path / "tampered.onnx"))
    with pytest.raises(RecoveryError, match="checksum mismatch"):
        recover_components(tmp_path / "tampered.onnx")

    # another method's sampler: its knobs are not rebuilt here, so it is refused by name
    d = write_checkpoints_fn(tmp_path / "dadp", S, A, 1, H, extra={"inverse": InverseDynamicsVAE(S, A, latent=4, hidden=(8,))})
    dadp = tmp_path / "dadp.onnx"
    assert main(["export", "--checkpoints", str(d), "--method", "dadp_i", "--graph", "step", "--dt", "0.05",
                 "--warm-level", "3", "-o", str(dadp)]) == 0
    capsys.readouterr()
    assert main(["export", "--checkpoints", str(dadp), "--method", "dadp_i", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "recovering a 'dadp_i' engine is not supported" in err and not (tmp_path / "x.onnx").exists()


def test_settings_left_out_come_from_the_source_engine(tmp_path, write_checkpoints_fn, capsys):
    """Exported from an engine file, every sampling setting the command line leaves out is
    that engine's (not the export defaults), and each one given replaces it."""
    from export.sampling.mpdiffuser import RankerNet

    ck = write_checkpoints_fn(tmp_path / "ck", S, A, C, H, extra={"ranker": RankerNet(S, A, C, hidden=(8,))})
    src = tmp_path / "src.onnx"
    assert main(["export", "--checkpoints", str(ck), "--dt", "0.05", "--warm-level", "3", "--cfg-w", "1.7",
                 "--temperature", "0.2", "--chunk-size", "2", "--n-samples", "2", "--knob", "budget=2.5",
                 "--knob", "gamma=0.9", "-o", str(src)]) == 0
    capsys.readouterr()
    out = tmp_path / "step.onnx"
    assert main(["export", "--checkpoints", str(src), "--dt", "0.05", "--graph", "step", "-o", str(out), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["engines"][str(out)]
    assert m["graph"]["kind"] == "step" and m["dims"]["B"] == 2
    assert (m["diffusion"]["warm_level"], m["diffusion"]["cfg_w"], m["diffusion"]["temperature"]) == (3, 1.7, 0.2)
    assert m["control"]["chunk_size"] == 2
    assert (m["method"]["knobs"]["budget"], m["method"]["knobs"]["gamma"]) == (2.5, 0.9)
    given = tmp_path / "given.onnx"
    assert main(["export", "--checkpoints", str(src), "--dt", "0.05", "--cfg-w", "1.1", "--knob", "budget=4",
                 "-o", str(given), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["engines"][str(given)]
    assert m["diffusion"]["cfg_w"] == 1.1 and m["method"]["knobs"]["budget"] == 4.0
    assert m["diffusion"]["temperature"] == 0.2 and m["method"]["knobs"]["gamma"] == 0.9
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    assert main(["export", "--checkpoints", str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.onnx" in err


def test_gains_set_at_the_source_engines_export_carry_over(tmp_path):
    """PD gains the source engine was exported with (an override of its data's) are the
    re-export's unless given; gains equal to the data's stay unset (the data's apply)."""
    import argparse

    from export.cli_export import add_arguments, source_settings

    def parse(*argv):
        p = argparse.ArgumentParser()
        add_arguments(p)
        return p.parse_args(list(argv))

    def with_kp(d):
        d["overrides"] = {"action.kp": {"value": 26.0, "data": 24.0, "by": "--kp 26"}}

    src = _rewrite_manifest(EMBEDDED, tmp_path / "kp26.onnx", with_kp)
    args = parse("--checkpoints", str(src), "-o", str(tmp_path / "x.onnx"))
    knobs = source_settings(args)
    assert (args.kp, args.kd) == (26.0, None)
    own = load_onnx(EMBEDDED)[1].diffusion.warm_level  # the source engine's own warm start
    assert (args.method, args.warm_level, args.cfg_w, args.n_samples) == ("mpdiffuser", own, 1.3, 1) and own == 7
    assert knobs == {"clip": 1.0, "forecast_states": "all", "cost_to_go": 0.0, "cost_to_go_tilted": -3.0,
                     "tilt_gate_deg": 8.0}
    args = parse("--checkpoints", str(src), "--kp", "24", "--cfg-w", "2.5", "-o", str(tmp_path / "x.onnx"))
    source_settings(args)
    assert (args.kp, args.cfg_w) == (24.0, 2.5)
    plain = parse("--checkpoints", str(tmp_path), "-o", str(tmp_path / "x.onnx"))  # a folder: the defaults
    assert source_settings(plain) == {} and (plain.method, plain.cfg_w, plain.kp) == ("mpdiffuser", 2.0, None)


def test_a_condition_column_constant_in_the_data_has_no_range_through_export_and_reexport(tmp_path, write_checkpoints_fn):
    """A command column the data never varied (vy 0 throughout): the min-max normalizer gives
    it the placeholder scale 1, which once read as a range of +/-1 around 0 and let a live
    command ask for sideways speeds the planner never saw. The manifest now records the
    column as constant, the range is [0, 0], and the controller's limits hold vy at 0;
    exporting the engine's networks again keeps it."""
    from planner_runtime.manifest import condition_range
    from robot.live_command import CommandLimits

    rng = np.random.default_rng(0)
    rows = np.stack([rng.uniform(-0.3, 0.8, 64), np.zeros(64), rng.uniform(-0.5, 0.5, 64)], 1)
    ck = write_checkpoints_fn(tmp_path / "ck", 30, 12, 3, 16, cond_rows=rows)
    first, again = tmp_path / "e.onnx", tmp_path / "again.onnx"
    assert main(["export", "--checkpoints", str(ck), "--method", "mpdiffuser", "-o", str(first)]) == 0
    assert main(["export", "--checkpoints", str(first), "--method", "mpdiffuser", "-o", str(again)]) == 0
    for path in (first, again):
        m = load_onnx(path)[1]
        assert list(m.normalizer["cond"]["constant"]) == [1] and "constant" not in m.normalizer["traj"]
        rng_ = condition_range(m)
        np.testing.assert_allclose(rng_["lo"], [rows[:, 0].min(), 0.0, rows[:, 2].min()], atol=1e-6)
        np.testing.assert_allclose(rng_["hi"], [rows[:, 0].max(), 0.0, rows[:, 2].max()], atol=1e-6)
        lim = CommandLimits.from_condition_range(rng_)
        cmd, clamped = lim.clamp(np.array([0.5, 0.3, 0.2]))
        assert clamped and np.allclose(cmd, [0.5, 0.0, 0.2])
