"""`planner-runtime bench` smoke test: one JSON object with fused, step and eager numbers
(no timing thresholds: only structure and correctness of the benchmarked graphs)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from planner_runtime.cli import main  # noqa: E402


def test_bench_sampler_json(tmp_path, capsys):
    rc = main(["bench", "--what", "sampler", "--iters", "3", "--warmup", "1", "--dim", "8",
               "--json", "--plot", str(tmp_path), "--keep", str(tmp_path / "eng")])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    s = rep["sampler"]
    assert set(s["latency"]) == {"torch_eager", "ort_fused", "ort_step", "ort_fused_traced"}
    for r in s["latency"].values():
        assert r["n"] == 3 and r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"]
    assert all(e <= 1e-3 for e in s["max_abs_err_vs_torch"].values())
    assert s["model"]["dims"] == {"S": 30, "A": 12, "C": 3, "H": 16, "K": 10}
    assert s["model"]["params_total"] > 0
    assert set(s["speedup_vs_eager"]) == {"ort_fused", "ort_step", "ort_fused_traced"}
    # the graph passes' baseline: the traced graph, more nodes, the same plan to the bit
    assert s["fused_equals_traced_bitwise"] is True
    assert s["graph_nodes"]["fused_traced"] > s["graph_nodes"]["fused"]
    assert set(s["graph_passes_speedup"]) == {"median", "p99"}
    assert set(s["tail_bursts"]) == set(s["latency"])  # per variant ({} with too few calls to say)
    assert (tmp_path / "sampler_latency.png").stat().st_size > 0
    assert (tmp_path / "eng" / "bench_fused.onnx").is_file()


def test_bench_sampler_blocks_give_every_variant_exactly_iters_calls(capsys):
    # 5 calls per variant in blocks of 2: rounds of 2, 2 and a last one of 1
    rc = main(["bench", "--what", "sampler", "--iters", "5", "--warmup", "0", "--block", "2",
               "--dim", "8", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)["sampler"]
    assert s["block"] == 2
    assert {k: r["n"] for k, r in s["latency"].items()} == {"torch_eager": 5, "ort_fused": 5, "ort_step": 5,
                                                          "ort_fused_traced": 5}


def test_bench_unknown_section(capsys):
    assert main(["bench", "--what", "gpu-magic"]) == 2
    assert "unknown --what" in capsys.readouterr().err


def test_bench_training_section_trains_both_networks(tmp_path, capsys):
    from export.synthetic import write_go2_shaped_dataset

    data = tmp_path / "go2.h5"
    write_go2_shaped_dataset(str(data), n_episodes=2, T=60)
    rc = main(["bench", "--what", "training", "--train-steps", "3", "--train-procs", "1",
               "--train-data", str(data), "--train-set", "batch_size=8", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)["training"]
    run = rep["runs"]["1"]
    assert set(run) == {"planner", "dynamics"} and rep["steps"] == 3
    for comp in run.values():
        assert comp["steps_per_s"] > 0 and comp["params"] > 0
        assert comp["samples_per_s"] == pytest.approx(comp["steps_per_s"] * 8, rel=0.01)


def test_bench_times_the_embedded_engines_own_graph(tmp_path, capsys):
    """`bench --checkpoints ENGINE.onnx` times exactly that engine's fused graph (its networks
    recovered from the file, its own knobs and warm level): the report names the graph it
    timed. `--warm-level` replaces the engine's, and the timed graph then runs that many steps."""
    from planner_runtime.engine_file import read_manifest
    from planner_runtime.engines import default_engine_path

    engine = default_engine_path()
    own = read_manifest(engine)
    rc = main(["bench", "--what", "sampler", "--iters", "2", "--warmup", "0", "--checkpoints", str(engine),
               "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)["sampler"]
    assert s["graph_sha256"]["fused"] == own.checksums.graph_sha256
    assert s["model"]["knobs"]["cost_to_go_tilted"] == -3 and s["model"]["warm_steps"] == own.diffusion.warm_level
    assert all(e <= 1e-3 for e in s["max_abs_err_vs_torch"].values())

    rc = main(["bench", "--what", "sampler", "--iters", "2", "--warmup", "0", "--checkpoints", str(engine),
               "--warm-level", "4", "--keep", str(tmp_path), "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)["sampler"]
    timed = read_manifest(tmp_path / "bench_fused.onnx")
    assert s["model"]["warm_steps"] == 4 and timed.to_dict()["graph"]["n_steps"] == 4
    assert s["graph_sha256"]["fused"] != own.checksums.graph_sha256
    assert all(e <= 1e-3 for e in s["max_abs_err_vs_torch"].values())


def test_bench_refuses_a_knob_it_would_not_apply(capsys):
    assert main(["bench", "--what", "sampler", "--knob", "cost_to_go_tilted=-3"]) == 2
    assert "--knob sets a knob of the --checkpoints sampler" in capsys.readouterr().err


def test_bench_reports_unreadable_checkpoints_as_an_error(tmp_path, capsys):
    assert main(["bench", "--what", "sampler", "--checkpoints", str(tmp_path / "none.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none.onnx" in err and "Traceback" not in err
    assert main(["bench", "--what", "sampler", "--checkpoints", str(tmp_path)]) == 2  # a folder without *.pt
    assert "no *.pt checkpoints" in capsys.readouterr().err
