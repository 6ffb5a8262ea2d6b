"""The typed training config: every key checked (top level, component sections, ``model``,
config files, ``--set``), the defaults and the shipped engine's stored config parse, and a
parsed config turns back into the same plain dict."""

from __future__ import annotations

import json

import pytest

from export import default_engine
from export.cli_train import main as train_main
from export.train.config import (
    DEFAULTS,
    ComponentConfig,
    TrainConfig,
    component_config,
    deep_merge,
    load_config,
    parse,
    user_config,
)
from export.train.registry import resolve_config
from planner_runtime import engine_file
from planner_runtime.config import ConfigError, from_mapping, to_dict

from .conftest import TINY


@pytest.mark.parametrize("user, key, close", [
    ({"stpes": 100}, "stpes", "steps"),
    ({"ranker": {"bacth_size": 32}}, "ranker.bacth_size", "batch_size"),
    ({"model": {"hiden": [32, 32]}}, "model.hiden", "hidden"),
    ({"forecaster": {"model": {"dimm": 8}}}, "forecaster.model.dimm", "dim"),
])
def test_unknown_keys_are_refused_with_their_name_and_the_close_match(user, key, close):
    with pytest.raises(ConfigError, match=rf"training config: unknown key '{key}' \(did you mean '{close}'\?\)"):
        resolve_config("mpdiffuser", user)


def test_unknown_key_without_a_close_match_lists_the_allowed_keys():
    with pytest.raises(ConfigError) as e:
        resolve_config("mpdiffuser", {"planner": {"zzz_unheard_of": 1}})
    msg = str(e.value)
    assert "'planner.zzz_unheard_of'" in msg and "did you mean" not in msg
    assert "allowed in 'planner': steps, batch_size" in msg


def test_values_must_have_the_field_type():
    with pytest.raises(ConfigError, match=r"'steps' must be int, got 'many'"):
        resolve_config("mpdiffuser", {"steps": "many"})
    with pytest.raises(ConfigError, match=r"'ranker.model.hidden\[1\]' must be int, got 'x'"):
        resolve_config("mpdiffuser", {"ranker": {"model": {"hidden": [8, "x"]}}})
    with pytest.raises(ConfigError, match=r"'reward_weighting' must be bool, got 1"):
        resolve_config("dmemm", {"reward_weighting": 1})
    with pytest.raises(ConfigError, match=r"'value' must be an object"):
        resolve_config("dadp_f", {"value": 3})
    # an int where a float is wanted is taken (and becomes a float)
    assert resolve_config("mpdiffuser", {"lr": 1}).lr == 1.0
    assert isinstance(resolve_config("mpdiffuser", {"lr": 1}).lr, float)


