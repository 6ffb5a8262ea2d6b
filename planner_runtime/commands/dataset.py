"""`planner-runtime dataset`: bring your own data into the project's dataset format.

    planner-runtime dataset import SRC -o OUT.h5 --dt 0.05 --robot pendulum \\
        [--state-names th,thdot] [--action-names tau] [--condition-names ...] [--tail timeout|drop]
    planner-runtime dataset info FILE.h5 [--json]
    planner-runtime dataset probe FILE.h5 [--history N] [--json]

``import`` reads D4RL-style flat arrays (``.npz`` or HDF5: observations, actions, rewards,
terminals, timeouts, optional conditions and costs) or a Minari dataset on disk (HDF5) and
writes a new dataset file (``planner_runtime/dataset_import.py`` has the rules). ``info``
prints what a dataset file says about its system: names, dt, robot, sizes, episodes.
``probe`` says how much of the demonstrator's next action the state and condition explain,
and how much its last actions or states add (``planner_runtime/history_probe.py``): what a
planner conditioned on the state alone cannot learn.
Torch-free; h5py is imported when a file is read or written.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("import D4RL-style arrays or Minari data into the dataset format; show a dataset's system; "
        "probe what its actions depend on")


def _split_names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    imp = sub.add_parser("import", help="flat D4RL-style arrays (.npz / .h5) or Minari HDF5 -> a new dataset file")
    imp.add_argument("source", help=".npz or .h5/.hdf5 with D4RL keys, or a Minari dataset folder / main_data.hdf5")
    imp.add_argument("-o", "--output", required=True, help="the dataset file to write (must not exist)")
    imp.add_argument("--dt", type=float, required=True,
                     help="seconds between samples (becomes the engines' control dt)")
    imp.add_argument("--robot", required=True, help="name of the robot or system (recorded in engines)")
    imp.add_argument("--state-names", default=None, help="comma-separated, S names (default obs0, obs1, ...)")
    imp.add_argument("--action-names", default=None, help="comma-separated, A names (default act0, ...)")
    imp.add_argument("--condition-names", default=None, help="comma-separated, C names (default cond0, ...)")
    imp.add_argument("--format", dest="source_format", choices=("auto", "flat", "minari"), default="auto")
    imp.add_argument("--tail", choices=("timeout", "drop"), default="timeout",
                     help="samples after the last terminal/timeout flag: close them as a timeout "
                          "(default) or drop them")
    imp.add_argument("--json", action="store_true", help="print one JSON object")
    info = sub.add_parser("info", help="names, dt, robot, sizes and episodes of a dataset file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    pr = sub.add_parser("probe", help="how much of the next action the state explains, and what the last "
                                      "actions or states add (held-out R^2)")
    pr.add_argument("file")
    pr.add_argument("--history", type=int, default=2, metavar="N",
                    help="the longest history probed: the last 1..N actions, the last 1..N states (default 2)")
    pr.add_argument("--features", type=int, default=None, metavar="F",
                    help="random Fourier features of the regression (default 3000)")
    pr.add_argument("--rows", type=int, default=None, help="training rows at most (default 60000)")
    pr.add_argument("--seed", type=int, default=0, help="the episode split, the row subset and the features")
    pr.add_argument("--json", action="store_true", help="print one JSON object")


def _info(path: str) -> dict:
    import numpy as np

    from planner_runtime.dataset import load_dataset

    ds = load_dataset(path, load_raw=False)
    b = ds.episode_bounds()
    lengths = b[:, 1] - b[:, 0]
    ends = np.flatnonzero(ds.terminals | ds.timeouts)
    returns = [float(ds.rewards[s:e].sum()) for s, e in b]
    return {"file": str(path), "robot": ds.robot, "dt": ds.dt, "samples": len(ds),
            "episodes": int(len(b)), "terminal_episodes": int(ds.terminals[ends].sum()),
            "episode_length": {"min": int(lengths.min()), "max": int(lengths.max()),
                               "mean": float(lengths.mean())},
            "episode_return": {"min": float(min(returns)), "max": float(max(returns)),
                               "mean": float(np.mean(returns))},
            "dims": dict(zip("SAC", ds.dims, strict=True)), "state_names": ds.state_names,
            "action_names": ds.action_names, "condition_names": ds.condition_names,
            "costs": ds.has_costs, "action_semantics": ds.action_semantics is not None,
            "raw_fields": sorted(ds.raw), "sha256": ds.sha256, "provenance": ds.provenance}


# provenance entries `dataset info` prints (all of it is in --json): where the data came from
SHOWN_PROVENANCE = ("collector", "robot", "base_velocity", "policy_tick_interval", "created_utc",
                    "recovered_from_journal")


def _print_report(r: dict, imported: bool) -> None:
    d = r["dims"]
    if imported:
        print(f"wrote {r['out']}: {r['episodes']} episodes, {r['samples']} samples "
              f"({r['terminal_episodes']} ended in failure); tail: {r.get('tail', 'n/a')}")
    else:
        print(f"{r['file']}: {r['episodes']} episodes, {r['samples']} samples "
              f"({r['terminal_episodes']} ended in failure)")
    print(f"system      {r['robot']}  dt {r['dt']} s  S={d['S']} A={d['A']} C={d['C']}  "
          f"costs {'yes' if r['costs'] else 'no'}")
    print(f"states      {', '.join(r['state_names'])}")
    print(f"actions     {', '.join(r['action_names'])}")
    print(f"conditions  {', '.join(r['condition_names'])}")
    el = r["episode_length"]
    print(f"episodes    length min {el['min']} mean {el['mean']:.1f} max {el['max']}")
    if "episode_return" in r:
        er = r["episode_return"]
        print(f"            return min {er['min']:.4g} mean {er['mean']:.4g} max {er['max']:.4g}")
    prov = r.get("provenance") or {}
    for i, k in enumerate(k for k in SHOWN_PROVENANCE if k in prov):
        print(f"{'provenance' if i == 0 else '':<12}{k}: {prov[k]}")


def run(args: argparse.Namespace) -> int:
    from planner_runtime.dataset import DatasetError

    if args.dataset_command is None:
        print("error: give an action: planner-runtime dataset import|info|probe (see --help)", file=sys.stderr)
        return 2
    try:
        if args.dataset_command == "import":
            from planner_runtime.dataset_import import import_dataset

            report = import_dataset(args.source, args.output, dt=args.dt, robot=args.robot,
                                    source_format=args.source_format, tail=args.tail,
                                    state_names=_split_names(args.state_names),
                                    action_names=_split_names(args.action_names),
                                    condition_names=_split_names(args.condition_names))
            report.update({k: v for k, v in _info(args.output).items() if k == "episode_return"})
        elif args.dataset_command == "probe":
            from planner_runtime import history_probe
            from planner_runtime.dataset import load_dataset

            kw = {k: v for k, v in (("features", args.features), ("rows", args.rows)) if v is not None}
            report = history_probe.probe(load_dataset(args.file, checksum=False), args.history, seed=args.seed, **kw)
        else:
            report = _info(args.file)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    elif args.dataset_command == "probe":
        print(history_probe.table(report))
    else:
        _print_report(report, args.dataset_command == "import")
    return 0
