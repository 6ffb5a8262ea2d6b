"""`planner-runtime info ENGINE`: the manifest, verified checksums, and profile compatibility.

Torch-free and robot-free: the engine's manifest carries the robot profile it was exported
for; ``--profile FILE.json`` checks it against another profile (the controller does the
same check against ``robot.go2_constants`` at start).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from planner_runtime.manifest import Manifest

HELP = "print an engine's manifest, verify its checksums and its robot-profile compatibility"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("engine", type=Path, help=".onnx or .plan engine")
    p.add_argument("--profile", type=Path, default=None,
                   help="robot profile JSON to check against (default: the one stored in the engine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from planner_runtime import manifest as mf
    from planner_runtime.engine import EngineError
    from planner_runtime.engine_file import engine_kind, read_manifest

    report: dict = {"engine": str(args.engine)}
    try:
        report["file_type"] = engine_kind(args.engine)
        manifest = read_manifest(args.engine, verify=True)
        report["checksums_ok"] = True
    except EngineError as exc:
        report.update(checksums_ok=False, error=str(exc))
        print(json.dumps(report) if args.json else f"error: {exc}", file=sys.stdout if args.json else sys.stderr)
        return 2
    report["manifest"] = manifest.to_dict()
    profile = mf.plain(manifest.robot.profile)
    source = "stored in the engine"
    if args.profile is not None:
        try:
            profile = json.loads(args.profile.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read profile {args.profile}: {exc}", file=sys.stderr)
            return 2
        source = str(args.profile)
    compat: dict = {"profile": (profile or {}).get("name"), "source": source}
    if profile is None:
        compat.update(ok=None, message="no robot profile stored or given")
    else:
        try:
            mf.check_profile(manifest, profile)
            compat.update(ok=True, message="compatible")
        except mf.ManifestError as exc:
            compat.update(ok=False, message=str(exc))
    report["compatibility"] = compat
    if args.json:
        print(json.dumps(report))
    else:
        print(f"engine      {args.engine} ({report['file_type']})")
        print(mf.summary(manifest))
        t = manifest.tensorrt
        if t is not None:
            print(f"tensorrt    {t.get('version')} fp16={t.get('fp16')} device={t.get('device')}")
        act = manifest.action
        gains = (f"kp {act.kp} kd {act.kd}" if act.kp is not None and act.kd is not None
                 else "PD gains not recorded (a controller refuses this engine)")
        print(f"action      target = default + scale * a; {act.name or 'unnamed'} semantics, {gains}"
              + (f" ({act.source})" if act.source else ""))
        print(f"            default pose {json.dumps(act.default_joint_pos)}")
        print(f"            scale {json.dumps(act.scale)}")
        _print_system(manifest)
        prov = manifest.provenance
        print(f"provenance  dataset sha256 {prov.get('dataset_sha256')}  created {prov.get('created_utc')}")
        print(f"            versions {json.dumps(mf.plain(prov.get('versions', {})), sort_keys=True)}")
        if rec := prov.get("recovered_from"):  # networks taken out of another engine file
            print(f"            networks from {rec.get('engine')} (sha256 {str(rec.get('engine_sha256'))[:16]}...)")
        if "graph_passes" in prov:  # exact rewrites at export (absent: an engine from before them)
            print(f"            graph passes {', '.join(prov['graph_passes']) or 'none (as traced)'}")
        print("checksums   OK (verified)")
        print(f"profile     {compat['profile']} ({source}): {compat['message']}")
    return 0 if compat.get("ok") is not False else 3


def _print_system(manifest: Manifest) -> None:
    """The control dt (and where it came from), the names, and every override."""
    ctl, obs = manifest.control, manifest.observation
    print(f"control     dt {ctl.dt} s ({ctl.dt_source or 'source not recorded'}), "
          f"chunk {ctl.chunk_size}")
    for label, names in (("states", obs.state_names), ("actions", obs.action_names),
                         ("conditions", obs.condition_names)):
        print(f"{label:11s} {', '.join(names) if names else '(none)'}")
    over = manifest.overrides
    if not over:
        print("overrides   none (every value from the data or the robot profile)")
    for key, o in over.items():
        data = o.get("data")
        said = "nothing" if data is None else data
        print(f"overrides   {key} = {o.get('value')} (the data said {said}; by {o.get('by', '?')})")
