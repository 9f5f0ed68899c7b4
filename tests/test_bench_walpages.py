"""The WAL pages benchmark: it maps each frame a commit wrote to its B-tree, and a small run
prints its table. No time is asserted."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from benchmarks import walpages

ROOT = Path(__file__).resolve().parent.parent


def test_frames_are_the_pages_one_commit_wrote(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("CREATE INDEX t_x ON t (x)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("INSERT INTO t VALUES ('a')")
    pages = walpages.frames(Path(f"{path}-wal").read_bytes())
    conn.close()
    name = walpages.owners(path)
    assert sorted(name(page) for page in pages) == ["t", "t_x"]


def test_walpages_small_run_prints_each_tree_for_both_stores(tmp_path: Path) -> None:
    out = tmp_path / "walpages.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.walpages", "--entries", "2000", "--devices", "100",
         "--appends", "300", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inbox_device" in done.stdout
    results = json.loads(out.read_text())
    assert results["meta"]["entries"] == 2000
    for kind in ("empty", "big"):
        assert results[kind]["pages"] > 0
        assert abs(sum(results[kind]["by_tree"].values()) - results[kind]["pages"]) < 1e-6
