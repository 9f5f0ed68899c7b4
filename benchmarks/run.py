"""Run the benchmark: iotpush vs a bare ASGI app vs the vendor SDK pattern, on one machine.

    python benchmarks/run.py                  # 3 rounds of 10 s per config, medians
    python benchmarks/run.py --quick          # 1 round of 3 s, for development
    python benchmarks/run.py --configs baseline,legacy --duration 5 --connections 32
    python benchmarks/run.py --soak 300       # iotpush at half its max rate: memory over time

Prints a table and writes JSON to benchmarks/results/latest.json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bodies, report
from benchmarks.servers import (
    ALL_CONFIGS,
    CONFIGS,
    IOTPUSH_CONFIGS,
    BenchError,
    ConfigName,
    Server,
    count_at,
    cpu_spent,
    iotpush_command,
    pinning,
)
from benchmarks.wrk import LoadResult, ensure_wrk, run_wrk

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
STALL = 3.0  # seconds without a new delivery after which draining is over


@dataclass(frozen=True)
class Bench:
    """What every run of one invocation shares."""

    wrk: str
    mix_file: Path
    workroot: Path
    server_pin: list[str]
    load_pin: list[str]
    duration: int
    connections: int
    drain_timeout: float
    iotpush_env: dict[str, str]
    postgres: str | None = None
    nats: str | None = None
    mix_v5_file: Path | None = None
    scrape_interval: float = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` sets the defaults it implies."""
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated configs to run, of {', '.join(ALL_CONFIGS)} [%(default)s]",
    )
    p.add_argument(
        "--postgres",
        default=os.environ.get("IOTPUSH_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test"),
        help="PostgreSQL server of the iotpush-pg configs (a schema per run) [%(default)s]",
    )
    p.add_argument(
        "--nats",
        default=os.environ.get("IOTPUSH_BENCH_NATS", "nats://127.0.0.1:4222"),
        help="NATS server of the iotpush-nats config (a stream per run) [%(default)s]",
    )
    p.add_argument("--quick", action="store_true", help="1 round of 3 s per config")
    p.add_argument("--rounds", type=int, default=None, help="rounds per config [3; quick: 1]")
    p.add_argument("--duration", type=int, default=None, help="seconds per run [10; quick: 3]")
    p.add_argument("--connections", type=int, default=64, help="wrk connections [%(default)s]")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="most seconds to wait for iotpush's handlers after the load [%(default)s]",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file [%(default)s]")
    p.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        default=None,
        help="instead: run iotpush at a fixed rate this long and watch its memory",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="soak rate per second [half the max rate measured first]",
    )
    p.add_argument(
        "--retention",
        metavar="DURATION",
        default=None,
        help="iotpush's --retention (0: off) [its default, 7d]; --soak shows the store's size",
    )
    p.add_argument(
        "--lifecycles",
        action="store_true",
        help="--soak with the mix whose commands, upgrades and devices finish (benchmarks/bodies)",
    )
    p.add_argument(
        "--finished-retention",
        metavar="DURATION",
        default=None,
        help="iotpush's --finished-retention (0: off) [its default, 30d]",
    )
    p.add_argument(
        "--purge-interval",
        metavar="DURATION",
        default=None,
        help="iotpush's --purge-interval [its default, 5m]",
    )
    p.add_argument(
        "--sync-handler",
        action="store_true",
        help="iotpush's handler as a plain function (run in its thread pool), not async",
    )
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=1.0,
        help="seconds between two scrapes of iotpush's /metrics during the load (Prometheus's"
        " default is 15) [%(default)s]",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, db)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.scrape_interval <= 0:
        p.error("--rounds, --duration, --connections and --scrape-interval must be positive")
    if args.soak is not None and (args.soak <= 0 or (args.rate is not None and args.rate <= 0)):
        p.error("--soak and --rate must be positive")
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in ALL_CONFIGS]
    if unknown or not names:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(ALL_CONFIGS)}")
    args.config_list = list(dict.fromkeys(names))
    return args


def plan(configs: list[ConfigName], rounds: int) -> list[tuple[int, ConfigName]]:
    """(round, config) in run order: the order reverses every round, so no config always
    runs first (cold caches) or last (a warm, tired machine)."""
    return [(r, c) for r in range(rounds) for c in (configs if r % 2 == 0 else configs[::-1])]


