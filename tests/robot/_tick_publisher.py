"""Child process for test_dds: publishes rt/lowstate at 500 Hz with a tick in a chosen unit.

A robot whose LowState_.tick counts microseconds (Unitree's older legged SDK documents
that unit) or its own steps, instead of the Go2's milliseconds. Run in its own process, as
_bad_publisher.py is. Usage: python tests/robot/_tick_publisher.py DOMAIN SECONDS TICK_HZ START
(START: the first tick, e.g. just below 2**32 to wrap mid-run). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    domain, seconds, tick_hz, start = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    from unitree_sdk2py.core.channel import ChannelPublisher
    from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowState_

    from robot.dds_bridge import (
        TOPIC_LOWSTATE,
        DeadlinePacer,
        LowStateCrc,
        fill_lowstate,
        init_channels,
        new_lowstate_msg,
    )
    from robot.types import LowState

    init_channels(domain, "lo")
    pub = ChannelPublisher(TOPIC_LOWSTATE, LowState_)
    pub.Init()
    msg = new_lowstate_msg()
    packer = LowStateCrc(msg)
    st = LowState()
    pacer = DeadlinePacer(0.002)
    t0 = time.monotonic()
    sent = 0
    wrapped = False
    while (now := time.monotonic()) - t0 < seconds:
        tick = start + int(round((now - t0) * tick_hz))
        wrapped |= tick > 0xFFFFFFFF
        st.tick = tick & 0xFFFFFFFF
        sent += bool(pub.Write(fill_lowstate(msg, st, packer)))
        pacer.wait()
    print(json.dumps({"sent": sent, "wrapped": wrapped}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
