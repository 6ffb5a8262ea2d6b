"""Fixtures for the export / engine tests: tiny random-init samplers of every method and
their exported engines (cached per session: exporting is the slow part).

Random weights are fine for parity: the ONNX graph must reproduce the torch reference
sampler for whatever weights it has. Shapes are small (S=6, A=3, C=2, H=8) so the whole
folder runs in well under the suite's time budget on two shared cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

S, A, C, H, K, WARM = 6, 3, 2, 8, 10, 3
METHODS = ("mpdiffuser", "planner", "dadp_f", "dadp_i", "dmemm")


def _norms(seed: int = 0):
    from export.data import Normalizer, Normalizers

    rng = np.random.default_rng(seed)
    traj = rng.normal(size=(64, S + A)) * rng.uniform(0.5, 2.0, size=S + A) + rng.normal(size=S + A)
    cond = rng.normal(size=(64, C))
    return Normalizers(Normalizer.fit(traj, "std"), Normalizer.fit(cond, "std"))


def make_sampler(method: str, n_samples: int = 1, seed: int = 0, clip: float | None = 1.0):
    """A tiny random-init reference sampler of ``method`` (the real export.sampling classes).

    ``clip`` bounds x0_hat as the samplers do for [-1, 1]-normalized data. Without it a
    random-init network at a cold start (level K, sqrt(alpha_bar_K) ~ 1e-2) divides its
    unrelated eps by a tiny number and the plan reaches 1e5..1e17, where fp32 itself cannot
    hold 1e-4 absolute agreement; the unclipped path is tested from warm starts.
    """
    from export.models.guidance import (
        ForwardDynamics,
        GaussianTransition,
        InverseDynamicsVAE,
        ReturnModel,
        RewardModel,
    )
    from export.models.unet import TemporalUnet
    from export.sampling.dadp import DADPFSampler, DADPISampler
    from export.sampling.dmemm import DMEMMSampler
    from export.sampling.mpdiffuser import (
        BudgetRanker,
        MPDiffuserSampler,
        PlannerOnlySampler,
        RankerNet,
    )

    torch.manual_seed(seed)
    norms = _norms(seed)
    common = dict(norms=norms, S=S, A=A, C=C, H=H, num_levels=K, clip=clip)

    def unet(out: int):
        return TemporalUnet(H, S + A, out, S, C, dim=8, mults=(1, 2))

    ranker = None
    if n_samples > 1:
        # budget chosen inside the random ranker's cost range so both branches are plausible
        ranker = BudgetRanker(RankerNet(S, A, C, hidden=(16,)), norms, S, H, budget=0.0)
    if method == "mpdiffuser":
        s = MPDiffuserSampler(unet(S + A), unet(S), ranker=ranker, n_samples=n_samples, **common)
    elif method == "planner":
        s = PlannerOnlySampler(unet(S + A), ranker=ranker, n_samples=n_samples, **common)
    elif method == "dadp_f":
        s = DADPFSampler(unet(S + A), ForwardDynamics(S, A, hidden=(16, 16)),
                         return_model=ReturnModel(S, A, hidden=(16,)), s_J=0.5, lam=1.0,
                         guide_steps=2, stop_level=1, **common)
    elif method == "dadp_i":
        s = DADPISampler(unet(S + A), InverseDynamicsVAE(S, A, latent=4, hidden=(16,)),
                         lam=1.0, guide_steps=1, **common)
    elif method == "dmemm":
        s = DMEMMSampler(unet(S + A), RewardModel(S, A, hidden=(16,)),
                         GaussianTransition(S, A, hidden=(16,)), alpha=0.05, lam=0.5, **common)
    else:
        raise ValueError(method)
    s.eval()
    for p in s.parameters():
        p.requires_grad_(False)
    return s


def plan_inputs(B: int, seed: int = 1, cold: bool = False) -> dict[str, np.ndarray]:
    from planner_runtime.schedule import ddim_levels, warm_levels

    rng = np.random.default_rng(seed)
    return {
        "x0": rng.normal(size=(B, S)).astype(np.float32),
        "cond": rng.normal(size=(B, C)).astype(np.float32),
        "prev_plan": (np.zeros((B, H, S + A)) if cold else rng.normal(size=(B, H, S + A))).astype(np.float32),
        "noise": rng.normal(size=(B, H, S + A)).astype(np.float32),
        "levels": ddim_levels(K, WARM) if cold else warm_levels(WARM),
    }


class EngineCache:
    """Exports each (method, graph, N) once per test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[tuple, tuple[Path, object]] = {}

    def get(self, method: str, graph: str, n_samples: int = 1, clip: float | None = 1.0):
        from export.onnx_export import export_engine, generic_meta

        key = (method, graph, n_samples, clip)
        if key not in self._done:
            s = make_sampler(method, n_samples, clip=clip)
            path = self.root / f"{method}_{graph}_n{n_samples}_clip{clip}.onnx"
            export_engine(s, path, graph=graph, meta=generic_meta(S, A, C, warm_level=WARM, control_dt=0.1))
            self._done[key] = (path, s)
        return self._done[key]


