"""The MuJoCo Go2 as a stand-in robot on DDS: the unchanged controller talks to it exactly
as it talks to the real Go2.

Publishes rt/lowstate (unitree_go LowState_, CRC stamped) at 500 Hz paced on absolute
real-time deadlines (its tick in simulated ms, as the firmware's), reads the newest rt/lowcmd
once per period (``robot.dds_bridge.NewestReader``: a stand-in that fell behind applies the
newest command, not a queue of old ones) and applies it with the firmware's PD semantics
through ``sim.mujoco_harness.MujocoGo2``. A command is rejected (counted, never
applied) when its CRC is wrong, its head / level flag are not the low-level framing, or it
holds a non-finite number or a negative gain. Like the firmware, the last accepted command
is held until the next one; before any command the motors are passive.

Used as ``planner-runtime sim --dds`` (``add_arguments`` / ``run``; ``sim.cli_sim`` owns the
command) or ``python -m sim.dds_robot``. ``--dds-stats PATH`` writes the counters as JSON
at exit (tests read it); SIGINT / SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time

import numpy as np

from planner_runtime.scheduling import priority_arg
from robot.types import LowCmd
from sim.physics import add_model_argument

log = logging.getLogger("sim.dds_robot")


def add_arguments(parser: argparse.ArgumentParser, with_duration: bool = False) -> None:
    g = parser.add_argument_group("DDS stand-in robot (--dds)")
    g.add_argument("--domain-id", type=int, default=0, help="DDS domain id (default 0)")
    g.add_argument("--iface", default="lo", help="network interface for DDS (default lo)")
    g.add_argument("--dds-start-pose", choices=("lying", "stand"), default="lying",
                   help="initial joint pose of the simulated robot (default lying)")
    g.add_argument("--dds-seed", type=int, default=0, help="simulator seed")
    g.add_argument("--dds-duration", type=float, default=None,
                   help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    g.add_argument("--dds-stats", default=None, help="write counters as JSON here at exit")
    g.add_argument("--dds-trace", default=None, metavar="NPZ",
                   help="write the ground-truth trace at 50 Hz (monotonic time, base velocity, "
                        "gyro, gravity z, base position) here at exit, for tracking metrics")
    g.add_argument("--dds-remote-stop-at", type=float, default=None,
                   help="press the wireless remote's stop combination (L2+B) after T seconds")
    g.add_argument("--dds-rt-priority", type=priority_arg, default=None,
                   help="run the stand-in under SCHED_FIFO with this priority (needs permission)")
    g.add_argument("--dds-rate", type=float, default=500.0, help="state rate in Hz (default 500)")
    if with_duration:
        parser.add_argument("--duration", type=float, default=None, help="alias of --dds-duration")


class DdsStandIn:
    """The simulator side of the DDS link; ``serve`` blocks until stopped."""

    def __init__(self, domain_id: int, iface: str, *, start_pose: str = "lying", seed: int = 0,
                 rate_hz: float = 500.0, remote_stop_at: float | None = None, model: str = "project") -> None:
        from unitree_sdk2py.core.channel import ChannelPublisher
        from unitree_sdk2py.idl.unitree_go.msg.dds_ import LowCmd_, LowState_

        from robot import go2_constants as go2
        from robot.dds_bridge import (
            TOPIC_LOWCMD,
            TOPIC_LOWSTATE,
            LowStateCrc,
            NewestReader,
            init_channels,
            new_lowstate_msg,
        )
        from sim.mujoco_harness import PHYSICS_DT, MujocoGo2, SimConfig

        if not rate_hz > 0:
            raise ValueError(f"rate must be > 0 Hz, got {rate_hz}")
        self.sim = MujocoGo2(SimConfig(seed=seed, model=model))
        self.sim.reset(joint_pos=go2.LYING_JOINT_POS if start_pose == "lying" else None)
        self.steps_per_tick = max(1, int(round(1.0 / rate_hz / PHYSICS_DT)))
        self.period = self.steps_per_tick * PHYSICS_DT
        self.remote_stop_at = remote_stop_at
        self._stop = threading.Event()
        self._closed = False
        self.truth: dict[str, list] = {k: [] for k in ("mono", "base_lin_vel", "gyro", "gravity_z", "base_pos")}
        self.stats = {"states_published": 0, "cmds_received": 0, "cmds_applied": 0,
                      "bad_crc": 0, "bad_header": 0, "non_finite": 0, "bad_gain": 0,
                      "max_abs_tau_ff_applied": 0.0, "max_kp_applied": 0.0,
                      "overruns": 0, "fell": False, "fell_at": None, "min_height": float("inf"),
                      "final_base_pos": None, "mean_vx": None,
                      "trace": []}  # every 0.1 s: [monotonic s, trunk height m, gravity z]
        init_channels(domain_id, iface)
        self._msg = new_lowstate_msg()
        self._state_crc = LowStateCrc(self._msg)  # the SDK's CRC without its Python packing
        self._pub = ChannelPublisher(TOPIC_LOWSTATE, LowState_)
        self._pub.Init()
        # the newest rt/lowcmd, polled once per period: like the firmware, a robot that fell
        # behind applies the newest command, never a queue of old ones (NewestReader)
        self._cmds = NewestReader(domain_id, TOPIC_LOWCMD, LowCmd_)

    def _poll_cmd(self) -> LowCmd | None:
        """The newest rt/lowcmd since the last poll, if it passes the checks (else counted)."""
        from robot.dds_bridge import check_lowcmd, lowcmd_from_msg

        msg = self._cmds.take()
        if msg is None or self._closed:
            return None
        self.stats["cmds_received"] += 1
        why = check_lowcmd(msg)
        if why is not None:
            self.stats[why] += 1
            return None
        cmd = lowcmd_from_msg(msg)
        if not cmd.is_finite():
            self.stats["non_finite"] += 1
            return None
        if np.any(cmd.kp < 0) or np.any(cmd.kd < 0):
            self.stats["bad_gain"] += 1
            return None
        return cmd

    def stop(self) -> None:
        self._stop.set()

    def serve(self, duration: float | None = None) -> dict:
        from robot import wireless_remote
        from robot.dds_bridge import DeadlinePacer, fill_lowstate

        pacer = DeadlinePacer(self.period)
        t_start = time.monotonic()
        stop_bytes = wireless_remote.encode(("L2", "B"))
        vx_sum, n = 0.0, 0
        missed_before = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - t_start
            if duration is not None and elapsed >= duration:
                break
            cmd = self._poll_cmd()
            if cmd is not None:
                self.sim.write_command(cmd)
                self.stats["cmds_applied"] += 1
                self.stats["max_abs_tau_ff_applied"] = max(
                    self.stats["max_abs_tau_ff_applied"], float(np.max(np.abs(cmd.tau))))
                self.stats["max_kp_applied"] = max(self.stats["max_kp_applied"], float(np.max(cmd.kp)))
            # Physics keeps real time: periods this process missed (not scheduled) are
            # simulated too, holding the last command, as a real robot would keep moving.
            missed = pacer.missed - missed_before
            missed_before = pacer.missed
            self.sim.step(self.steps_per_tick * (1 + missed))
            st = self.sim.read_state()
            if self.remote_stop_at is not None and elapsed >= self.remote_stop_at:
                st.wireless_remote = stop_bytes
            fill_lowstate(self._msg, st, self._state_crc)
            self._pub.Write(self._msg)
            self.stats["states_published"] += 1
            h = float(self.sim.data.qpos[2])
            self.stats["min_height"] = min(self.stats["min_height"], h)
            gz = self.sim.projected_gravity_z()
            if gz > self.sim.config.fall_gravity_z and not self.stats["fell"]:
                # Tipped over (a collapse onto the belly in passive or damping is not a fall).
                self.stats["fell"] = True
                self.stats["fell_at"] = time.monotonic()
            if self.stats["states_published"] % 50 == 1:
                self.stats["trace"].append([time.monotonic(), h, gz])
            if self.stats["states_published"] % max(1, int(round(0.02 / self.period))) == 0:
                self.truth["mono"].append(time.monotonic())
                self.truth["base_lin_vel"].append(self.sim.base_lin_vel())
                self.truth["gyro"].append(np.array(self.sim.data.qvel[3:6]))
                self.truth["gravity_z"].append(gz)
                self.truth["base_pos"].append(np.array(self.sim.data.qpos[0:3]))
            if st.base_lin_vel is not None:
                vx_sum += float(st.base_lin_vel[0])
                n += 1
            pacer.wait()
        self.stats["overruns"] = pacer.overruns
        self.stats["final_base_pos"] = [float(v) for v in self.sim.data.qpos[0:3]]
        self.stats["mean_vx"] = vx_sum / n if n else None
        self.stats["sim_time"] = self.sim.now()
        return dict(self.stats)

    def close(self) -> None:
        # Not deleting the DDS entities: see robot.dds_bridge.DdsRobot.close (deadlock).
        self._closed = True


def run(args: argparse.Namespace) -> int:
    # Only --dds-duration: `planner-runtime sim` has its own --duration (episode length).
    duration = getattr(args, "dds_duration", None)
    rt = getattr(args, "dds_rt_priority", None)
    if rt is not None:
        from planner_runtime.scheduling import set_realtime

        log.info("real-time scheduling: %s", set_realtime(rt))
    robot = DdsStandIn(args.domain_id, args.iface, start_pose=args.dds_start_pose,
                       seed=args.dds_seed, rate_hz=args.dds_rate,
                       remote_stop_at=args.dds_remote_stop_at, model=getattr(args, "model", "project"))

    def _stop(signum, _frame):
        log.info("signal %d: stopping the stand-in robot", signum)
        robot.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
    log.info("stand-in Go2 on DDS domain %d iface %s", args.domain_id, args.iface)
    print(json.dumps({"event": "ready", "domain_id": args.domain_id, "iface": args.iface}), flush=True)
    try:
        stats = robot.serve(duration)
    finally:
        robot.close()
    if args.dds_stats:
        with open(args.dds_stats, "w") as f:
            json.dump(stats, f, indent=1)
    if getattr(args, "dds_trace", None):
        np.savez(args.dds_trace, **{k: np.asarray(v, dtype=np.float64) for k, v in robot.truth.items()})
    log.info("stand-in stats: %s", stats)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.dds_robot", description=__doc__.splitlines()[0])
    add_arguments(p, with_duration=True)
    add_model_argument(p)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.dds_duration is None:
        args.dds_duration = args.duration
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
