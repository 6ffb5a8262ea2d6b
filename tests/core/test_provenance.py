"""planner_runtime.provenance.source_commit on real git checkouts made in a temporary folder."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from planner_runtime.provenance import source_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_commit_and_dirty_follow_the_named_paths(tmp_path):
    (tmp_path / "sim").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "sim" / "a.py").write_text("x = 1\n")
    (tmp_path / "docs" / "d.md").write_text("text\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)

    assert source_commit(("sim",), root=tmp_path) == head
    (tmp_path / "docs" / "d.md").write_text("changed\n")  # outside the named paths
    assert source_commit(("sim",), root=tmp_path) == head
    assert source_commit(("sim", "docs"), root=tmp_path) == head + "+dirty"
    (tmp_path / "sim" / "new.py").write_text("y = 2\n")  # untracked code counts
    assert source_commit(("sim",), root=tmp_path) == head + "+dirty"
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "second")
    assert source_commit(("sim", "docs"), root=tmp_path) == _git(tmp_path, "rev-parse", "HEAD") != head


def test_outside_a_checkout_there_is_no_commit(tmp_path):
    assert source_commit(root=tmp_path) is None
    assert source_commit(root=tmp_path / "missing") is None
