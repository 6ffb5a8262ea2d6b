"""The training loop and MPDiffuser's trainers: losses fall, CFG dropout, EMA, resume, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from export.cli_train import main as train_main
from export.sampling.base import FusedSampler, StepSampler
from export.sampling.registry import build_sampler
from export.train.checkpoint import CheckpointError, build_model, load_checkpoint
from export.train.config import apply_overrides, deep_merge
from export.train.loop import ema_update
from export.train.mpdiffuser import PlannerTask
from export.train.registry import make_data, resolve_config, train_method
from planner_runtime.dataset import load_dataset
from planner_runtime.server import free_tcp_port

from .conftest import TINY


def cfg(**over):
    return resolve_config("mpdiffuser", deep_merge(TINY, over))


def rows(path):
    return [json.loads(line) for line in open(path)]


def test_losses_decrease_for_every_component(linear_data, tmp_path):
    c = cfg(steps=80, lr=1e-3, ranker={"steps": 80}, forecaster={"steps": 80, "batch_size": 64})
    summary = train_method("mpdiffuser", c, linear_data, tmp_path, progress=False)
    assert [r["component"] for r in summary["components"]] == ["planner", "dynamics", "ranker", "forecaster"]
    for comp in ("planner", "dynamics", "ranker", "forecaster"):
        hist = rows(tmp_path / f"{comp}.metrics.jsonl")
        assert hist[0]["step"] == 10 and hist[-1]["step"] == 80
        assert hist[-1]["loss"] < 0.8 * hist[0]["loss"], (comp, hist[0]["loss"], hist[-1]["loss"])
        assert any(r.get("val_loss") is not None for r in hist)
        assert (tmp_path / f"{comp}_loss.png").stat().st_size > 1000
        ck = load_checkpoint(tmp_path / f"{comp}.pt")
        assert ck["component"] == comp and ck["step"] == 80 and ck["dims"] == {"S": 4, "A": 2, "C": 2, "H": 8}
        assert ck["dataset"]["sha256"] == load_dataset(linear_data).sha256
        build_model(ck)  # rebuilds from plain-typed config + EMA weights
    # the exporter's entry point: checkpoints directory -> graph modules
    fused = build_sampler(tmp_path, "mpdiffuser", graph="fused", n_samples=2, budget=5.0)
    assert isinstance(fused, FusedSampler) and fused.sampler.knobs()["budget"] == 5.0
    x0, y = torch.zeros(2, 4), torch.zeros(2, 2)
    with torch.no_grad():
        plan, score, best = fused(x0, y, torch.zeros(2, 8, 6), torch.randn(2, 8, 6),
                                  torch.arange(10, -1, -1), torch.tensor([2.0]))
    assert plan.shape == (2, 8, 6) and score.shape == (2,) and 0 <= int(best) < 2
    assert torch.isfinite(plan).all()
    assert isinstance(build_sampler(tmp_path / "planner.pt", "planner", graph="step"), StepSampler)
    with pytest.raises(CheckpointError, match="missing checkpoint component"):
        build_sampler(tmp_path / "planner.pt", "mpdiffuser")
    with pytest.raises(ValueError, match="unknown method"):
        build_sampler(tmp_path, "nope")


def test_cfg_dropout_rate_and_x0_never_dropped(linear_data):
    c = cfg(cond_dropout=0.25)
    data = make_data(c, linear_data)
    task = PlannerTask(c, data)
    seen = {}

    class Rec(torch.nn.Module):
        def forward(self, tau, k, x0, y, y_drop):
            seen.update(x0=x0, y=y, drop=y_drop, k=k)
            return torch.zeros_like(tau)

    b = task.batch("train", 4000, np.random.default_rng(0))
    task.loss(Rec(), b, torch.Generator().manual_seed(0))
    rate = float(seen["drop"].mean())
    assert abs(rate - 0.25) < 0.03, rate
    assert set(seen["drop"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(seen["x0"], b["x0"])  # x0 always passed through, never dropped
    torch.testing.assert_close(seen["y"], b["cond"])  # y itself unchanged; the mask drops it
    assert seen["k"].min() >= 1 and seen["k"].max() <= c.num_levels
    # first-action weighting: row 0's action channels weigh x10
    w = task.loss_weights()
    assert float(w[0, data.S:].min()) == 10.0 and float(w[0, :data.S].max()) == 1.0
    assert float(w[1:].max()) == 1.0


def test_ema_formula():
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    e0 = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.005)
    for pe, p0, pm in zip(ema.parameters(), e0, model.parameters(), strict=True):
        torch.testing.assert_close(pe, 0.995 * p0 + 0.005 * pm, atol=1e-7, rtol=0)


def test_resume_continues_identically_and_ema_schedule(linear_data, tmp_path):
    base = dict(steps=40, lr=1e-3, ema_start=0, ema_every=10, ema_tau=0.1,
                ckpt_every=10, components=["planner"])
    train_method("mpdiffuser", cfg(**base), linear_data, tmp_path / "a", progress=False)
    train_method("mpdiffuser", cfg(**{**base, "steps": 30}), linear_data, tmp_path / "b", progress=False)
    # the EMA after 30 steps is built from the weights at 10, 20, 30 (one update each)
    ck30 = load_checkpoint(tmp_path / "b" / "planner.pt")
    assert ck30["step"] == 30
    s2 = train_method("mpdiffuser", cfg(**base), linear_data, tmp_path / "b", resume=True,
                      progress=False)
    assert s2["components"][0]["resumed_from"] == 30
    a, b = load_checkpoint(tmp_path / "a" / "planner.pt"), load_checkpoint(tmp_path / "b" / "planner.pt")
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    # EMA at 40 = ema30 + tau * (w40 - ema30)
    for name, e30 in ck30["ema"].items():
        if e30.is_floating_point():
            torch.testing.assert_close(b["ema"][name], e30 + 0.1 * (b["model"][name] - e30),
                                       atol=1e-6, rtol=1e-5)


def test_cli_json_and_errors(linear_data, tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(deep_merge(TINY, {"ranker": {"steps": 10}, "forecaster": {"steps": 10}})))
    rc = train_main(["--data", str(linear_data), "--out", str(tmp_path / "o"), "--config", str(conf),
                     "--steps", "10", "--set", "model.dim=8", "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "mpdiffuser"
    assert [c["component"] for c in out["components"]] == ["planner", "dynamics", "ranker", "forecaster"]
    assert load_checkpoint(tmp_path / "o" / "planner.pt")["model_config"]["dim"] == 8
    assert train_main(["--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x")]) == 2
    assert "dataset file not found" in capsys.readouterr().err
    assert train_main(["--data", str(linear_data), "--out", str(tmp_path / "x"), "--set", "bad"]) == 2
    assert train_main(["--data", str(linear_data), "--out", str(tmp_path / "x"), "--method", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        load_checkpoint(tmp_path / "junk.pt")
    assert apply_overrides({}, ["a.b=3", "c=[1,2]", "d=word"]) == {"a": {"b": 3}, "c": [1, 2], "d": "word"}


def test_ddp_two_processes_gloo(linear_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): ranks end identical; loss comparable to 1 process."""
    port = free_tcp_port()
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(deep_merge(TINY, {"lr": 1e-3, "batch_size": 32, "val_batches": 4})))
    common = ["-m", "export.cli_train", "--data", str(linear_data), "--config", str(conf),
              "--steps", "60", "--components", "planner", "--no-progress", "--json", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port),
                          *common, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=240, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    s2 = json.loads(two.stdout.strip().splitlines()[-1])
    c2 = s2["components"][0]
    assert s2["world_size"] == 2 and c2["world_size"] == 2
    assert c2["ddp_max_weight_diff"] == 0.0  # both ranks hold identical weights
    s1 = train_method("mpdiffuser", cfg(lr=1e-3, batch_size=32, val_batches=4, steps=60,
                                         components=["planner"]), linear_data, tmp_path / "one",
                      progress=False)
    c1 = s1["components"][0]
    assert c1["ddp_max_weight_diff"] is None
    assert abs(c2["val_loss"] - c1["val_loss"]) / c1["val_loss"] < 0.25, (c1["val_loss"], c2["val_loss"])
    assert load_checkpoint(tmp_path / "ddp" / "planner.pt")["world_size"] == 2


