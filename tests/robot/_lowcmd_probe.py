"""Child process for test_dds: a second party on rt/lowcmd.

``squat DOMAIN SECONDS``: create an rt/lowcmd publisher (writes nothing) and hold it, as
another controller would; prints a "ready" line.
``record DOMAIN SECONDS``: subscribe to rt/lowcmd and classify every command received
(CRC-checked): how many were passive (kp = kd = 0) or damping (kp = 0, kd > 0), and how many
broke the SDK's convention that a target without its gain is PosStopF / VelStopF. Prints one
JSON line at the end.
"""

from __future__ import annotations

import json
import sys
import threading
import time


def main() -> int:
    what, domain, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    import numpy as np
    from unitree_sdk2py.core.channel import ChannelPublisher, ChannelSubscriber
    from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_

    from robot import go2_constants as go2
    from robot.dds_bridge import TOPIC_LOWCMD, check_lowcmd, init_channels, lowcmd_from_msg

    init_channels(domain, "lo")
    if what == "squat":
        pub = ChannelPublisher(TOPIC_LOWCMD, LowCmd_)
        pub.Init()
        print(json.dumps({"event": "ready"}), flush=True)
        time.sleep(seconds)
        return 0
    out = {"received": 0, "bad": 0, "passive": 0, "damping": 0, "pd": 0,
           "q_without_stop_sentinel": 0, "dq_without_stop_sentinel": 0}
    lock = threading.Lock()

    def on_cmd(msg) -> None:
        with lock:
            out["received"] += 1
            if check_lowcmd(msg) is not None:
                out["bad"] += 1
                return
            c = lowcmd_from_msg(msg)
            if np.any((c.kp == 0) & (c.q != go2.POS_STOP_F)):
                out["q_without_stop_sentinel"] += 1
            if np.any((c.kd == 0) & (c.dq != go2.VEL_STOP_F)):
                out["dq_without_stop_sentinel"] += 1
            if np.all(c.kp == 0):
                out["passive" if np.all(c.kd == 0) else "damping"] += 1
            else:
                out["pd"] += 1

    sub = ChannelSubscriber(TOPIC_LOWCMD, LowCmd_)
    sub.Init(on_cmd, 0)
    print(json.dumps({"event": "ready"}), flush=True)
    time.sleep(seconds)
    with lock:
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