def end_to_end(server: Server, load: LoadResult, load_end: float, timeout: float) -> dict[str, Any]:
    """iotpush's delivery figures: wait (bounded) until the handlers caught up, then measure."""
    first = server.stats() or {"count": 0}
    during = int(first["count"])
    accepted = load.ok
    deadline = time.monotonic() + timeout
    count, changed = during, time.monotonic()
    while time.monotonic() < deadline and count < accepted:
        time.sleep(0.1)
        current = int((server.stats() or first)["count"])
        if current != count:
            count, changed = current, time.monotonic()
        elif time.monotonic() - changed >= STALL:
            break
    published = server.published()
    while published is not None and published < count and time.monotonic() < deadline:
        time.sleep(0.5)  # the sink's outbox drains after the handlers caught up
        now_published = server.published()
        if now_published == published:
            break
        published = now_published
    stats = server.stats() or first
    handled = int(stats["count"])
    during = count_at(stats.get("timeline", []), load_end, during)
    first_at, last_at = stats.get("first_at"), stats.get("last_at")
    span = (last_at - first_at) if first_at and last_at else 0.0
    delays_ms = [d * 1000.0 for d in stats.get("delays", [])]
    inbox = server.inbox_bytes()
    held_s, held_transactions, appends = stats.get("held") or (None, None, None)
    return {
        "accepted": accepted,
        "handled_during": during,
        "handled": handled,
        "backlog_at_end": max(0, accepted - during),
        "delay_p50_ms": report.percentile(delays_ms, 50),
        "delay_p99_ms": report.percentile(delays_ms, 99),
        "delay_max_ms": max(delays_ms, default=None),
        "delay_sample": len(delays_ms),
        "sustained_rate": handled / span if span > 0 else None,
        "delivery_rate_loading": during / load.duration,
        "drain_s": max(0.0, last_at - load_end) if last_at else None,
        "inbox_bytes": inbox,
        "bytes_per_notification": inbox / max(handled, accepted) if handled or accepted else None,
        "published": published,
        "held_us_per_entry": held_s * 1e6 / appends if held_s is not None and appends else None,
        "held_transactions": held_transactions,
    }


def cpu_figures(cpu: tuple[float, float], load: LoadResult) -> dict[str, Any]:
    """CPU during the load: the server's and (PostgreSQL configs) its database backends', per
    request answered 2xx and as a share of one core."""
    server, database = cpu
    ok = load.ok or None
    return {
        "server_cpu_us": server * 1e6 / ok if ok else None,
        "server_cores": server / load.duration if load.duration else None,
        "postgres_cpu_us": database * 1e6 / ok if ok and database else None,
        "postgres_cores": database / load.duration if load.duration and database else None,
    }