def test_components_must_agree():
    from export.train.checkpoint import check_compatible

    base = {"dims": {"S": 4, "A": 2, "C": 2, "H": 8}, "normalizers": {"traj": {"kind": "std"}},
            "schedule": {"num_levels": 10, "kind": "cosine"}, "_path": "a.pt"}
    check_compatible({"planner": base, "dynamics": dict(base)})
    with pytest.raises(CheckpointError, match="dims of 'dynamics'"):
        check_compatible({"planner": base, "dynamics": {**base, "dims": {**base["dims"], "H": 16}}})
    with pytest.raises(CheckpointError, match="schedule"):
        check_compatible({"planner": base,
                          "dynamics": {**base, "schedule": {"num_levels": 20, "kind": "cosine"}}})


def test_finetune_dynamics_from_checkpoint_keeps_normalizers(linear_data, tmp_path, capsys):
    """--init-from: start from a checkpoint's weights and normalizers (fresh optimizer), so a
    dynamics model fine-tuned on data from a changed system still composes with the planner."""
    from export.synthetic import write_linear_dataset

    base = dict(lr=1e-3, ema_start=0, ema_every=1, ema_tau=1.0, ckpt_every=10)
    train_method("mpdiffuser", cfg(**base, steps=20, components=["planner", "dynamics"]),
                 linear_data, tmp_path / "a", progress=False)
    changed = tmp_path / "changed.h5"
    write_linear_dataset(changed, n_episodes=20, T=40, noise_std=1.5, seed=7)
    a_dyn = load_checkpoint(tmp_path / "a" / "dynamics.pt")
    # lr 0: the fine-tuned weights are exactly the initial ones (the checkpoint was loaded)
    train_method("mpdiffuser", cfg(**{**base, "lr": 0.0}, steps=5, components=["dynamics"]),
                 changed, tmp_path / "z", progress=False, init_from=tmp_path / "a")
    z = load_checkpoint(tmp_path / "z" / "dynamics.pt")
    for name, t in a_dyn["ema"].items():
        assert torch.equal(t, z["model"][name]), name
    # a real fine-tune moves the weights, keeps the normalizers, records where it started
    s = train_method("mpdiffuser", cfg(**base, steps=20, components=["dynamics"]), changed,
                     tmp_path / "b", progress=False, init_from=tmp_path / "a")
    b = load_checkpoint(tmp_path / "b" / "dynamics.pt")
    assert s["components"][0]["resumed_from"] == 0 and b["step"] == 20
    assert b["normalizers"] == a_dyn["normalizers"]
    assert b["config"]["init_from"]["step"] == 20
    assert b["dataset"]["sha256"] != a_dyn["dataset"]["sha256"]
    assert any(not torch.equal(t, b["model"][n]) for n, t in a_dyn["ema"].items())
    build_sampler([tmp_path / "a" / "planner.pt", tmp_path / "b" / "dynamics.pt"], "mpdiffuser")
    # trained from scratch on the changed data, the normalizers differ: composing is refused
    train_method("mpdiffuser", cfg(**base, steps=5, components=["dynamics"]), changed,
                 tmp_path / "c", progress=False)
    with pytest.raises(CheckpointError, match="normalizers"):
        build_sampler([tmp_path / "a" / "planner.pt", tmp_path / "c" / "dynamics.pt"], "mpdiffuser")
    # the checkpoint, not the config, decides what the network predicts and its schedule
    assert b["prediction"] == a_dyn["prediction"] == "x0"
    train_method("mpdiffuser", cfg(**base, steps=5, components=["dynamics"], prediction="eps"),
                 linear_data, tmp_path / "eps", progress=False)
    train_method("mpdiffuser", cfg(**base, steps=5, components=["dynamics"]), changed,
                 tmp_path / "eps_ft", progress=False, init_from=tmp_path / "eps")
    assert load_checkpoint(tmp_path / "eps_ft" / "dynamics.pt")["prediction"] == "eps"
    # clear errors: nothing to start from, or both --init-from and --resume
    assert train_main(["--data", str(changed), "--out", str(tmp_path / "e"), "--components", "ranker",
                       "--init-from", str(tmp_path / "a"), "--steps", "2"]) == 2
    assert "no ranker.pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exclude"):
        train_method("mpdiffuser", cfg(**base, steps=2, components=["dynamics"]), changed,
                     tmp_path / "b", resume=True, progress=False, init_from=tmp_path / "a")