def test_set_and_config_file_are_checked_where_they_were_written(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--set modle.dim=64: unknown key 'modle' \(did you mean 'model'\?\)"):
        user_config(None, ["modle.dim=64"])
    with pytest.raises(ConfigError, match=r"--set ranker.model.dim=big: 'ranker.model.dim' must be int"):
        user_config(None, ["ranker.model.dim=big"])
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"steps": 10, "dynamics": {"batchsize": 32}}))
    with pytest.raises(ConfigError, match=rf"{conf}: unknown key 'dynamics.batchsize' \(did you mean 'batch_size'\?\)"):
        load_config(conf)
    assert user_config(None, ["model.dim=8", "ranker.steps=20", "cond_extras=[\"return\"]"]) == \
        {"model": {"dim": 8}, "ranker": {"steps": 20}, "cond_extras": ["return"]}
    # the CLI refuses before it reads the data (exit 2, the message on stderr)
    assert train_main(["--data", str(tmp_path / "none.h5"), "--out", str(tmp_path / "o"),
                       "--set", "ema_strat=5"]) == 2
    assert "unknown key 'ema_strat' (did you mean 'ema_start'?)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_defaults_round_trip_and_sections_merge():
    assert to_dict(TrainConfig()) == DEFAULTS
    assert to_dict(parse(DEFAULTS)) == DEFAULTS
    user = {**TINY, "steps": 7, "dynamics": {"lr": 5e-4, "model": {"dim": 8}}}
    cfg = resolve_config("mpdiffuser", user)
    assert to_dict(cfg) == deep_merge(DEFAULTS, {**user, "method": "mpdiffuser"})
    dyn, ranker = component_config(cfg, "dynamics"), component_config(cfg, "ranker")
    assert isinstance(dyn, ComponentConfig) and not isinstance(dyn, TrainConfig)
    assert (dyn.steps, dyn.lr, dyn.model.dim, dyn.model.mults) == (7, 5e-4, 8, [1, 2])
    assert (ranker.steps, ranker.lr, ranker.model.hidden, ranker.model.act) == (5000, 1e-3, [32, 32], "mish")
    assert component_config(cfg, "planner").model.dim == 16
    # a method's section defaults (DADP's auxiliary models) and its components
    aux = component_config(resolve_config("dadp_i", {"model": {"latent": 8}}), "inverse")
    assert (aux.batch_size, aux.lr, aux.ema_start, aux.model.latent) == (256, 1e-3, 0, 8)


def test_a_fine_tunes_written_config_is_a_config_file_again(tmp_path):
    """A fine-tune writes ``init_from`` into its config.json (and ``python -m
    export.from_engine`` into the one it recovers); given back with ``--config`` it used to be
    refused (the optional nested block came back from the file check as a dataclass, which
    the full parse then rejected: "'init_from' must be object, got InitFrom(...)")."""
    written = to_dict(resolve_config("mpdiffuser", {**TINY, "init_from": {"path": "ck/planner.pt", "step": 16000}}))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written))
    again = resolve_config("mpdiffuser", user_config(path, ["steps=5"]))
    assert again.init_from is not None and (again.init_from.path, again.init_from.step) == ("ck/planner.pt", 16000)
    assert again.steps == 5 and to_dict(again) == {**written, "steps": 5}
    assert load_config(path)["init_from"] == {"path": "ck/planner.pt", "step": 16000}
    with pytest.raises(ConfigError, match="init_from.step"):
        user_config(None, ['init_from={"path": "x", "step": "many"}'])


def test_shipped_engine_and_recipe_configs_parse():
    """The embedded engine's stored training config (a component's config, written by an
    earlier version) parses strictly and round-trips; the recipe's --set overrides parse."""
    man = engine_file.read_manifest(engine_file.Path(__file__).parents[2] / "planner_runtime"
                                    / "engines" / "go2.onnx")
    stored = man.to_dict()["provenance"]["training_config"]
    c = from_mapping(ComponentConfig, stored, "go2.onnx training_config")
    # the recovery fine-tune's config (the last training of the planner)
    tune = default_engine.RECOVERY_TRAIN
    assert c.steps == int(tune[tune.index("--steps") + 1]) and c.init_from.step == default_engine.STEPS["planner"]
    assert (c.fall_cut, c.lr, c.prediction, c.model.dim, c.model.kernel) == (50, 3e-4, "x0", default_engine.PLANNER_DIM, 3)
    assert to_dict(c) == deep_merge(to_dict(ComponentConfig()), stored)
    for recipe in (default_engine.TRAIN, default_engine.FORECASTER, default_engine.FINETUNE,
                   default_engine.RECOVERY_TRAIN):
        sets = [recipe[i + 1] for i, a in enumerate(recipe) if a == "--set"]
        assert sets and user_config(None, sets)
    full = resolve_config("mpdiffuser", user_config(None, [s for s in default_engine.TRAIN
                                                           if "=" in s and not s.startswith("-")]))
    assert (full.batch_size, full.lr, full.fall_cut) == (128, 1e-3, 50)


