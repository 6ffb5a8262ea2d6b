import subprocess
import sys

from planner_runtime import cli


def test_every_design_subcommand_is_registered():
    names = set(cli._discover())
    assert set(cli.ORDER) <= names, set(cli.ORDER) - names


def test_help_lists_commands_without_importing_torch():
    code = ("import sys; from planner_runtime import cli; "
            "p, _ = cli.build_parser(['serve']); "
            "assert 'torch' not in sys.modules, 'serve pulled in torch'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_command_fails():
    out = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "no-such-command"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