def test_forecaster_learns_the_state_change_over_committed_actions(linear_data, tmp_path):
    """The real-time chunking forecaster on the double integrator: rolled over the recorded
    actions from x_0, its 4-step forecast beats assuming the state stands still, and an
    engine built with it knows it (knob prefix = forecast)."""
    import numpy as np

    from export.data import make_windows

    c = cfg(steps=400, lr=3e-3, components="forecaster", forecaster={"batch_size": 128})
    train_method("mpdiffuser", c, linear_data, tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "forecaster.pt")
    net = build_model(ck)
    data = make_windows(load_dataset(linear_data), 8, normalizer=c.normalizer, seed=0)
    b = data.val.sample(256, np.random.default_rng(1))
    x, traj = torch.as_tensor(b["x0"]), torch.as_tensor(b["traj"])
    ok = torch.as_tensor(b["valid"][:, 3] > 0)
    with torch.no_grad():
        for k in range(4):
            x = net(x, traj[:, k, data.S:])
    err = ((x - traj[:, 3, : data.S]) ** 2).mean(-1)[ok].mean()
    stale = ((torch.as_tensor(b["x0"]) - traj[:, 3, : data.S]) ** 2).mean(-1)[ok].mean()
    assert float(err) < 0.3 * float(stale), (float(err), float(stale))


