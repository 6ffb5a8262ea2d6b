"""The container start path for real, minus the container: docker/entrypoint.sh execs the real
`planner-runtime serve` on a small ONNX engine (ONNX Runtime, CPU), docker/healthcheck.py
pings it over loopback ZeroMQ, SIGTERM stops it cleanly. The engine comes from the runtime
tests' tiny-engine builder (tests/runtime/conftest.py); skipped if that is not available."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from .conftest import DOCKER, REPO


def tiny_engine(path):
    src = REPO / "tests" / "runtime" / "conftest.py"
    if not src.is_file():
        pytest.skip("tests/runtime/conftest.py (tiny engine builder) not present")
    spec = importlib.util.spec_from_file_location("runtime_conftest_for_deploy", src)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        build = mod.build_tiny_engine
    except Exception as exc:  # another area's helper: skip rather than fail on its changes
        pytest.skip(f"tiny engine builder unavailable: {exc}")
    return build(path)


def test_entrypoint_serves_and_health_probe_answers(tmp_path, tcp_endpoint):
    tiny_engine(tmp_path / "go2.onnx")
    env = dict(os.environ, PLANNER_ENGINE=str(tmp_path / "go2.plan"), PLANNER_ENGINE_FALLBACK="onnx")
    env.pop("PYTHONPATH", None)
    # the entrypoint execs the installed `planner-runtime` by name: the console script of this
    # interpreter's environment, also when the venv is not activated (`make test`)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    proc = subprocess.Popen(["bash", str(DOCKER / "entrypoint.sh"), "serve", "--bind", tcp_endpoint],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), "--endpoint", tcp_endpoint,
                            "--timeout", "90"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stdout.startswith(f"ok: {tcp_endpoint}") and "onnxruntime" in r.stdout
        proc.send_signal(signal.SIGTERM)  # reaches serve itself: the entrypoint exec'd it
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    if "tensorrt" not in sys.modules and importlib.util.find_spec("tensorrt") is None:
        assert "serving the ONNX" in err  # no TensorRT here: the fallback was taken, loudly
    assert not (tmp_path / "go2.plan").exists()
