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


def test_every_priority_option_refuses_an_out_of_range_priority_when_parsed():
    """SCHED_FIFO priorities outside 1..99 (or not numbers) on the bench and stand-in robot
    options exit 2 with the reason at parse time; 0 was silently ignored, 100 a traceback
    after the bench had started its processes."""
    from planner_runtime.scheduling import priority_arg

    assert priority_arg("1") == 1 and priority_arg("99") == 99
    for cmd in (["-m", "robot.bench_loop", "--rt-priority"], ["-m", "planner_runtime.cli", "sim", "--dds", "--dds-rt-priority"]):
        for bad, why in (("0", "must be in 1..99, got 0"), ("100", "must be in 1..99, got 100"), ("x", "not an integer")):
            r = subprocess.run([sys.executable, *cmd, bad], capture_output=True, text=True, timeout=120)
            assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
