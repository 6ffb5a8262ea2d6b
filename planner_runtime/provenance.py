"""Which source built an artifact: the git commit of this checkout, for provenance records.

Datasets (``planner-runtime collect``) and the default engine's recipe
(``python -m export.default_engine``) record it, so that a rerun can be compared with the
code that made the file; ``utc_stamp`` is the time they (and engines, recorded runs) write. Read-only git calls; ``None`` when the package is not a git
checkout (an installed wheel) or git is missing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout holding planner_runtime/, export/, robot/, sim/


def source_commit(paths: Sequence[str] = ("planner_runtime", "export", "robot", "sim"),
                  root: Path = ROOT) -> str | None:
    """HEAD of the checkout at ``root``, with "+dirty" when any of ``paths`` (relative to it)
    has uncommitted changes (untracked files included); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def utc_stamp() -> str:
    """Now in UTC as provenance records write it: ``2026-12-07T14:30:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
