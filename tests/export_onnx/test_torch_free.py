"""The onboard engine code never imports torch (a Jetson image serves without it)."""

from __future__ import annotations

import subprocess
import sys


def test_engine_modules_do_not_import_torch(go2_step_engine):
    code = (
        "import sys\n"
        "import planner_runtime.manifest, planner_runtime.engine_file, planner_runtime.trt_build\n"
        "import planner_runtime.backends.ort, planner_runtime.backends.tensorrt\n"
        "import planner_runtime.commands.info, planner_runtime.commands.build_engine\n"
        "from planner_runtime.backends import load_engine\n"
        f"e = load_engine({str(go2_step_engine)!r})\n"
        "import numpy as np\n"
        "out = e.plan(np.zeros((1, 30)), np.zeros((1, 3)), np.zeros((1, 16, 42)), np.zeros((1, 16, 42)), e.default_levels(True))\n"
        "assert out.plan.shape == (1, 16, 42)\n"
        "from planner_runtime.cli import main\n"
        f"assert main(['info', {str(go2_step_engine)!r}]) == 0\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "checksum    graph sha256" in r.stdout and "compatible" in r.stdout
