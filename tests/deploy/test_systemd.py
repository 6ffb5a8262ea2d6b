"""docker/systemd units: restart policies, the engine build before serve, safe ordering."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DOCKER, cli_option_strings, entry_point_commands, parse_unit, unit_values

SERVE = DOCKER / "systemd" / "planner-runtime-serve.service"
CTRL = DOCKER / "systemd" / "planner-runtime-controller.service"


def test_both_units_restart_and_install():
    for path in (SERVE, CTRL):
        u = parse_unit(path)
        assert unit_values(u, "Service", "Restart") == ["always"], path.name
        assert float(unit_values(u, "Service", "RestartSec")[0]) > 0
        assert unit_values(u, "Install", "WantedBy") == ["multi-user.target"]
        assert unit_values(u, "Service", "Type") == ["exec"]


def test_engine_is_built_before_serve_and_serve_is_health_checked():
    u = parse_unit(SERVE)
    pre = unit_values(u, "Service", "ExecStartPre")
    assert len(pre) == 1 and pre[0].endswith("planner-runtime-entrypoint build-engine-if-needed")
    start = unit_values(u, "Service", "ExecStart")
    assert len(start) == 1 and start[0].split()[:2] == ["/opt/planner-runtime/bin/planner-runtime-entrypoint", "serve"]
    post = unit_values(u, "Service", "ExecStartPost")
    assert post and "planner-runtime-healthcheck" in post[0]
    # a TensorRT build takes minutes: the default 90 s start timeout would kill it
    assert int(unit_values(u, "Service", "TimeoutStartSec")[0]) >= 600


def test_controller_runs_after_the_planner_but_never_depends_on_it():
    u = parse_unit(CTRL)
    after = " ".join(unit_values(u, "Unit", "After")).split()
    wants = " ".join(unit_values(u, "Unit", "Wants")).split()
    assert "planner-runtime-serve.service" in after and "planner-runtime-serve.service" in wants
    # Requires=/BindsTo= would stop the controller (the robot's safety logic) with the planner.
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert not unit_values(u, "Unit", key), f"controller must not have {key}="


def test_unit_commands_exist_in_the_cli():
    eps = entry_point_commands()
    start = unit_values(parse_unit(CTRL), "Service", "ExecStart")[0].split()
    assert start[0].endswith("/planner-runtime") and start[1] == "controller" and "controller" in eps
    flags = [a for a in start if a.startswith("--")]
    known = cli_option_strings("controller")
    assert set(flags) <= known, f"unknown controller options {set(flags) - known}"
    assert "serve" in eps and "build-engine" in eps


def test_environment_defaults_match_compose_and_env_file_is_optional():
    for path in (SERVE, CTRL):
        u = parse_unit(path)
        env = dict(v.split("=", 1) for v in unit_values(u, "Service", "Environment"))
        assert env["PLANNER_ENDPOINT"] == "tcp://127.0.0.1:5555"
        assert unit_values(u, "Service", "EnvironmentFile") == ["-/etc/planner-runtime/planner-runtime.env"]
    sample = (DOCKER / "systemd" / "planner-runtime.env").read_text()
    assert "PLANNER_ENGINE=" in sample and "GO2_IFACE=" in sample


def _verify_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for exe in ("opt/planner-runtime/bin/planner-runtime-entrypoint",
                "opt/planner-runtime/bin/planner-runtime-healthcheck",
                "opt/planner-runtime/venv/bin/planner-runtime"):
        p = root / exe
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    return root


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="systemd-analyze not installed here")
def test_systemd_analyze_verify_is_clean_and_catches_a_typo(tmp_path):
    root = _verify_root(tmp_path)
    for path in (SERVE, CTRL):
        shutil.copy(path, root / "etc/systemd/system" / path.name)
    bad = SERVE.read_text().replace("Restart=always", "Restrat=always")
    (root / "etc/systemd/system/typo.service").write_text(bad)

    def verify(name: str) -> str:
        r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
                            f"/etc/systemd/system/{name}"], capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()

    assert verify(SERVE.name) == ""
    assert verify(CTRL.name) == ""
    assert "Unknown key 'Restrat'" in verify("typo.service")


def test_the_env_files_example_arguments_are_options_the_commands_take():
    """The commented examples in planner-runtime.env (what a site uncomments) parse with the
    serve and controller parsers: an option renamed or removed fails here, not on the robot."""
    import argparse
    import shlex

    from planner_runtime.commands.serve import add_arguments as serve_args
    from robot.cli_controller import add_arguments as controller_args

    sample = (DOCKER / "systemd" / "planner-runtime.env").read_text().splitlines()
    parsers = {"PLANNER_SERVE_ARGS": serve_args, "PLANNER_CONTROLLER_ARGS": controller_args}
    seen = {k: 0 for k in parsers}
    for line in sample:
        key, _, value = line.lstrip("#").partition("=")
        if key in parsers and value.strip():
            p = argparse.ArgumentParser(exit_on_error=False)
            parsers[key](p)
            p.parse_args(shlex.split(value) + (["--engine", "go2.onnx"] if key == "PLANNER_SERVE_ARGS" else []))
            seen[key] += 1
    assert seen["PLANNER_SERVE_ARGS"] >= 1 and seen["PLANNER_CONTROLLER_ARGS"] >= 1, seen
