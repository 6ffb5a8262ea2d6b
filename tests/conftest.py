"""Shared fixtures: ephemeral ports, temporary datasets, tiny engines.

Heavy optional parts are skipped with a reason when absent (TensorRT, CUDA, Isaac Lab).
"""

from __future__ import annotations

import os
import socket

import pytest

# Tests share 2 cores with each other: keep numeric libraries single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"