@pytest.fixture(scope="session")
def engines(tmp_path_factory) -> EngineCache:
    return EngineCache(tmp_path_factory.mktemp("engines"))


@pytest.fixture
def plan_inputs_fn():
    return plan_inputs


def write_checkpoints(out: Path, S: int, A: int, C: int, H: int, K: int = 10, seed: int = 0,
                      sha: str = "ab" * 32, extra: dict | None = None, data: dict | None = None,
                      step: int = 0, config: dict | None = None, cond_rows: np.ndarray | None = None) -> Path:
    """Random-init planner + dynamics checkpoints in the trainer's format (no training).

    ``extra``: more components, name -> nn.Module with ``config()`` (e.g. DADP's models).
    ``data``: more keys of the "dataset" block (dt, robot, names: what the trainer records);
    ``step`` / ``config``: the checkpoints' step and more training-config keys (e.g. steps).
    ``cond_rows``: the condition samples [N, C] the condition normalizer is fitted on
    (default: random).
    """
    from export.data import Normalizer, Normalizers
    from export.models.unet import TemporalUnet
    from export.train.checkpoint import save_checkpoint, versions

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norms = Normalizers(Normalizer.fit(rng.normal(size=(32, S + A)), "minmax"),
                        Normalizer.fit(rng.normal(size=(32, C)) if cond_rows is None else cond_rows, "minmax"))
    nets = {comp: TemporalUnet(H, S + A, od, S, C, dim=8, mults=(1, 2))
            for comp, od in (("planner", S + A), ("dynamics", S))}
    nets.update(extra or {})
    for comp, net in nets.items():
        save_checkpoint(out / f"{comp}.pt", {
            "method": "mpdiffuser", "component": comp, "model_class": type(net).__name__,
            "model_config": net.config(), "dims": {"S": S, "A": A, "C": C, "H": H},
            "schedule": {"num_levels": K, "kind": "cosine"}, "normalizers": norms.to_dict(),
            "config": {"test": True, "component": comp, **(config or {})}, "step": step,
            "model": net.state_dict(), "ema": net.state_dict(),
            "dataset": {"path": "synthetic", "sha256": sha, **(data or {})},
            "versions": versions(),
        })
    return out


@pytest.fixture(scope="session")
def go2_step_engine(tmp_path_factory) -> Path:
    """A Go2-dimensioned step engine exported through the real CLI (`planner-runtime export`)."""
    from planner_runtime.cli import main

    d = write_checkpoints(tmp_path_factory.mktemp("ck_go2"), 30, 12, 3, 16)
    out = d / "go2.onnx"
    rc = main(["export", "--checkpoints", str(d), "--method", "mpdiffuser", "--graph", "step",
               "-o", str(out)])
    assert rc == 0
    return out


@pytest.fixture
def write_checkpoints_fn():
    return write_checkpoints
