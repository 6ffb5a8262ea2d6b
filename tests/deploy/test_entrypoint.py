"""docker/entrypoint.sh, run for real by bash with a stand-in `planner-runtime` on PATH.

The stand-in records its arguments and, for `build-engine`, writes the output file: it takes
the place of a TensorRT build, which cannot run here (no GPU, no tensorrt). A stub `tensorrt`
module on PYTHONPATH makes the script believe TensorRT is installed where a test needs that.
Everything else (engine resolution, the build-once lock, atomic replace, fallbacks, argument
passing to serve) is the real script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DOCKER

ENTRYPOINT = DOCKER / "entrypoint.sh"

STUB = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STUB_LOG"
case "$1" in
  build-engine)
    # build-engine ONNX --output OUT [extra...]
    [ "$3" = "--output" ] || { echo "stub: unexpected build-engine args: $*" >&2; exit 9; }
    sleep "${STUB_BUILD_SLEEP:-0}"
    if [ "${STUB_BUILD_FAIL:-0}" = 1 ]; then echo partial > "$4"; exit 3; fi
    printf 'plan-from:%s\n' "$2" > "$4"; exit 0 ;;
  serve) exit 0 ;;
  *) exit 0 ;;
esac
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("flock") is None,
                                reason="needs bash and flock (util-linux)")


@pytest.fixture
def rig(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "planner-runtime"
    stub.write_text(STUB)
    stub.chmod(0o755)
    trt = tmp_path / "trt"
    trt.mkdir()
    (trt / "tensorrt.py").write_text("# stand-in: the real TensorRT cannot be installed here\n")
    models = tmp_path / "models"
    models.mkdir()
    log = tmp_path / "calls.log"

    def run(*args, tensorrt=True, check=None, **env_over):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(PATH=f"{bin_dir}:{env['PATH']}", STUB_LOG=str(log),
                   PLANNER_ENGINE=str(models / "go2.plan"))
        if tensorrt:
            env["PYTHONPATH"] = str(trt)
        env.update({k: str(v) for k, v in env_over.items()})
        return subprocess.Popen(["bash", str(ENTRYPOINT), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish(proc):
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return run, finish, calls, models


def test_first_start_builds_the_plan_once_then_serves_it(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", "--bind", "tcp://127.0.0.1:6001"))
    assert rc == 0, err
    plan = models / "go2.plan"
    assert plan.read_text() == f"plan-from:{models / 'go2.onnx'}\n"
    c = calls()
    assert c[0].startswith(f"build-engine {models / 'go2.onnx'} --output {models}/go2.partial-")
    assert c[1] == f"serve --engine {plan} --bind tcp://127.0.0.1:6001"
    assert not list(models.glob("*.partial-*"))
    rc, _, err = finish(run("serve"))  # second start: no rebuild
    assert rc == 0, err
    assert [x.split()[0] for x in calls()] == ["build-engine", "serve", "serve"]


def test_build_and_serve_arguments_parse_with_the_real_cli(rig):
    """What the entrypoint passes is accepted by the real build-engine and serve parsers."""
    from planner_runtime import cli

    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", "--bind", "tcp://127.0.0.1:6002", PLANNER_BUILD_ARGS="--fp16"))
    assert rc == 0, err
    build_argv, serve_argv = (c.split() for c in calls())
    for argv in (build_argv, serve_argv):
        parser, commands = cli.build_parser(argv)
        try:
            commands[argv[0]].load()
        except ImportError as exc:
            pytest.skip(f"planner-runtime {argv[0]} cannot be imported here: {exc}")
        args = parser.parse_args(argv)
        assert getattr(args, "_run", None) is not None
        if argv[0] == "build-engine":
            assert str(args.onnx) == str(models / "go2.onnx") and args.fp16
            assert str(args.output).startswith(str(models / "go2.partial-")) and str(args.output).endswith(".plan")
        else:
            assert args.engine == str(models / "go2.plan") and args.bind == "tcp://127.0.0.1:6002"


def test_concurrent_starters_build_once(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    procs = [run("build-engine-if-needed", STUB_BUILD_SLEEP=0.5) for _ in range(3)]
    results = [finish(p) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), results
    assert all(out.strip() == str(models / "go2.plan") for _, out, _ in results)
    assert [x.split()[0] for x in calls()] == ["build-engine"]


def test_rebuild_on_request_and_build_args_passed(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    (models / "go2.plan").write_text("old engine")
    rc, _, err = finish(run("build-engine-if-needed", PLANNER_REBUILD_ENGINE=1,
                            PLANNER_BUILD_ARGS="--fp16 --workspace-mb 512"))
    assert rc == 0, err
    assert calls()[0].endswith("--fp16 --workspace-mb 512")
    assert (models / "go2.plan").read_text().startswith("plan-from:")


def test_failed_build_leaves_no_partial_engine_and_fails_by_default(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", STUB_BUILD_FAIL=1))
    assert rc != 0
    assert "failed" in err and "PLANNER_ENGINE_FALLBACK=onnx" in err
    assert not (models / "go2.plan").exists() and not list(models.glob("*.partial-*"))
    assert not any(x.startswith("serve") for x in calls())


def test_failed_build_can_fall_back_to_the_onnx(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", STUB_BUILD_FAIL=1, PLANNER_ENGINE_FALLBACK="onnx"))
    assert rc == 0, err
    assert calls()[-1] == f"serve --engine {models / 'go2.onnx'}"


def test_without_tensorrt_fails_clearly_or_serves_onnx(rig):
    run, finish, calls, models = rig
    (models / "go2.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", tensorrt=False))
    assert rc != 0 and "TensorRT is not installed" in err
    rc, _, err = finish(run("serve", tensorrt=False, PLANNER_ENGINE_FALLBACK="onnx"))
    assert rc == 0, err
    assert calls() == [f"serve --engine {models / 'go2.onnx'}"]  # never tried to build


def test_onnx_engine_is_served_directly_and_missing_files_are_errors(rig):
    run, finish, calls, models = rig
    rc, _, err = finish(run("serve"))
    assert rc != 0 and "neither the engine" in err
    rc, _, err = finish(run("serve", PLANNER_ENGINE=models / "x.onnx"))
    assert rc != 0 and "not found" in err
    rc, _, err = finish(run("serve", PLANNER_ENGINE=models / "x.bin"))
    assert rc != 0 and "must end in .plan or .onnx" in err
    (models / "x.onnx").write_text("onnx")
    rc, _, err = finish(run("serve", PLANNER_ENGINE=models / "x.onnx"))
    assert rc == 0, err
    assert calls() == [f"serve --engine {models / 'x.onnx'}"]
    rc, _, err = finish(run("serve", PLANNER_ENGINE_FALLBACK="maybe", PLANNER_ENGINE=models / "y.plan",
                            PLANNER_ONNX=models / "x.onnx", tensorrt=False))
    assert rc != 0 and "must be 'fail' or 'onnx'" in err


def test_other_subcommands_pass_through(rig):
    run, finish, calls, _ = rig
    rc, _, err = finish(run("controller", "--iface", "eth0", "--planner", "tcp://127.0.0.1:5555"))
    assert rc == 0, err
    assert calls() == ["controller --iface eth0 --planner tcp://127.0.0.1:5555"]
    rc, out, _ = finish(run("echo", "hello"))
    assert rc == 0 and out.strip() == "hello"


def test_entrypoint_is_executable_bash():
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    assert Path(DOCKER / "check.sh").read_text().startswith("#!/usr/bin/env bash\n")
