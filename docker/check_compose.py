#!/usr/bin/env python3
"""Static check of docker/compose.yaml without a Docker engine (CI has none).

Interpolates ``${VAR}`` / ``${VAR:-default}`` the way Compose does (from the environment or
an ``--env-file``), resolves YAML anchors and merge keys, and validates the result against
the Compose Specification JSON schema given with ``--schema`` (check.sh takes it from the
docker-compose 1.29.2 wheel on PyPI, which ships ``compose/config/compose_spec.json``).
Exit 0 when valid; 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped (Compose's .env syntax, unquoted)."""
    env: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            raise ValueError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        k, v = s.split("=", 1)
        env[k.strip()] = v.strip().strip('"').strip("'")
    return env


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose variable substitution on every string of a loaded YAML document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        have = env.get(name)
        if op == ":-":
            return have if have else arg
        if op == "-":
            return have if have is not None else arg
        if op in (":?", "?"):
            missing = not have if op == ":?" else have is None
            if missing:
                raise ValueError(f"required variable {name} is not set: {arg}")
            return have or ""
        return have or ""

    return _VAR.sub(sub, value)


def load_compose(path: str | os.PathLike, env: dict[str, str]) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(Path(path).read_text())  # anchors and << merge keys resolved here
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return interpolate(doc, env)


def validate(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{where}: {err.message}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("compose", help="compose file")
    ap.add_argument("--schema", required=True, help="compose-spec JSON schema file")
    ap.add_argument("--env-file", action="append", default=[], help="interpolation variables")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    for f in args.env_file:
        env.update(read_env_file(f))
    try:
        doc = load_compose(args.compose, env)
        schema = json.loads(Path(args.schema).read_text())
    except (OSError, ValueError) as exc:
        print(f"{args.compose}: {exc}")
        return 1
    problems = validate(doc, schema)
    for p in problems:
        print(f"{args.compose}: {p}")
    if not problems:
        names = ", ".join(sorted(doc.get("services", {})))
        envs = ", ".join(args.env_file) or "defaults"
        print(f"{args.compose}: valid compose file ({envs}); services: {names}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
