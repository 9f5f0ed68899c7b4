"""Smoke tests of the benchmark tools: they run and produce their output. No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import api_scale, bodies, report, servers

ROOT = Path(__file__).resolve().parent.parent


def test_bodies_check_mix_is_valid_unique_and_complete() -> None:
    assert bodies.check(1_000) == []


def test_bodies_lifecycle_mix_is_valid_and_finishes_what_it_opens(tmp_path: Path) -> None:
    from iotpush import decode
    from iotpush.trackers import apply_all
    from tests.conftest import tracker_db

    assert bodies.check(1_000, lifecycles=True) == []
    mix = bodies.build_mix(lifecycles=True)
    db = tracker_db(tmp_path / "t.db")
    for n in range(3 * bodies.CYCLE):
        t = mix[n % len(mix)]
        route = "command" if t.path == bodies.COMMAND_PATH else "notify"
        apply_all(db, n + 1, float(n), decode(bodies.render(t, n), route))
    (commands,) = db.execute("SELECT count(*) FROM commands WHERE terminal = 0").fetchone()
    (upgrades,) = db.execute("SELECT count(*) FROM upgrades WHERE result IS NULL").fetchone()
    live = "SELECT device_id FROM devices WHERE device_id LIKE '%L%' AND deleted_entry_id IS NULL"
    assert (commands, upgrades) == (0, 0)
    assert {row[0].rsplit("-", 2)[-2] for row in db.execute(live)} == {"L2"}  # the last cycle's


def test_bodies_check_v5_mix_is_valid_unique_and_complete() -> None:
    assert bodies.check(1_000, v5=True) == []
    assert {t.path for t in bodies.build_mix(v5=True)} == {bodies.V5_PATH}


def test_ladder_small_run_prints_every_step() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ladder", "-n", "400", "--connections", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [line.rsplit(None, 1) for line in lines[2:]]
    assert [name.strip() for name, _ in steps] == [
        "sqlite insert (24 per commit)",
        "decode + key",
        "+ inbox append",
        "+ trackers",
        "+ app (ASGI, no dispatcher)",
        "+ dispatcher (as iotpush serve)",
    ]
    assert all(float(value) > 0 for _, value in steps)


def test_console_bench_small_store_prints_every_page(tmp_path: Path) -> None:
    from benchmarks import console

    results = tmp_path / "console.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.console", "--entries", "3000", "--rounds", "2",
         "--store", str(tmp_path / "bench.db"), "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pages = json.loads(results.read_text())["pages"]
    assert list(pages) == list(console.PAGES)
    assert all(page["p99_ms"] >= page["p50_ms"] > 0 for page in pages.values())


def test_scrape_bench_small_stores_print_the_cpu_of_a_scrape(tmp_path: Path) -> None:
    results = tmp_path / "scrape.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scrape", "--entries", "500,2000", "--scrapes", "3",
         "--dir", str(tmp_path), "--out", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sizes = json.loads(results.read_text())["sizes"]
    assert list(sizes) == ["500", "2000"]
    assert all(size["cpu_ms_median"] >= 0 and size["wall_ms_median"] > 0 for size in sizes.values())


def test_run_scrape_interval_is_parsed_and_must_be_positive() -> None:
    from benchmarks import run

    assert run.parse_args(["--scrape-interval", "15"]).scrape_interval == 15.0
    assert run.parse_args([]).scrape_interval == 1.0
    with pytest.raises(SystemExit):
        run.parse_args(["--scrape-interval", "0"])


def test_api_scale_small_run_prints_every_endpoint() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.api_scale", "--entries", "3000", "--devices", "300",
         "--requests", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    names = [line.split(" p50 ")[0].strip() for line in done.stdout.splitlines()]
    assert names == list(api_scale.endpoints({}, 1))
    assert "filled 3,000 of 3,000" in done.stderr


def test_pgcost_small_run_measures_both_sides_of_each_entry() -> None:
    from tests.conftest import postgres_server

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pgcost", "--postgres", postgres_server(), "-n", "300",
         "--warm", "50", "--connections", "8", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["n"] == 300
    assert result["iotpush_us"] > 0
    assert result["postgres_us"] > 0, "the server's processes were not found in /proc"
    assert result["threads"]["iotpush-postgres-writer"] > 0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([3.0], 99, 3.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),
        ([1.0] * 99 + [9.0], 99, 1.0),
    ],
    ids=["empty", "one", "nearest-rank-median", "p99-of-100"],
)
def test_report_percentile_cases(values: list[float], q: float, expected: float | None) -> None:
    assert report.percentile(values, q) == expected


def test_merge_scores_adds_counts_and_sums_timelines_at_every_moment() -> None:
    a = {"count": 10, "first_at": 1.0, "last_at": 5.0, "delays": [0.1],
         "timeline": [[1.0, 0], [3.0, 10]]}  # fmt: skip
    b = {"count": 4, "first_at": 2.0, "last_at": 6.0, "delays": [0.2, 0.3],
         "timeline": [[2.0, 0], [4.0, 4]]}  # fmt: skip
    merged = servers.merge_scores([a, b])
    assert merged["count"] == 14
    assert (merged["first_at"], merged["last_at"]) == (1.0, 6.0)
    assert sorted(merged["delays"]) == [0.1, 0.2, 0.3]
    # At 3.0: a has 10, b is halfway from 0 to 4.
    assert merged["timeline"] == [[1.0, 0], [2.0, 5], [3.0, 12], [4.0, 14]]


def test_faults_campaign_one_kill_on_sqlite_counts_and_loses_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", "--stores", "sqlite", "--kills", "1",
         "--interval", "1", "--rate", "100"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["store"] == "sqlite"
    assert figures["acknowledged"] == figures["stored"] == figures["delivered"]
    assert (figures["lost"], figures["dead"]) == (0, 0)
