"""Helpers for the deployment tests: parse the Dockerfiles, compose file and systemd units
that cannot be run here (no Docker engine, no Jetson, no systemd as PID 1)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script from docker/ (not a package) by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def entry_point_commands() -> dict[str, str]:
    """The CLI's subcommands as declared in pyproject.toml (name -> module)."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(data["project"]["entry-points"]["planner_runtime.commands"])


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # comment lines inside a continued instruction
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        m = re.match(r"(\w+)\s+(.*)", buf, re.S)
        assert m, f"{path}: cannot parse {buf!r}"
        out.append((m.group(1).upper(), m.group(2)))
        buf = ""
    assert not buf, f"{path}: dangling continuation"
    return out


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd unit -> {section: [(key, value), ...]}; keys may repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    cur = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            cur = s[1:-1]
            sections.setdefault(cur, [])
            continue
        assert cur is not None, f"{path}:{n}: key outside a section"
        assert "=" in s, f"{path}:{n}: not KEY=VALUE: {s!r}"
        k, v = s.split("=", 1)
        sections[cur].append((k.strip(), v.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def cli_option_strings(command: str) -> set[str]:
    """Option strings of a planner-runtime subcommand, from its real argparse parser; skips
    the test when the command's module cannot be imported here."""
    from planner_runtime import cli

    parser, commands = cli.build_parser([command])
    if command not in commands:
        pytest.skip(f"subcommand {command!r} is not registered")
    try:
        commands[command].load()
    except ImportError as exc:
        pytest.skip(f"subcommand {command!r} cannot be imported here: {exc}")
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    p = sub.choices[command]
    return {o for a in p._actions for o in a.option_strings}
