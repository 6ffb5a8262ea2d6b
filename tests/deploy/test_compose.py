"""docker/compose.yaml: the contract the robot's boot relies on (parsed, not run: no engine)."""

from __future__ import annotations

import pytest

from .conftest import DOCKER, cli_option_strings, entry_point_commands, load_script

pytest.importorskip("yaml", reason="PyYAML is needed to read docker/compose.yaml (pip install pyyaml)")
cc = load_script(DOCKER / "check_compose.py", "planner_runtime_check_compose")

ENVS = [None, DOCKER / "env" / "jetson.env", DOCKER / "env" / "x86.env", DOCKER / "env" / "x86-cuda.env"]


def compose(env_file=None) -> dict:
    env = cc.read_env_file(env_file) if env_file else {}
    return cc.load_compose(DOCKER / "compose.yaml", env)


@pytest.mark.parametrize("env_file", ENVS, ids=["defaults", "jetson", "x86", "x86-cuda"])
def test_services_restart_health_and_host_network(env_file):
    doc = compose(env_file)
    services = doc["services"]
    assert set(services) == {"planner", "controller"}
    for name, svc in services.items():
        assert svc["restart"] in ("always", "unless-stopped"), name
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{name} has no health check"
        assert hc["test"][0] in ("CMD", "CMD-SHELL") and "planner-runtime-healthcheck" in hc["test"][1]
        for k in ("interval", "timeout", "retries"):
            assert k in hc, f"{name} healthcheck lacks {k}"
        # DDS multicast discovery and the shared loopback bind need the host network.
        assert svc["network_mode"] == "host", name
        assert svc["volumes"] and svc["volumes"][0].endswith(":/models")


def test_planner_first_start_allows_engine_build_and_controller_waits_for_it():
    doc = compose()
    planner, controller = doc["services"]["planner"], doc["services"]["controller"]
    assert planner["command"] == ["serve"]  # the entrypoint builds the engine, then execs serve
    start = planner["healthcheck"]["start_period"]
    assert start.endswith("s") and int(start[:-1]) >= 300, "TensorRT builds take minutes on an Orin"
    assert controller["depends_on"]["planner"]["condition"] == "service_healthy"


def test_commands_exist_in_the_cli_entry_points():
    eps = entry_point_commands()
    for name, svc in compose()["services"].items():
        assert svc["command"][0] in eps, f"{name}: {svc['command'][0]!r} is not a planner-runtime subcommand"


def test_controller_flags_exist_in_its_parser():
    cmd = compose()["services"]["controller"]["command"]
    flags = [a for a in cmd if a.startswith("--")]
    assert flags, "the controller must be told the robot interface and the planner endpoint"
    known = cli_option_strings("controller")
    assert set(flags) <= known, f"unknown controller options {set(flags) - known}"
    # The endpoint it dials is the one the planner serves and the health check pings.
    planner_env = compose()["services"]["planner"]["environment"]
    assert cmd[cmd.index("--planner") + 1] == planner_env["PLANNER_ENDPOINT"]


def test_env_files_select_the_images():
    jet = compose(DOCKER / "env" / "jetson.env")
    x86 = compose(DOCKER / "env" / "x86.env")
    assert jet["services"]["planner"]["build"]["dockerfile"] == "docker/jetson/Dockerfile"
    assert jet["services"]["planner"]["runtime"] == "nvidia"
    assert x86["services"]["planner"]["build"]["dockerfile"] == "docker/x86/Dockerfile"
    assert x86["services"]["planner"]["runtime"] == "runc"
    # The CPU image has no TensorRT: it serves the ONNX directly.
    assert x86["services"]["planner"]["environment"]["PLANNER_ENGINE"].endswith(".onnx")
    assert jet["services"]["planner"]["environment"]["PLANNER_ENGINE"].endswith(".plan")
    for doc in (jet, x86):
        assert (DOCKER.parent / doc["services"]["planner"]["build"]["dockerfile"]).is_file()


def test_interpolation_matches_compose_rules():
    env = {"SET": "a", "EMPTY": ""}
    assert cc.interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}", env) == "a/d/d"
    assert cc.interpolate("${EMPTY-d}/${UNSET-d}/$$SET/$SET", env) == "/d/$SET/a"
    with pytest.raises(ValueError, match="UNSET"):
        cc.interpolate("${UNSET:?needed}", env)