def test_forecaster_fine_tunes_on_data_with_another_spread(linear_data, tmp_path):
    """--init-from for the forecaster: its output scale (step_scale, part of the architecture)
    comes from the checkpoint, not from the new data's one-step spread, so the run starts from
    the trained weights and composes with the planner as before."""
    from export.synthetic import write_linear_dataset

    base = dict(lr=1e-3, ema_start=0, ema_every=1, ema_tau=1.0, ckpt_every=10,
                forecaster={"steps": 10, "batch_size": 64})
    train_method("mpdiffuser", cfg(**base, steps=10, components=["planner", "forecaster"]),
                 linear_data, tmp_path / "a", progress=False)
    changed = tmp_path / "changed.h5"
    write_linear_dataset(changed, n_episodes=20, T=40, noise_std=1.5, seed=7)  # other spread
    a = load_checkpoint(tmp_path / "a" / "forecaster.pt")
    train_method("mpdiffuser", cfg(**base, steps=10, components=["forecaster"]), changed,
                 tmp_path / "b", progress=False, init_from=tmp_path / "a")
    b = load_checkpoint(tmp_path / "b" / "forecaster.pt")
    assert b["model_config"]["step_scale"] == a["model_config"]["step_scale"]
    assert b["normalizers"] == a["normalizers"] and b["config"]["init_from"]["step"] == 10
    assert any(not torch.equal(t, b["model"][n]) for n, t in a["ema"].items())  # it trained
    # from scratch on the changed data the scale would differ (what used to refuse the fine-tune)
    train_method("mpdiffuser", cfg(**base, steps=2, components=["forecaster"]), changed,
                 tmp_path / "c", progress=False)
    assert load_checkpoint(tmp_path / "c" / "forecaster.pt")["model_config"]["step_scale"] != \
        a["model_config"]["step_scale"]
    build_sampler([tmp_path / "a" / "planner.pt", tmp_path / "b" / "forecaster.pt"], "planner")


def test_history_with_state_keeps_the_history_through_cfg_dropout(linear_data):
    """history_with_state: the history columns (prev_action, last in cond_extras) reach the
    network with the null token on, the command columns do not; off, neither does."""
    on = PlannerTask(cfg(cond_extras=["prev_action"], history_with_state=True),
                     make_data(cfg(cond_extras=["prev_action"]), linear_data))
    S, A, C = on.data.S, on.data.A, on.data.C
    assert on.history_width() == A
    torch.manual_seed(0)
    net = on.build_model().eval()
    assert net.config()["y_state"] == A
    B = 5
    tau, k, x0 = torch.randn(B, 8, S + A), torch.full((B,), 3.0), torch.randn(B, S)
    y = torch.randn(B, C)
    y_cmd = y.clone()
    y_cmd[:, :C - A] += 1.0  # another command, the same history
    y_hist = y.clone()
    y_hist[:, C - A:] += 1.0  # the same command, another history
    dropped, kept = torch.ones(B), torch.zeros(B)
    with torch.no_grad():
        base = net(tau, k, x0, y, dropped)
        torch.testing.assert_close(net(tau, k, x0, y_cmd, dropped), base)  # command dropped
        assert (net(tau, k, x0, y_hist, dropped) - base).abs().max() > 1e-4  # history kept
        assert (net(tau, k, x0, y_cmd, kept) - net(tau, k, x0, y, kept)).abs().max() > 1e-4
        # the checkpoint's model config rebuilds the same network
        again = type(net)(**net.config())
        again.load_state_dict(net.state_dict())
        torch.testing.assert_close(again(tau, k, x0, y_hist, dropped), net(tau, k, x0, y_hist, dropped))

    off = PlannerTask(cfg(cond_extras=["prev_action"]), make_data(cfg(cond_extras=["prev_action"]), linear_data))
    assert off.history_width() == 0
    plain = off.build_model().eval()
    with torch.no_grad():  # the whole condition is dropped
        torch.testing.assert_close(plain(tau, k, x0, y_hist, dropped), plain(tau, k, x0, y, dropped))

    for order in (["prev_action", "return"], ["prev_action", "cost_to_go"]):
        bad = cfg(cond_extras=order, history_with_state=True)
        with pytest.raises(ValueError, match="history extras"):
            PlannerTask(bad, make_data(bad, linear_data)).build_model()
    # a target extra before the history: the history alone is embedded with the state
    ok = cfg(cond_extras=["cost_to_go", "prev_action"], history_with_state=True)
    assert PlannerTask(ok, make_data(ok, linear_data)).history_width() == A
