"""Child process for test_dds: publishes corrupted and NaN LowCmd_ messages on rt/lowcmd.

Run in its own process so the pytest process never hosts cyclonedds entities (their
teardown at interpreter exit can crash the host process). Prints one JSON line.
Usage: python tests/robot/_bad_publisher.py DOMAIN N
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> int:
    domain, n = int(sys.argv[1]), int(sys.argv[2])
    from unitree_sdk2py.core.channel import ChannelPublisher
    from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_
    from unitree_sdk2py.utils.crc import CRC

    from robot.dds_bridge import TOPIC_LOWCMD, DdsRobot, fill_lowcmd, init_channels, new_lowcmd_msg
    from robot.types import LowCmd

    init_channels(domain, "lo")
    pub = ChannelPublisher(TOPIC_LOWCMD, LowCmd_)
    pub.Init()
    evil = LowCmd(q=np.full(12, 3.0), kp=np.full(12, 80.0), kd=np.full(12, 1.0), tau=np.full(12, 9.0))
    bad_crc = fill_lowcmd(new_lowcmd_msg(), evil)
    bad_crc.crc ^= 0x1  # one flipped bit
    nan_cmd = new_lowcmd_msg()
    nan_cmd.motor_cmd[4].q = float("nan")
    nan_cmd.motor_cmd[4].kp = 30.0
    nan_cmd.crc = CRC().Crc(nan_cmd)  # a valid CRC over a NaN target
    deadline = time.monotonic() + 10
    matched = False
    while time.monotonic() < deadline and not matched:
        matched = bool(pub.Write(bad_crc, 0.5))
    sent = 0
    for _ in range(n):  # 5 ms apart: the stand-in reads the newest command every 2 ms
        sent += bool(pub.Write(bad_crc))
        time.sleep(0.005)
        sent += bool(pub.Write(nan_cmd))
        time.sleep(0.005)
    # The controller's own bridge refuses to publish a NaN command at all.
    bridge = DdsRobot(domain, "lo", dry_run=True)
    try:
        bridge.write_command(LowCmd(q=np.full(12, np.nan)))
        refused = False
    except ValueError:
        refused = True
    print(json.dumps({"matched": matched, "sent": sent, "bridge_refused_nan": refused}), flush=True)
    time.sleep(0.3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
