"""A CPU wake-up latency limit held while the service runs (Linux PM QoS).

Between plans every thread on the observation -> chunk path sleeps, and its CPU drops into
an idle state. Leaving a deep idle state takes time (a halted virtual CPU is woken by the
hypervisor; a Jetson core may be power-gated), and a round trip wakes about ten threads:
the client, four ZeroMQ I/O threads, the service's socket and planner threads.

Writing a number of microseconds to ``/dev/cpu_dma_latency`` and keeping the file open
asks the kernel not to use idle states that take longer than that to leave. 0 means:
poll instead of sleeping. The request is system-wide, and it ends when the file is closed
(also when the process dies). The cost is power: idle cores stay busy. It is the knob that
tuned's ``latency-performance`` profile and real-time robot set-ups use.

``planner-runtime serve --cpu-latency-us 0`` holds such a request for as long as it serves.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

PM_QOS_DEVICE = "/dev/cpu_dma_latency"


class CpuLatencyError(OSError):
    """The latency request could not be placed (no PM QoS device, no permission)."""


def read_limit(path: str | os.PathLike[str] | None = None) -> int:
    """The system's current CPU latency limit in microseconds (the strictest request held)."""
    data = Path(PM_QOS_DEVICE if path is None else path).read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path or PM_QOS_DEVICE}: expected a 4-byte value, read {len(data)} bytes")
    return int(struct.unpack("=i", data[:4])[0])


class CpuLatencyRequest:
    """Hold a limit of ``max_us`` microseconds until ``release()`` (or the ``with`` block ends)."""

    def __init__(self, max_us: int, path: str | os.PathLike[str] | None = None) -> None:
        if isinstance(max_us, bool) or not isinstance(max_us, int) or not 0 <= max_us < 2**31:
            raise ValueError(f"CPU latency limit must be an int of microseconds >= 0, got {max_us!r}")
        self.max_us = max_us
        self.path = str(PM_QOS_DEVICE if path is None else path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> CpuLatencyRequest:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except FileNotFoundError:
            raise CpuLatencyError(
                f"{self.path} does not exist: this kernel offers no PM QoS CPU latency requests "
                "(not Linux, or built without CONFIG_CPU_IDLE); serve without --cpu-latency-us") from None
        except PermissionError:
            raise CpuLatencyError(
                f"no permission to write {self.path}: run as root, or let the service's group "
                f"write it (udev rule: KERNEL==\"cpu_dma_latency\", GROUP=\"<group>\", MODE=\"0660\"); "
                "or serve without --cpu-latency-us") from None
        except OSError as exc:
            raise CpuLatencyError(f"cannot open {self.path}: {exc}") from exc
        try:
            os.write(fd, struct.pack("=i", self.max_us))
        except OSError as exc:
            os.close(fd)
            raise CpuLatencyError(f"cannot write a latency request to {self.path}: {exc}") from exc
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the request (closing the file is what ends it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> CpuLatencyRequest:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
