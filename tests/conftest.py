"""Shared fixtures: ephemeral ports, temporary datasets, tiny engines.

Heavy optional parts are skipped with a reason when absent (TensorRT, CUDA, Isaac Lab).
"""

from __future__ import annotations

import os

# Tests share 2 cores with each other: keep numeric libraries single-threaded (set before
# anything imports numpy or onnxruntime).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

from planner_runtime.server import free_tcp_port  # noqa: E402


@pytest.fixture
def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"