def test_the_recipes_planner_dim_widens_the_planner_only():
    """`python -m export.default_engine [--planner-dim N]`: the base planner's training command
    sets its width (default PLANNER_DIM, the embedded engine's), the dynamics' does not;
    resolved as `train` resolves it."""
    from pathlib import Path

    from export.train.config import component_config

    wide = default_engine._base_training(Path("d.h5"), Path("base"), (False, True), planner_dim=64)
    shipped = default_engine._base_training(Path("d.h5"), Path("base"), (False, True))
    assert default_engine.PLANNER_DIM == 32
    for cmds, dims in ((wide, (64, 32)), (shipped, (32, 32))):
        for cmd, name, dim in zip(cmds, ("planner", "dynamics"), dims, strict=True):
            assert cmd[cmd.index("--components") + 1] == name
            sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
            full = resolve_config("mpdiffuser", user_config(None, sets))
            assert component_config(full, name).model.dim == dim
            assert component_config(full, name).cond_extras == ["cost_to_go"]  # the variant's flags kept
    for bad in (["--planner-dim", "4"], ["--planner-dim", "60"], ["--planner-dim", "64", "--skip-base"]):  # refused before any work
        with pytest.raises(SystemExit):
            default_engine.main(["--work", "/nonexistent/x", *bad])


def test_shipped_provenance_records_every_recipe_stage_in_order():
    """The embedded engine's PROVENANCE.json: collection, planner + dynamics training, the
    recovery rounds (branches, fine-tunes), the forecaster's stages (training, base engine, its own episodes, the fine-tune on them),
    the export; the recipe's --reexport / --skip-diffusion drop exactly the stages they redo."""
    import json
    from pathlib import Path

    prov = json.loads((Path(default_engine.__file__).parents[1] / "planner_runtime" / "engines"
                       / "PROVENANCE.json").read_text())
    stages = [default_engine._stage(s) for s in prov["stages"]]
    n_rec = 1 + sum(1 + len(r) + 1 for r in default_engine.RECOVERY_ROUNDS)  # the copy; per round
    assert stages == ["collect"] * 6 + ["train"] + ["recovery"] * n_rec + ["forecaster"] * 4 + ["export"]
    cmds = [" ".join(s["commands"]) for s in prov["stages"]]
    f = 7 + n_rec  # the forecaster's first stage
    assert f"--data {prov['dataset']} " in cmds[f] and "--components forecaster" in cmds[f]
    assert "--record" in cmds[f + 2] and default_engine.ONPOLICY_NAME in cmds[f + 2]
    assert "--init-from" in cmds[f + 3] and f"--data {prov['onpolicy_dataset']}" in cmds[f + 3]
    assert "forecast_states=all" in cmds[f + 4] and "forecast_states=q_rel_" in cmds[f + 1]
    # every recovery round's branch runs are the recipe's, into the recovery dataset
    branches = [c for c in cmds if "--branch-from" in c]
    assert len(branches) == sum(len(r) for r in default_engine.RECOVERY_ROUNDS)
    assert all(f"--out {prov['recovery_dataset']} " in c for c in branches)


