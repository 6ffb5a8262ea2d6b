"""`planner-runtime train --method dadp_f|dadp_i|dmemm` -> checkpoints -> the sampler registry
builds the fused and step graphs from them (what `planner-runtime export` uses)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export import cli_train
from export.sampling.registry import build_sampler

torch.set_num_threads(1)

TINY_ARGS = ["--steps", "20", "--no-progress", "--json", "--set", "horizon=8",
             "--set", "batch_size=32", "--set", "val_every=10", "--set", "val_batches=1",
             "--set", 'model={"dim": 8, "mults": [1, 2], "hidden": [32, 32]}']
COMPONENTS = {"dadp_f": ["planner", "forward", "value"], "dadp_i": ["planner", "inverse", "value"],
              "dmemm": ["transition", "reward", "planner"]}


def _train(capsys, method, data, out, *extra):
    rc = cli_train.main(["--method", method, "--data", str(data), "--out", str(out),
                         *TINY_ARGS, *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("method", sorted(COMPONENTS))
def test_cli_train_then_build_sampler(lin, tmp_path, capsys, method):
    summary = _train(capsys, method, lin.path, tmp_path)
    assert [c["component"] for c in summary["components"]] == COMPONENTS[method]
    assert all(c["steps"] == 20 for c in summary["components"])  # --steps reaches every one
    for c in COMPONENTS[method]:
        assert (tmp_path / f"{c}.pt").is_file()
    knobs = {"s_J": 0.1, "lambda": 0.3} if method.startswith("dadp") else {"alpha": 1e-3, "lambda": 1.0}
    fused = build_sampler(tmp_path, method, graph="fused", **knobs)
    step = build_sampler(tmp_path, method, graph="step", **knobs)
    B, H, D = 2, 8, lin.S + lin.A
    g = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(B, lin.S, generator=g), torch.zeros(B, lin.C)
    prev, noise = torch.zeros(B, H, D), torch.randn(B, H, D, generator=g)
    with torch.no_grad():
        plan, score, best = fused(x0, cond, prev, noise, torch.tensor([3, 1, 0]), torch.tensor([2.0]))
        tau, p1 = step(x0, cond, prev, noise, torch.zeros(B, H, D), torch.tensor([3]),
                       torch.tensor([1]), torch.tensor([1]), torch.tensor([2.0]))
        _, p2 = step(x0, cond, prev, noise, tau, torch.tensor([1]), torch.tensor([0]),
                     torch.tensor([0]), torch.tensor([2.0]))
    assert plan.shape == (B, H, D) and torch.all(torch.isfinite(plan))
    torch.testing.assert_close(p2, plan, atol=1e-5, rtol=1e-5)
    assert best.dtype == torch.int64 and score.shape == (B,)
    with pytest.raises(ValueError, match="n_samples"):
        build_sampler(tmp_path, method, n_samples=2)


def test_dmemm_planner_from_saved_environment_models(lin, tmp_path, capsys):
    """Training only the planner takes T_hat and R_hat from aux_dir's checkpoints."""
    first = tmp_path / "full"
    _train(capsys, "dmemm", lin.path, first, "--components", "transition,reward")
    second = tmp_path / "planner"
    summary = _train(capsys, "dmemm", lin.path, second, "--components", "planner",
                     "--set", f"aux_dir={first}", "--set", "lambda_tr=0.2")
    assert [c["component"] for c in summary["components"]] == ["planner"]
    assert json.loads((second / "config.json").read_text())["lambda_tr"] == 0.2
    rows = [json.loads(r) for r in (second / "planner.metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["l_tr"]) for r in rows)
    # without them: a clear error, exit code 2
    rc = cli_train.main(["--method", "dmemm", "--data", str(lin.path), "--out",
                         str(tmp_path / "bad"), *TINY_ARGS, "--components", "planner"])
    assert rc == 2 and "transition" in capsys.readouterr().err
