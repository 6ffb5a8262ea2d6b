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


def test_a_closed_pipe_ends_the_command_quietly():
    """`planner-runtime info ENGINE | head`: the reader closes the pipe before info writes;
    the command ends with status 0 and no traceback."""
    import subprocess

    from planner_runtime.engines import default_engine_path

    proc = subprocess.Popen([sys.executable, "-m", "planner_runtime.cli", "info", str(default_engine_path())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has written anything (its imports take longer)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