class Scraper:
    """Scrapes ``/metrics`` every ``interval`` seconds (``--scrape-interval``: 1 s, 15 times
    Prometheus's default rate, unless told), until stopped: the metrics' cost is measured with
    the scrapes in it."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = f"{url}/metrics"
        self.interval = interval
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.count += 1
            except OSError:
                pass  # a scrape the server could not answer: not counted

    def stop(self) -> int:
        """Stop scraping; the scrapes answered."""
        self._stop.set()
        self._thread.join(10)
        return self.count


def measure(bench: Bench, round_: int, config: ConfigName) -> dict[str, Any]:
    """Start ``config``, load it, measure it, stop it: one run."""
    iotpush = config in IOTPUSH_CONFIGS
    env = bench.iotpush_env if iotpush else {}
    workdir = bench.workroot / f"{config}-{round_}"
    server = Server.start(
        config, workdir, bench.server_pin, env, postgres=bench.postgres, nats=bench.nats
    )
    scrapes_it = iotpush and config != "iotpush-nometrics"
    scraper = Scraper(server.url, bench.scrape_interval) if scrapes_it else None
    try:
        cpu_before = server.cpu() if iotpush else {}
        load, wrk_report = run_wrk(
            bench.wrk,
            server.url,
            bench.mix_v5_file if config == "iotpush-v5" and bench.mix_v5_file else bench.mix_file,
            bench.duration,
            bench.connections,
            bench.load_pin,
        )
        load_end = time.time()
        cpu = cpu_spent(cpu_before, server.cpu()) if iotpush else None
        scrapes = scraper.stop() if scraper is not None else None
        e2e = end_to_end(server, load, load_end, bench.drain_timeout) if iotpush else None
        if e2e is not None and cpu is not None:
            e2e.update(cpu_figures(cpu, load))
        memory = server.memory()
        problems = []
        if server.exited:
            problems.append(f"the server exited during the run (code {server.exited[0]})")
        if load.requests == 0:
            problems.append(f"the server answered no request in {bench.duration:g} s")
        elif load.errors and (config != "legacy" or load.errors != load.errors_by_kind["status"]):
            # legacy's 500s are the vendor defect it re-creates: in the table, not a problem.
            kinds = ", ".join(f"{n:,} {k}" for k, n in load.errors_by_kind.items() if n)
            problems.append(f"{load.errors:,} errors ({kinds})")
        # Error answers are the server's verdict (legacy's 500s); anything else needs its log.
        unanswered = load.errors - load.errors_by_kind["status"]
        want_log = bool(problems and (unanswered or not load.requests))
    finally:
        if scraper is not None:
            scraper.stop()
        exit_code = server.stop()
    log_tail = server.log_tail() if want_log else ""  # after the stop: hung requests say so
    return {
        "config": config,
        "round": round_,
        "load": load.to_json(),
        "peak_rss": memory["hwm"],
        "rss_at_end": memory["rss"],
        "e2e": e2e,
        "metrics_scrapes": scrapes,
        "server_exit": exit_code,
        "problems": problems,
        "server_log_tail": log_tail,
        "wrk_report": wrk_report,
    }


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, kernel, Python, versions of what was measured."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in ("iotpush", "uvicorn", "uvloop", "httptools", "flask", "gunicorn", "msgspec"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
        versions["wrk"] = out.split()[1] if len(out.split()) > 1 else out.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def write_results(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def compare(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    """The comparison runs, their summary, the printed table and targets."""
    runs: list[dict[str, Any]] = []
    order = plan(args.config_list, args.rounds)
    for i, (round_, config) in enumerate(order, 1):
        run = measure(bench, round_, config)
        runs.append(run)
        load = run["load"]
        p99 = "-" if load["p99"] is None else f"{load['p99']:.2f}"
        print(
            f"  [{i}/{len(order)}] round {round_ + 1} {config:<9}{load['ok_rps']:>9,.0f} ok/s"
            f"  p99 {p99:>6} ms  errors {load['errors']:,}",
            flush=True,
        )
        if run["problems"]:
            print(f"      {'; '.join(run['problems'])}", flush=True)
        if run["server_log_tail"]:
            print("      the server's last words:")
            print("\n".join("      | " + line for line in run["server_log_tail"].splitlines()))
        if i < len(order):
            time.sleep(1.0)  # let sockets in TIME_WAIT and the CPU settle
    summary = report.summarize(runs, args.config_list)
    goals = report.targets(summary, args.connections)
    print()
    print(report.table(summary))
    troubled = [r for r in runs if r["problems"]]
    if troubled:
        print("\nproblems:")
        for r in troubled:
            print(f"  {r['config']} round {r['round'] + 1}: {'; '.join(r['problems'])}")
    if goals:
        print("\ntargets:\n" + report.target_lines(goals))
    return {"runs": runs, "summary": summary, "targets": goals}


def iotpush_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment the iotpush servers get from the options (their settings' variables)."""
    env = {"IOTPUSH_BENCH_SYNC_HANDLER": "1"} if args.sync_handler else {}
    if args.retention is not None:
        env["IOTPUSH_SERVE_RETENTION"] = args.retention
    if args.finished_retention is not None:
        env["IOTPUSH_SERVE_FINISHED_RETENTION"] = args.finished_retention
    if args.purge_interval is not None:
        env["IOTPUSH_SERVE_PURGE_INTERVAL"] = args.purge_interval
    return env


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    soak = args.soak is not None
    try:
        if soak or IOTPUSH_CONFIGS.intersection(args.config_list):
            iotpush_command()
        wrk = "" if soak and args.rate else ensure_wrk()
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    server_pin, load_pin = pinning(not args.no_pin)
    workroot = Path(tempfile.mkdtemp(prefix="iotpush-bench-"))
    mix_file = workroot / "mix-table.lua"
    bodies.write_lua(mix_file)
    mix_v5_file = workroot / "mix-v5-table.lua"
    bodies.write_lua(mix_v5_file, bodies.build_mix(v5=True))
    bench = Bench(
        wrk,
        mix_file,
        workroot,
        server_pin,
        load_pin,
        args.duration,
        args.connections,
        args.drain_timeout,
        iotpush_env(args),
        args.postgres,
        args.nats,
        mix_v5_file,
        args.scrape_interval,
    )
    started = time.time()
    meta = {
        "started_at": started,
        "machine": machine(),
        "pinning": {"server": server_pin, "load": load_pin},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": {
            "per_200": dict(sorted(report_mix().items(), key=lambda kv: -kv[1])),
            "devices": bodies.DEVICES,
        },
    }
    pinned = (
        "not pinned"
        if not server_pin
        else f"server on core {server_pin[-1]}, load on core {load_pin[-1]}"
    )
    try:
        if soak:
            from benchmarks.soak import run_soak

            kept = "" if args.retention is None else f", --retention {args.retention}"
            if args.finished_retention is not None:
                kept += f", --finished-retention {args.finished_retention}"
            if args.purge_interval is not None:
                kept += f" --purge-interval {args.purge_interval}"
            print(
                f"soak: iotpush for {args.soak:g} s, {args.connections} connections, {pinned}{kept}"
            )
            if args.lifecycles:
                kept += ", the lifecycle mix"
            results = run_soak(bench, args.soak, args.rate, lifecycles=args.lifecycles)
        else:
            print(
                f"bench: {', '.join(args.config_list)}; {args.rounds} round(s) of "
                f"{args.duration:g} s, {args.connections} connections, {pinned}",
                flush=True,
            )
            results = compare(args, bench)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)
    meta["finished_at"] = time.time()
    write_results(args.out, {"meta": meta, **results})
    print(f"\nresults: {args.out}")
    missed = [t for t in results.get("targets", []) if t["passed"] is False]
    return 1 if args.strict and missed else 0


def report_mix() -> dict[str, int]:
    """How many of every 200 requests are of each type."""
    counts: dict[str, int] = {}
    for t in bodies.build_mix():
        counts[t.type] = counts.get(t.type, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
