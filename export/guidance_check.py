"""Measure what DADP-F/I and DMEMM guidance and DyDiff do on a system with known dynamics.

    python -m export.guidance_check [--steps 1500] [--out DIR] [--json]

Writes the planar linear system's dataset (``export.synthetic.write_planar_dataset``),
trains with the project's trainers (``train_method``): the planner + forward + value models
(dadp_f), the inverse model (dadp_i), the transition and reward models (dmemm) and
MPDiffuser's dynamics diffusion model, then samples 64 cold-start plans from the same noise
with each sampler and reports the true
dynamics error of the plans (mean over rows of ||x_{t+1} - A x_t - B u_t||^2, raw units), the
true inverse error (||u_t - B^-1 (x_{t+1} - A x_t)||^2), and each sampler's own model energy.
All guided samplers share the one planner, so the differences are the guidance alone.
DyDiff: 64-step rollouts of the dataset's feedback policy (without its exploration noise);
state error against the true closed-loop rollout for the one-step model alone and after each
of DyDiff's rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _train(method: str, data: Path, out: Path, steps: int, components: str | None) -> None:
    from export.train.registry import resolve_config, train_method

    cfg = resolve_config(method, {
        "horizon": 8, "steps": steps, "batch_size": 64, "normalizer": "minmax",
        "val_every": steps, "ckpt_every": steps, "ema_start": steps // 2, "lr": 1e-3,
        "model": {"dim": 16, "mults": [1, 2], "hidden": [64, 64]}, "components": components})
    train_method(method, cfg, data, out, progress=False)


def run_check(steps: int, out: Path, n_plans: int = 64, seed: int = 1) -> dict[str, Any]:
    import torch

    from export import synthetic
    from export.dydiff import DyDiff
    from export.sampling.registry import build_sampler, load_components
    from export.train.checkpoint import build_model, normalizers
    from planner_runtime.dataset import load_dataset
    from planner_runtime.schedule import ddim_levels

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lsys = synthetic.planar_system()
    data = synthetic.write_planar_dataset(out / "linear.h5")
    _train("dadp_f", data, out, steps, None)
    _train("dadp_i", data, out, steps, "inverse")
    _train("dmemm", data, out, steps, "transition,reward")
    _train("mpdiffuser", data, out, steps, "dynamics")
    train_s = time.perf_counter() - t0

    ds = load_dataset(data, load_raw=False)
    rng = np.random.default_rng(seed)
    x0 = ds.observations[rng.integers(0, len(ds), n_plans)].astype(np.float32)
    B, S, A, H, K = n_plans, 2, 2, 8, 10
    g = torch.Generator().manual_seed(seed)
    inp = dict(x0=torch.from_numpy(x0), cond=torch.zeros(B, 1), prev_plan=torch.zeros(B, H, S + A),
               noise=torch.randn(B, H, S + A, generator=g),
               levels=torch.from_numpy(ddim_levels(K, K)), cfg_w=torch.tensor([1.0]))
    comp = {c: out / f"{c}.pt" for c in ("planner", "forward", "value", "inverse", "transition",
                                         "reward")}
    runs: dict[str, tuple[str, dict[str, Any]]] = {
        "unguided": ("dadp_f", {"lambda": 0.0}),
        "dadp_f var-scaled lambda=0.25": ("dadp_f", {"lambda": 0.25}),
        "dadp_f unit-step lambda=0.25": ("dadp_f", {"lambda": 0.25, "var_scaling": False}),
        "dadp_f var-scaled lambda=0.5": ("dadp_f", {"lambda": 0.5}),
        "unguided, inverse-model energy": ("dadp_i", {"lambda": 0.0}),
        "dadp_i var-scaled lambda=0.25": ("dadp_i", {"lambda": 0.25}),
        "dadp_i unit-step lambda=0.25": ("dadp_i", {"lambda": 0.25, "var_scaling": False}),
        "unguided, transition log-likelihood": ("dmemm", {"alpha": 0.0}),
        "dmemm alpha=1e-4 lambda=1": ("dmemm", {"alpha": 1e-4, "lambda": 1.0}),
        "dmemm alpha=1e-3 lambda=1": ("dmemm", {"alpha": 1e-3, "lambda": 1.0}),
        "dmemm alpha=1e-2 lambda=1": ("dmemm", {"alpha": 1e-2, "lambda": 1.0}),
    }
    results: dict[str, Any] = {}
    for name, (method, knobs) in runs.items():
        s = build_sampler(comp, method, graph="sampler", **knobs)
        with torch.no_grad():
            plan = s(**inp)[0].numpy()
        row = {"forward_err": float(lsys.forward_error(x0, plan).mean()),
               "inverse_err": float(lsys.inverse_error(x0, plan).mean())}
        if hasattr(s, "dynamics_error"):
            row["model_energy"] = float(s.dynamics_error(inp["x0"], torch.from_numpy(plan)).mean())
        else:  # DMEMM: the transition model's mean log-likelihood per plan
            with torch.no_grad():
                row["transition_logp"] = float(s.T.logprob_grad(
                    s.norm_x0(inp["x0"]), s.norm_traj(torch.from_numpy(plan)))[0].mean())
        results[name] = row

    # DyDiff: the dataset's feedback policy (without its exploration noise), 64 steps
    cks = load_components({"dynamics": out / "dynamics.pt", "forward": out / "forward.pt"})
    dd = DyDiff(build_model(cks["dynamics"]), build_model(cks["forward"]),
                normalizers(cks["dynamics"]), S, A, 1, H, K)
    L, n = 64, 16

    def policy(x: np.ndarray) -> np.ndarray:
        return (-x @ synthetic.PLANAR_POLICY_GAIN.T).astype(np.float32)

    starts = x0[:n]
    truth = np.zeros((n, L + 1, S), np.float32)
    truth[:, 0] = starts
    for t in range(L):
        truth[:, t + 1] = lsys.next_state(truth[:, t], policy(truth[:, t]))
    res = dd.rollout(starts, policy, np.zeros(1, np.float32), length=L, rounds=2, avg_weight=0.5)
    dydiff = {f"round {i}" + (" (one-step model)" if i == 0 else ""):
              float(np.mean(np.sum((st - truth) ** 2, -1))) for i, st in enumerate(res.round_states)}
    return {"train_steps": steps, "train_s": train_s, "n_plans": n_plans, "plans": results,
            "dydiff_state_mse_64_steps": dydiff, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.guidance_check", description=__doc__)
    p.add_argument("--steps", type=int, default=1500, help="training steps per component")
    p.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        r = run_check(a.steps, out)
    if a.json:
        print(json.dumps(r))
        return 0
    print(f"trained {r['train_steps']} steps per component in {r['train_s']:.0f} s")
    print(f"{'sampler':34s} {'fwd err':>9s} {'inv err':>9s} {'model E':>9s}")
    for k, v in r["plans"].items():
        extra = (f"{v['model_energy']:9.4f}" if "model_energy" in v
                 else f"log T_hat {v['transition_logp']:.1f}")
        print(f"{k:34s} {v['forward_err']:9.4f} {v['inverse_err']:9.4f} {extra}")
    for k, v in r["dydiff_state_mse_64_steps"].items():
        print(f"DyDiff {k}: state MSE vs true rollout {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
