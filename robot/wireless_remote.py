"""Decoding of the Go2 wireless controller bytes carried in LowState.wireless_remote.

The 40-byte block (little-endian) as the Go2 firmware fills it:
  [0:2]   header
  [2:4]   key bit field (uint16), bit 0 first:
          R1, L1, start, select, R2, L2, F1, F2, A, B, X, Y, up, right, down, left
  [4:8]   lx (float32), [8:12] rx, [12:16] ry, [16:20] L2 analog, [20:24] ly
  [24:40] reserved
The controller's stop combination is **L2 + B** (the combination Unitree's own examples
use for damping): both keys held in the same state message sends the robot to DAMPING.
Its resume combination is **L2 + A** (this project's choice; like the stop it needs L2
held, so no single key press does either): pressing it while the robot is in a latched
DAMPING (after a fault or the stop combination) asks the controller to stand the robot up
again (robot/safety.py says when that is refused). It acts on the press, not while held,
and never while B is held too (the stop wins).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

KEY_BITS: dict[str, int] = {
    name: i for i, name in enumerate(
        ("R1", "L1", "start", "select", "R2", "L2", "F1", "F2",
         "A", "B", "X", "Y", "up", "right", "down", "left"))
}
STOP_COMBO: tuple[str, ...] = ("L2", "B")
RESUME_COMBO: tuple[str, ...] = ("L2", "A")
REMOTE_SIZE = 40


@dataclass(frozen=True)
class RemoteState:
    keys: frozenset[str]
    lx: float
    rx: float
    ry: float
    ly: float

    @property
    def stop_pressed(self) -> bool:
        return all(k in self.keys for k in STOP_COMBO)

    @property
    def resume_pressed(self) -> bool:
        return all(k in self.keys for k in RESUME_COMBO) and not self.stop_pressed


def decode(raw: bytes | bytearray | list[int]) -> RemoteState:
    """Decode the 40 wireless_remote bytes; ValueError on a wrong length."""
    b = bytes(bytearray(raw))
    if len(b) != REMOTE_SIZE:
        raise ValueError(f"wireless_remote must be {REMOTE_SIZE} bytes, got {len(b)}")
    (bits,) = struct.unpack_from("<H", b, 2)
    lx, rx, ry, _l2, ly = struct.unpack_from("<5f", b, 4)
    keys = frozenset(name for name, i in KEY_BITS.items() if bits >> i & 1)
    return RemoteState(keys=keys, lx=lx, rx=rx, ry=ry, ly=ly)


def encode(keys: tuple[str, ...] | list[str] = (), lx: float = 0.0, rx: float = 0.0,
           ry: float = 0.0, ly: float = 0.0) -> bytes:
    """Build the 40 bytes for given keys and sticks (the simulator's remote, tests)."""
    unknown = [k for k in keys if k not in KEY_BITS]
    if unknown:
        raise ValueError(f"unknown remote keys {unknown}; known: {sorted(KEY_BITS)}")
    bits = 0
    for k in keys:
        bits |= 1 << KEY_BITS[k]
    out = bytearray(REMOTE_SIZE)
    struct.pack_into("<H", out, 2, bits)
    struct.pack_into("<5f", out, 4, lx, rx, ry, 0.0, ly)
    return bytes(out)
