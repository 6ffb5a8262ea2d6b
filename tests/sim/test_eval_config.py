"""The eval options as one typed config (sim/eval_config.py): the command line's defaults are
the dataclass's, unknown keys are refused with the close match, and matrix / sweep cells are
checked changes of a base config that run as the command lines that parse back to them."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from planner_runtime.config import ConfigError, from_mapping
from sim import eval_matrix, latency_sweep
from sim.eval_config import EvalConfig, add_arguments, config_from_args, to_argv, with_changes


def parse(*argv: str) -> EvalConfig:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return config_from_args(p.parse_args(list(argv)))


def test_the_command_line_defaults_are_the_dataclass_defaults():
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args([])
    assert {f.name for f in dataclasses.fields(EvalConfig)} == set(vars(ns))  # one field per option
    assert config_from_args(ns) == EvalConfig()
    d = EvalConfig()
    assert (d.episodes, d.duration, d.seed, d.reference, d.engine, d.start_state, d.jobs) == \
        (20, 20.0, 10000, ("trot",), (), "measured", 2)
    # through the whole CLI: its own keys (--verbose, the subcommand) are not eval options
    from planner_runtime.cli import build_parser

    parser, _ = build_parser(["eval"])
    assert config_from_args(parser.parse_args(["-v", "eval"])) == EvalConfig()


def test_parsed_options_are_typed_and_frozen():
    c = parse("--engine", "a=x.onnx", "--engine", "y.onnx", "--friction", "0.4", "0.5", "--latency", "40",
              "--command", "-0.5", "0", "0.2", "--reference", "trot", "ppo", "--policy", "random")
    assert c.engine == ("a=x.onnx", "y.onnx") and c.friction == (0.4, 0.5) and c.latency == (40.0,)
    assert c.command == (-0.5, 0.0, 0.2) and c.reference == ("trot", "ppo") and c.policy == ("random",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.episodes = 3  # type: ignore[misc]


def test_an_unknown_key_is_refused_with_the_close_match():
    with pytest.raises(ConfigError, match=r"unknown key 'episdoes' \(did you mean 'episodes'\?\)"):
        from_mapping(EvalConfig, {"episdoes": 3}, "eval.json")
    with pytest.raises(ConfigError, match=r"matrix cell: unknown key 'mas_delta' \(did you mean 'mass_delta'\?\)"):
        with_changes(EvalConfig(), {"mas_delta": (3.0, 3.0)}, "matrix cell")
    with pytest.raises(ConfigError, match=r"'friction' must have 2 entries"):
        with_changes(EvalConfig(), {"friction": (0.4,)}, "matrix cell")
    with pytest.raises(ConfigError, match=r"'reference\[0\]' must be one of \['trot', 'ppo'\]"):
        from_mapping(EvalConfig, {"reference": ["walk"]}, "eval.json")


def test_to_argv_parses_back_to_the_config():
    c = with_changes(EvalConfig(), {"engine": ("a=x.onnx", "b.onnx"), "no_expert": True, "model": "menagerie",
                                    "command": (-0.5, 0.0, 0.25), "friction": (0.4, 0.5), "latency": (20.0, 40.0),
                                    "merge": "blend", "replan_every": 1, "duration": 6.5, "json": True,
                                    "obs_latency": 12.5, "condition": (1.0, -2.0)}, "test")
    argv = to_argv(c)
    assert argv[:4] == ["--engine", "a=x.onnx", "--engine", "b.onnx"] and "--no-expert" in argv
    assert "--episodes" not in argv  # defaults are left out
    assert parse(*argv) == c
    assert to_argv(EvalConfig()) == []
    with pytest.raises(ValueError, match="threads"):
        to_argv(dataclasses.replace(EvalConfig(), threads=None))  # type: ignore[arg-type]


def test_a_matrix_cell_is_the_forwarded_options_plus_the_condition():
    run = parse("--matrix", "out", "--engine", "a=x.onnx", "--reference", "trot", "ppo", "--episodes", "3",
                "--duration", "6", "--seed", "7", "--jobs", "1")
    cell = eval_matrix.cell_config(eval_matrix.cell_base(run, eval_matrix.FORWARDED, "matrix"),
                                   "menagerie", "friction 0.4-0.5")
    assert cell == EvalConfig(engine=("a=x.onnx",), reference=("trot", "ppo"), episodes=3, duration=6.0, seed=7,
                              model="menagerie", friction=(0.4, 0.5), json=True, no_progress=True)
    # the cell runs the command line the matrix always ran for it
    cmd = eval_matrix.cell_command(cell)
    assert cmd[1:4] == ["-m", "planner_runtime.cli", "eval"]
    before = ["--model", "menagerie", "--friction", "0.4", "0.5", "--episodes", "3", "--duration", "6.0",
              "--seed", "7", "--no-progress", "--json", "--reference", "trot", "ppo", "--engine", "a=x.onnx"]
    assert parse(*cmd[4:]) == parse(*before)
    lag = eval_matrix.cell_config(eval_matrix.cell_base(run, eval_matrix.FORWARDED, "matrix"),
                                  "project", "actuator lag 15 ms")
    assert lag.actuator_lag == 15.0 and lag.model == "project" and lag.friction is None
    # the replan schedule is the whole run's (e.g. --replan-every 4, the schedule before
    # continuous replanning); the sweep sets it per rule and refuses it
    four = parse("--matrix", "out", "--replan-every", "4")
    assert eval_matrix.cell_config(eval_matrix.cell_base(four, eval_matrix.FORWARDED, "matrix"),
                                   "project", "nominal").replan_every == 4
    with pytest.raises(ConfigError, match="--replan-every would not reach"):
        latency_sweep.sweep_base(parse("--latency-sweep", "out", "--replan-every", "4"))


def test_a_latency_sweep_cell_is_the_first_engine_at_the_latency_under_the_rule():
    run = parse("--latency-sweep", "out", "--engine", "a=x.onnx", "--engine", "b=y.onnx", "--model", "menagerie",
                "--randomize", "--episodes", "2", "--plot", "p.png")
    cell = latency_sweep.cell_config(latency_sweep.sweep_base(run), 40, "forecast")
    assert cell == EvalConfig(engine=("a=x.onnx",), no_expert=True, model="menagerie", randomize=True, episodes=2,
                              latency=(40.0,), merge="aligned", start_state="forecast", replan_every=1,
                              json=True, no_progress=True)
    before = ["--no-expert", "--latency", "40", "--merge", "aligned", "--start-state", "forecast",
              "--replan-every", "1", "--model", "menagerie", "--episodes", "2", "--duration", "20.0",
              "--seed", "10000", "--no-progress", "--json", "--randomize", "--engine", "a=x.onnx"]
    assert parse(*eval_matrix.cell_command(cell)[4:]) == parse(*before)
    # the cells run the engine alone: a --reference the run was given is refused, not dropped
    with pytest.raises(ConfigError, match="--reference ppo would not reach them"):
        latency_sweep.sweep_base(parse("--latency-sweep", "out", "--engine", "a=x.onnx", "--reference", "ppo"))


def test_a_typo_in_a_cell_override_stops_the_run_before_any_cell(monkeypatch, tmp_path, capsys):
    def no_cells(*a, **k):
        raise AssertionError("no cell may run")

    monkeypatch.setattr(eval_matrix, "run_cells", no_cells)
    monkeypatch.setitem(eval_matrix.CONDITIONS, "slippery", {"fricton": (0.1, 0.2)})
    run = parse("--matrix", str(tmp_path), "--matrix-conditions", "slippery")
    assert eval_matrix.run_matrix(run) == 2
    err = capsys.readouterr().err
    assert "unknown key 'fricton'" in err and "did you mean 'friction'" in err and "'slippery'" in err
    monkeypatch.setattr(latency_sweep, "run_cells", no_cells)
    monkeypatch.setitem(latency_sweep.RULES, "fast", {"merge": "hold", "replan_evry": 1})
    run = parse("--latency-sweep", str(tmp_path), "--sweep-rules", "fast", "--sweep-latencies", "20")
    assert latency_sweep.run_sweep(run) == 2
    assert "did you mean 'replan_every'" in capsys.readouterr().err


def test_matrix_and_sweep_refuse_options_their_cells_would_not_apply():
    from planner_runtime.config import ConfigError
    from sim.eval_matrix import FORWARDED, cell_base
    from sim.latency_sweep import sweep_base

    cfg = EvalConfig(matrix="out", obs_latency=40.0, chunk=2)
    with pytest.raises(ConfigError, match=r"--obs-latency, --chunk would not reach the cells"):
        cell_base(cfg, FORWARDED, "matrix")
    ok = EvalConfig(matrix="out", episodes=3, jobs=1, json=True)
    assert cell_base(ok, FORWARDED, "matrix").episodes == 3
    sweep = EvalConfig(latency_sweep="out", engine=("a=x.onnx", "b=y.onnx"), model="menagerie")
    assert sweep_base(sweep).engine == ("a=x.onnx",) and sweep_base(sweep).model == "menagerie"
    with pytest.raises(ConfigError, match="--pushes would not reach"):
        sweep_base(EvalConfig(latency_sweep="out", pushes=True))


@pytest.mark.parametrize("argv, message", [
    (["--record", "out.h5", "--policy", "random"], "--policy applies only with --env ID"),
    (["--temperature", "0.5"], "--temperature applies only with --env ID"),
    (["--env", "NoSuchEnv-v0", "--randomize", "--latency", "40"], "--randomize, --latency do not apply to a Gymnasium"),
    # --no-expert drops every reference policy: with an explicit --reference it would silently run none
    (["--no-expert", "--reference", "ppo"], "--no-expert skips every reference policy, so --reference ppo"),
])
def test_options_the_evaluation_would_not_read_are_refused(argv, message, capsys):
    from planner_runtime.cli import main

    assert main(["eval", "--episodes", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_default_engine_recipe_records_its_own_episodes_with_eval_options_that_apply():
    """export/default_engine.py's recording stage is an eval command line whose every option
    the Go2 evaluation reads (--record among them since it records engine episodes)."""
    from export import default_engine as de
    from sim.eval_config import unused_options

    argv = [*de.RECORD[1:], "--engine", "base=go2_base.onnx", "--record", "onpolicy.h5"]
    c = parse(*argv)
    assert (c.latency, c.seed, c.episodes, c.no_expert, c.record) == ((40.0, 80.0), 50000, 40, True, "onpolicy.h5")
    assert c.seed != EvalConfig().seed  # episodes eval never scores
    assert unused_options(c) == []
    # both kinds of evaluation read --record (a Gymnasium one records its reference policy)
    assert unused_options(parse("--env", "Pendulum-v1", "--latency", "40", "--record", "x.h5")) == ["latency"]


def test_a_rule_shares_its_zero_latency_cell_only_with_a_rule_of_the_same_replan_interval():
    from planner_runtime.chunking import ChunkConfig

    def interval(rule: str) -> int:
        r = latency_sweep.RULES[rule]
        return ChunkConfig(merge=r["merge"], start_state=r.get("start_state", "measured"),
                           replan_every=r.get("replan_every")).validate().interval()

    assert latency_sweep.SAME_AT_ZERO
    for rule, twin in latency_sweep.SAME_AT_ZERO.items():
        assert interval(rule) == interval(twin), (rule, twin)
    assert interval("inpaint") == 1 and interval("hold") == ChunkConfig().execute


def test_run_cells_keeps_each_finished_cell_on_disk(tmp_path):
    """A matrix or sweep stopped part way keeps the cells that finished: each report is
    written as soon as its subprocess ends; a failing cell keeps its error."""
    import sys

    def command(cell):
        if cell[1] == "bad":
            return [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
        return [sys.executable, "-c", f"import json; print(json.dumps({{'results': {{'x': {{'falls': {len(cell[1])}}}}}}}))"]

    cells = [("project", "+3 kg"), ("menagerie", "bad")]
    res = eval_matrix.run_cells(cells, command, 2, "t", lambda c: f"{c[0]} / {c[1]}", keep=tmp_path / "cells")
    assert res[cells[0]] == {"results": {"x": {"falls": 5}}} and "boom" in res[cells[1]]["error"]
    kept = {p.name: json.loads(p.read_text()) for p in (tmp_path / "cells").iterdir()}
    assert set(kept) == {"project_+3_kg.json", "menagerie_bad.json"}
    assert kept["project_+3_kg.json"] == {"cell": ["project", "+3 kg"], "results": {"x": {"falls": 5}}}
    assert "boom" in kept["menagerie_bad.json"]["error"]


def test_matrix_goal_is_undetermined_without_a_ppo_reference():
    """A matrix run without ``--reference ppo`` cannot take the tracking ratio: a cell with 0
    falls and no episode over the budget is undetermined, not missed (it said "met in 0 of
    18" before); a fall or an episode over the budget is a miss with or without PPO."""
    def cell(engine, ppo=None):
        res = {"e": {"falls": 0, "episodes_over_budget": 0, "tracking_rmse_xy": 0.1, **engine}}
        if ppo is not None:
            res["ppo"] = {"tracking_rmse_xy": ppo}
        return {"results": res}

    v = eval_matrix.verdict
    assert v(cell({}, ppo=0.1), "e")["met"] is True
    assert v(cell({}, ppo=0.07), "e")["met"] is False  # 1.43x
    assert v(cell({}), "e")["met"] is None
    assert v(cell({"falls": 1}), "e")["met"] is False
    assert v(cell({"episodes_over_budget": 2}), "e")["met"] is False
    g = eval_matrix.goal([v(cell({}), "e"), v(cell({"falls": 1}), "e"), v(cell({}, ppo=0.1), "e")], "e")
    assert (g["cells"], g["cells_met"], g["cells_undetermined"], g["all_met"]) == (3, 1, 1, False)
    line = eval_matrix.goal_line(g)
    assert line.startswith("goal for e: met in 1 of 3 cells; undetermined in 1") and "--reference ppo" in line
    full = eval_matrix.goal([v(cell({}, ppo=0.1), "e")], "e")
    assert full["all_met"] is True and eval_matrix.goal_line(full) == "goal for e: met in 1 of 1 cells"


@pytest.mark.parametrize("bad", ["missing", "generic"])
def test_a_bad_engine_stops_eval_before_the_reference_episodes(bad, tmp_path, monkeypatch, capsys):
    """Every --engine is opened and checked first: a missing file, or an engine the Go2
    controller cannot run, is reported before the reference policies spend their episodes
    (which an error at the engine's turn would throw away)."""
    from planner_runtime.cli import main
    from sim import evaluate

    ran: list[int] = []
    monkeypatch.setattr(evaluate, "run_expert_episode", lambda i, cfg, which="trot": ran.append(i))
    if bad == "missing":
        path = tmp_path / "nope.onnx"
        why = "nope.onnx"
    else:  # a real engine for another system: 5 states, 2 actions (not the Go2's 30 / 12)
        pytest.importorskip("torch")
        from tests.export_onnx.conftest import write_checkpoints

        ck = write_checkpoints(tmp_path / "ck", 5, 2, 1, 8)
        path = tmp_path / "other.onnx"
        assert main(["export", "--checkpoints", str(ck), "--dt", "0.05", "--warm-level", "3", "-o", str(path)]) == 0
        why = "other.onnx"
    capsys.readouterr()
    rc = main(["eval", "--reference", "ppo", "--episodes", "2", "--duration", "1",
               "--engine", f"good={_default_engine()}", "--engine", f"bad={path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: engine bad" in err and why in err
    assert ran == []  # no reference episode was run


def _default_engine() -> str:
    from planner_runtime.engines import default_engine_path

    return str(default_engine_path())