def test_the_recipe_runs_its_stages_in_order_and_the_recovery_rounds_build_on_each_other(tmp_path, monkeypatch):
    """The recipe's command sequence, with every command recorded instead of run (the files
    a command would write are touched): base training into BASE_DIR, then per recovery round
    an engine (round 1 from the base networks, later rounds from the last fine-tune), its
    branches appended to a copy of the dataset, planner and dynamics fine-tuned from the base
    networks on that copy; the forecaster's stages on the copy; the final export. Every entry
    is classified into its stage, so --skip-base keeps exactly collect and train."""
    import shlex

    warm = lambda c: shlex.split(c)[shlex.split(c).index("--warm-level") + 1]  # noqa: E731

    def fake_run(args, log, parallel=None):
        cmds = parallel or [args]
        for c in cmds:
            for flag in ("-o", "--record"):
                if flag in c:
                    out = tmp_path / c[c.index(flag) + 1]  # absolute: the join keeps it
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(b"x")
            if c[0] == "train":  # a training writes its config (the variant's condition, when asked)
                sets = [c[i + 1] for i, a in enumerate(c) if a == "--set"]
                extras = next((json.loads(v.split("=", 1)[1]) for v in sets if v.startswith("cond_extras=")), [])
                out = tmp_path / c[c.index("--out") + 1]
                out.mkdir(parents=True, exist_ok=True)
                (out / "config.json").write_text(json.dumps(
                    {"cond_extras": extras, "history_with_state": "history_with_state=true" in sets}))
        log.append({"commands": ["planner-runtime " + shlex.join(c) for c in cmds], "wall_s": 1.0})

    monkeypatch.setattr(default_engine, "_run", fake_run)
    data = tmp_path / "d.h5"
    data.write_bytes(b"data")
    work = tmp_path / "w"
    assert default_engine.main(["--work", str(work), "--data", str(data), "--skip-collect"]) == 0  # recovery: the default
    prov = json.loads((work / "PROVENANCE.json").read_text())
    stages = [default_engine._stage(s) for s in prov["stages"]]
    rounds = default_engine.RECOVERY_ROUNDS
    per_round = [1 + len(r) + 1 for r in rounds]  # engine export, branch runs, fine-tune
    assert stages == ["train"] + ["recovery"] * (1 + sum(per_round)) + ["forecaster"] * 4 + ["export"]
    cmds = [" ".join(s["commands"]) for s in prov["stages"]]
    base, ck, rec = work / default_engine.BASE_DIR, work / "checkpoints", work / default_engine.RECOVERY_NAME
    assert f"--out {base}" in cmds[0] and cmds[1] == f"copy {data} {rec}"
    i = 2
    for r, runs in enumerate(rounds, start=1):
        src = base if r == 1 else ck
        assert f"--checkpoints {src} " in cmds[i] and "go2_round" in cmds[i] and "forecast_states=none" in cmds[i]
        for k, (model, _, seed) in enumerate(runs):
            c = cmds[i + 1 + k]
            assert f"--out {rec} " in c and f"--model {model} " in c and f"--seed {seed} " in c
            assert f"--branch-from {work / f'go2_round{r}.onnx'}" in c and "--append" in c
        tune = prov["stages"][i + 1 + len(runs)]["commands"]
        assert len(tune) == 2 and all(f"--init-from {base} --data {rec} --out {ck} " in c for c in tune)
        i += 2 + len(runs)
    # the forecaster trains on the dataset: its normalizers must be the base networks'
    assert f"--data {data} " in cmds[i] and "--components forecaster" in cmds[i]
    # only the shipped engine's export fixes the cost target; the round and base engines keep 0
    gate = default_engine.COST_GATE
    target = f"--knob cost_to_go_tilted={gate['cost_to_go_tilted']:g} --knob tilt_gate_deg={gate['tilt_gate_deg']:g}"
    assert cmds[-1].endswith(target) and f"-o {work / default_engine.ENGINE_NAME} " in cmds[-1]
    assert [c for c in cmds if "cost_to_go_" in c or "tilt_gate" in c] == [cmds[-1]]
    assert prov["cost_gate"] == gate and gate["cost_to_go_tilted"] < 0
    assert prov["recovery_dataset_sha256"] == prov["dataset_sha256"]  # the copy (nothing appended here)
    # --skip-base needs the base networks; then it keeps the base training stage, redoes the rest
    with pytest.raises(SystemExit, match="--skip-base needs"):
        default_engine.main(["--work", str(work), "--data", str(data), "--skip-collect", "--skip-base", "--recovery"])
    base.mkdir(exist_ok=True)
    for c in ("planner", "dynamics"):
        (base / f"{c}.pt").write_bytes(b"x")
    assert default_engine.main(["--work", str(work), "--data", str(data), "--skip-collect", "--skip-base",
                                "--recovery"]) == 0
    again = [default_engine._stage(s) for s in json.loads((work / "PROVENANCE.json").read_text())["stages"]]
    assert again == stages
    # with --no-recovery the base networks are the engine's: no recovery stage, no recovery data
    assert default_engine.main(["--work", str(work), "--data", str(data), "--skip-collect", "--skip-base",
                                "--no-recovery"]) == 0
    plain = json.loads((work / "PROVENANCE.json").read_text())
    assert [default_engine._stage(s) for s in plain["stages"]] == ["train"] + ["forecaster"] * 4 + ["export"]
    assert "recovery_dataset" not in plain and (ck / "planner.pt").read_bytes() == b"x"
    # --history: the same sequence, every training (base, fine-tunes, forecaster) with the history
    work2 = tmp_path / "w2"
    assert default_engine.main(["--work", str(work2), "--data", str(data), "--skip-collect", "--history"]) == 0
    hist = json.loads((work2 / "PROVENANCE.json").read_text())
    assert hist["history"] is True and plain["history"] is False
    assert [default_engine._stage(s) for s in hist["stages"]] == stages
    trains = [c for s in hist["stages"] for c in s["commands"] if c.startswith("planner-runtime train ")]
    assert len(trains) == 2 + 2 * len(rounds) + 2
    assert all("--set 'cond_extras=[\"cost_to_go\", \"prev_action\"]' --set history_with_state=true" in c
               for c in trains)
    assert not any("history_with_state" in c for s in prov["stages"] for c in s["commands"])
    # the default: every training with the cost condition (and no history); --no-cost: none
    trains = [c for s in prov["stages"] for c in s["commands"] if c.startswith("planner-runtime train ")]
    assert len(trains) == 2 + 2 * len(rounds) + 2
    assert all("--set 'cond_extras=[\"cost_to_go\"]'" in c for c in trains)
    work3 = tmp_path / "w3"
    assert default_engine.main(["--work", str(work3), "--data", str(data), "--skip-collect", "--no-cost"]) == 0
    bare = json.loads((work3 / "PROVENANCE.json").read_text())
    assert (bare["cost"], bare["history"], prov["cost"], hist["cost"]) == (False, False, True, True)
    assert [default_engine._stage(s) for s in bare["stages"]] == stages
    assert not any("cond_extras" in c for s in bare["stages"] for c in s["commands"])
    assert "cost_gate" not in bare and not any("cost_to_go" in c for s in bare["stages"] for c in s["commands"])
    # --reexport keeps the earlier stages, exports again with the target, and refuses networks
    # of another variant (the target is a knob of the cost condition only)
    cfg = {"cond_extras": ["cost_to_go"], "history_with_state": False}
    (ck / "config.json").write_text(json.dumps(cfg))
    assert default_engine.main(["--work", str(work), "--reexport"]) == 0
    re = json.loads((work / "PROVENANCE.json").read_text())
    assert re["stages"][:-1] == plain["stages"][:-1] and re["stages"][-1]["commands"][0].endswith(target)
    assert re["cost_gate"] == default_engine.COST_GATE
    with pytest.raises(SystemExit, match="trained as the default .* this run asks for --no-cost"):
        default_engine.main(["--work", str(work), "--reexport", "--no-cost"])
    # the final export starts warm FINAL_WARM_LEVEL levels from the end, the round engines 7
    assert [warm(c) for c in cmds if c.startswith("planner-runtime export ")] == (
        ["7"] * len(rounds) + ["7", str(default_engine.FINAL_WARM_LEVEL)])
    assert prov["warm_level"] == default_engine.FINAL_WARM_LEVEL and prov["planner_dim"] == default_engine.PLANNER_DIM
    # --warm-level K: the final export's warm start only (the round engines keep EXPORT's 7)
    assert default_engine.main(["--work", str(work), "--reexport", "--warm-level", "5"]) == 0
    w5 = json.loads((work / "PROVENANCE.json").read_text())["stages"]
    exports = [c for s in w5 for c in s["commands"] if c.startswith("planner-runtime export ")]
    assert [warm(c) for c in exports] == ["7"] * (len(exports) - 1) + ["5"] and exports[-1] == w5[-1]["commands"][0]
    assert default_engine.main(["--work", str(work), "--reexport", "--warm-level", "3"]) == 0
    w3 = json.loads((work / "PROVENANCE.json").read_text())
    assert warm(w3["stages"][-1]["commands"][0]) == "3" and w3["warm_level"] == 3
    assert w5[-1]["commands"][0].endswith(target)
    with pytest.raises(SystemExit):
        default_engine.main(["--work", str(work), "--reexport", "--warm-level", "0"])


