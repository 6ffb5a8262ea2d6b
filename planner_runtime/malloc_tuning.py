"""glibc malloc settings for the planner process: no fastbins (``M_MXFAST = 0``).

glibc keeps small freed blocks in "fastbins" without merging them. The first request of
1 KiB or more after that merges every one of them (``malloc_consolidate``). An engine run
frees many small blocks, so on the observation -> chunk path the first larger allocation
after it (the chunk's encoding buffer, the next plan's input arrays) walks those blocks
with cold caches. Measured on the 2-vCPU CI-class VM, right after an engine run: a 1100-byte
allocation took 53-66 us median with fastbins and 10-11 us without; the chunk's encoding
79-99 us and 39-47 us; the whole warm-started plan 0.3 ms less (median, 3 alternating
rounds). docs/service.md has the service benchmark that measures the whole path.

``mallopt(M_MXFAST, 0)`` turns fastbins off for the whole process (all arenas): freed small
blocks are merged at once, in the ``free`` that returns them, instead of all together
later. It is glibc's documented knob (``mallopt(3)``; the same as
``GLIBC_TUNABLES=glibc.malloc.mxfast=0`` in the environment). Other C libraries (musl,
macOS) have no such setting: ``disable_fastbins()`` then returns False and changes nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

M_MXFAST = 1  # <malloc.h>

_applied = False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _glibc() -> Any | None:
    """The process's C library when it is glibc, else None (looked up once: asking again
    must not allocate, or ``fastbin_blocks`` would change what it measures)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: the C library among them
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        libc.mallinfo2.argtypes = ()
    return libc


def glibc_version() -> str | None:
    """"2.36" etc., or None when the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return None
    return libc.gnu_get_libc_version().decode()


def disable_fastbins() -> bool:
    """Turn glibc's fastbins off for this process. True when applied (or already), False
    when the C library is not glibc or refused the setting."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _applied = libc.mallopt(M_MXFAST, 0) == 1
    return _applied


def fastbins_disabled() -> bool:
    """Whether ``disable_fastbins()`` took effect in this process."""
    return _applied


def fastbin_blocks() -> int | None:
    """How many freed blocks sit in the fastbins of all arenas now (glibc's ``mallinfo2``
    ``smblks``; it allocates nothing, so it does not merge them by asking); None without
    glibc 2.33+."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    return int(libc.mallinfo2().smblks)
