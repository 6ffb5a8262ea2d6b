"""The single ``planner-runtime`` entry point.

Subcommands are discovered through the ``planner_runtime.commands`` entry-point group
(pyproject.toml), so this torch-free core never names the offline, robot or sim packages.
A command module provides ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports heavy dependencies (torch, mujoco, DDS) inside ``run``
so that ``planner-runtime serve`` starts on a machine that has none of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import entry_points
from types import ModuleType

from planner_runtime import __version__

GROUP = "planner_runtime.commands"

# Order shown in --help: the onboard path first, then the offline pipeline.
ORDER = [
    "serve", "controller", "sim", "demo", "collect", "dataset", "train", "export",
    "build-engine", "info", "bench", "eval",
]


def _discover() -> dict[str, str]:
    eps = entry_points(group=GROUP)
    found = {ep.name: ep.value for ep in eps}
    return dict(sorted(found.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else 99, kv[0])))


class _LazyHelp:
    """Imports a command module only when its parser is needed."""

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, _LazyHelp]]:
    parser = argparse.ArgumentParser(
        prog="planner-runtime",
        description="Onboard diffusion planning for legged robots (Unitree Go2).",
    )
    parser.add_argument("--version", action="version", version=f"planner-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {name: _LazyHelp(value) for name, value in _discover().items()}
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, lazy in commands.items():
        if wanted is not None and name != wanted:
            # Only the chosen command's module is imported; the others show a short help.
            sub.add_parser(name, help=f"(see: planner-runtime {name} --help)")
            continue
        try:
            mod = lazy.load()
        except ImportError as exc:  # a missing optional extra must not break other commands
            p = sub.add_parser(name, help=f"unavailable: {exc}")
            p.set_defaults(_unavailable=f"'{name}' needs a missing dependency: {exc}")
            continue
        p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if getattr(args, "_unavailable", None):
        print(f"error: {args._unavailable}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()
        return rc
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`planner-runtime info ENGINE | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