def test_recipe_condition_variants_train_every_network_with_their_condition(tmp_path):
    """``python -m export.default_engine --history`` / ``--cost`` / both: every training
    command of the recipe carries the variant's condition, which parses into the config the
    variant names (the previous action embedded with the state; the cost target first); the
    default recipe carries none. Continuing from checkpoints of another variant (--skip-base,
    --skip-diffusion) is refused before anything runs."""
    sets = lambda cmd: [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]  # noqa: E731
    want = {(False, False): ([], False), (True, False): (["prev_action"], True),
            (False, True): (["cost_to_go"], False), (True, True): (["cost_to_go", "prev_action"], True)}
    assert set(default_engine.VARIANTS) == set(want)
    for recipe in (default_engine.TRAIN, default_engine.RECOVERY_TRAIN, default_engine.FORECASTER,
                   default_engine.FINETUNE):
        for variant, (extras, state) in want.items():
            cfg = resolve_config("mpdiffuser", user_config(None, sets(default_engine._train(recipe, variant))))
            assert (list(cfg.cond_extras), cfg.history_with_state) == (extras, state)
        assert default_engine._train(recipe, (False, False)) == recipe  # the shipped recipe unchanged

    def checkpoints(name, cfg):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    for variant, (extras, state) in want.items():
        ck = checkpoints(f"v{int(variant[0])}{int(variant[1])}", {"cond_extras": extras, "history_with_state": state})
        assert default_engine._variant_of(ck) == variant
    hist = tmp_path / "v10"
    with pytest.raises(SystemExit, match="none of this recipe's variants"):  # a condition the recipe never makes
        default_engine._variant_of(checkpoints("other", {"cond_extras": ["prev_action"]}))
    with pytest.raises(SystemExit, match="config.json is missing"):
        default_engine._variant_of(tmp_path)

    work = tmp_path / "work"
    base = work / default_engine.BASE_DIR
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"cond_extras": []}))
    for c in default_engine.STEPS:
        (base / f"{c}.pt").write_bytes(b"")
    (work / "PROVENANCE.json").write_text("{}")
    with pytest.raises(SystemExit, match="trained as --no-cost, this run asks for --history"):
        default_engine.main(["--work", str(work), "--skip-base", "--history"])
    with pytest.raises(SystemExit, match=r"trained as --no-cost, this run asks for the default \(the cost"):
        default_engine.main(["--work", str(work), "--skip-base"])
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "config.json").write_text((hist / "config.json").read_text())
    with pytest.raises(SystemExit, match="trained as --history --no-cost, this run asks for the default"):
        default_engine.main(["--work", str(work), "--skip-diffusion"])
    with pytest.raises(SystemExit, match="trained as --history --no-cost, this run asks for --history: pass"):
        default_engine.main(["--work", str(work), "--skip-diffusion", "--history"])
    assert sorted(p.name for p in work.iterdir()) == ["PROVENANCE.json", "base_checkpoints", "checkpoints"]
