"""Ingest on a big store: the bench load on an empty store and on a prefilled one, alternated.

    python -m benchmarks.bigstore                        # 2M entries, 2,999 devices, 3 pairs
    python -m benchmarks.bigstore --devices 300000       # 2M entries over 300k devices
    python -m benchmarks.bigstore --entries 200000 --rounds 1 --duration 3     # a quick look
    python -m benchmarks.bigstore --store /tmp/big.db    # fill once, reuse in later runs
    python -m benchmarks.bigstore --before /tmp/old      # also the big store on older code

The store is filled once per run by the query API benchmark's filler (`api_scale.fill_sqlite`):
requests 0 to N-1 of the bench mix, each device drawn from ``--devices``, with their real
idempotency keys and dedupe slots, every tracker applied, all delivered. Each "big" run gets a
fresh copy of that file; each "empty" run a new store. Both get the same load: `run.py`'s wrk
mix with device ids from the same pool of ``--devices``, numbered from N on (so no request
duplicates a stored one). The runs alternate (empty, big, big, empty, ...). With ``--before DIR``
(a checkout of an earlier iotpush, e.g. ``git worktree add DIR COMMIT``), a third kind of run,
``before``, serves a copy of the big store with that code (its ``src`` first on the server's
``PYTHONPATH``): before and after in the same run. (The filled store is made by this code's
migrations: the earlier code must read its schema version.)

Per run: ``ok/s``, the server's CPU per notification (user + system time of its process from
the load's start until its handlers caught up, divided by the notifications handled), its read
system calls and bytes written per notification (``/proc/PID/io``: SQLite reads pages with
``pread``, so the difference between big and empty is the pages SQLite read from the file), and
the ratio of each kind / empty in its round. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import api_scale, bodies
from benchmarks.run import end_to_end, machine, plan, write_results
from benchmarks.servers import ROOT, BenchError, Server, iotpush_command, pinning, process_tree
from benchmarks.wrk import ensure_wrk, run_wrk

RESULTS = Path(__file__).resolve().parent / "results" / "bigstore.json"
KINDS = ["empty", "big"]
BEFORE = "before"
TICK = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bigstore", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--entries", type=int, default=2_000_000, help="in the big store [%(default)s]")
    p.add_argument(
        "--devices",
        type=int,
        default=bodies.DEVICES,
        help="device pool of the stored entries and of the load [%(default)s]",
    )
    p.add_argument("--rounds", type=int, default=3, help="pairs of runs [%(default)s]")
    p.add_argument("--duration", type=int, default=10, help="seconds per run [%(default)s]")
    p.add_argument("--connections", type=int, default=64, help="wrk connections [%(default)s]")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="most seconds to wait for the handlers after the load [%(default)s]",
    )
    p.add_argument(
        "--store",
        type=Path,
        help="fill this file and keep it, or reuse it if it exists (its entries decide N)",
    )
    p.add_argument(
        "--before",
        type=Path,
        help="a checkout of earlier iotpush code: also run the big store on it",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file [%(default)s]")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = p.parse_args(argv)
    if args.before is not None and not (args.before / "src" / "iotpush").is_dir():
        p.error(f"--before {args.before}: no src/iotpush there")
    args.kinds = [*KINDS, BEFORE] if args.before is not None else KINDS
    if min(args.entries, args.devices, args.rounds, args.duration, args.connections) < 1:
        p.error("--entries, --devices, --rounds, --duration and --connections must be positive")
    return args


def filled(args: argparse.Namespace, workroot: Path) -> tuple[Path, int]:
    """The prefilled store (made now unless ``--store`` names an existing file) and how many
    requests of the mix it holds."""
    path = args.store or workroot / "big.db"
    if not path.exists():
        now = time.time()
        began = time.perf_counter()
        print(f"filling {path}: {args.entries:,} entries, {args.devices:,} devices", flush=True)
        api_scale.fill_sqlite(path, args.entries, args.devices, now - 86400.0, 86400.0)
        print(f"filled in {time.perf_counter() - began:.0f} s", flush=True)
    conn = sqlite3.connect(path)
    try:
        (last,) = conn.execute("SELECT max(id) FROM inbox").fetchone()
    finally:
        conn.close()
    return path, int(last or 0)


def sample(server: Server) -> dict[str, float]:
    """CPU seconds and I/O counters of the server's processes, now."""
    total = {"cpu": 0.0, "syscr": 0.0, "rchar": 0.0, "wchar": 0.0, "write_bytes": 0.0}
    for pid in process_tree(server.process.pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            io = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total["cpu"] += (int(fields[11]) + int(fields[12])) / TICK
        for line in io.splitlines():
            name, _, value = line.partition(":")
            if name in total:
                total[name] += float(value)
    return total


def measure(
    kind: str, round_: int, big: Path, mix: Path, args: argparse.Namespace, ctx: dict[str, Any]
) -> dict[str, Any]:
    """One run: a store (``big``'s copy or none), the server, the load, the drain."""
    workdir = ctx["workroot"] / f"{kind}-{round_}"
    workdir.mkdir()
    env: dict[str, str] = {}
    if kind != "empty":
        shutil.copyfile(big, workdir / "bench.db")
    if kind == BEFORE:  # that code first; the benchmark's receiver from here
        env["PYTHONPATH"] = os.pathsep.join([str(args.before.resolve() / "src"), str(ROOT)])
    load_before = os.getloadavg()[0]
    server = Server.start("iotpush", workdir, ctx["server_pin"], env)
    try:
        before = sample(server)
        load, _ = run_wrk(
            ctx["wrk"], server.url, mix, args.duration, args.connections, ctx["load_pin"]
        )
        e2e = end_to_end(server, load, time.time(), args.drain_timeout)
        after = sample(server)
        exited = server.exited
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    handled = max(1, int(e2e["handled"]))
    delta = {name: after[name] - value for name, value in before.items()}
    problems = []
    if exited:
        problems.append(f"the server exited (code {exited[0]})")
    if load.errors:
        problems.append(f"{load.errors:,} errors")
    return {
        "kind": kind,
        "round": round_,
        "ok_rps": load.ok_rps,
        "p99_ms": load.p99,
        "accepted": load.ok,
        "handled": e2e["handled"],
        "cpu_us": delta["cpu"] * 1e6 / handled,
        "reads": delta["syscr"] / handled,
        "read_bytes": delta["rchar"] / handled,
        "written_bytes": delta["wchar"] / handled,
        "load_average": [load_before, os.getloadavg()[0]],
        "problems": problems,
    }


def summarize(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    """Medians per kind, and of each kind's ratios to the empty store's run of its round."""
    summary: dict[str, Any] = {"ratios": {}, "ratio": {}}
    for kind in kinds:
        mine = [r for r in runs if r["kind"] == kind]
        summary[kind] = {
            name: statistics.median(r[name] for r in mine)
            for name in ("ok_rps", "cpu_us", "reads", "written_bytes")
        }
        if kind == "empty":
            continue
        ratios: dict[str, list[float]] = {"ok_rps": [], "cpu_us": []}
        for run in mine:
            empty = next(r for r in runs if r["round"] == run["round"] and r["kind"] == "empty")
            for name, values in ratios.items():
                if empty[name]:
                    values.append(run[name] / empty[name])
        summary["ratios"][kind] = ratios
        summary["ratio"][kind] = {name: statistics.median(v) for name, v in ratios.items() if v}
    return summary


def table(summary: dict[str, Any], kinds: list[str]) -> str:
    """The medians as a table, with the ratios."""
    lines = [
        f"{'store':<8}{'ok/s':>9}{'CPU us/notif':>14}{'reads/notif':>13}{'written B/notif':>17}"
    ]
    for kind in kinds:
        s = summary[kind]
        lines.append(
            f"{kind:<8}{s['ok_rps']:>9,.0f}{s['cpu_us']:>14.0f}{s['reads']:>13.1f}"
            f"{s['written_bytes']:>17,.0f}"
        )
    for kind, ratio in summary["ratio"].items():
        each = ", ".join(f"{r:.2f}" for r in summary["ratios"][kind]["ok_rps"])
        lines.append(
            f"{kind} / empty: ok/s {ratio['ok_rps']:.2f} (each round: {each}),"
            f" CPU per notification {ratio['cpu_us']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Fill (or find) the big store, run the pairs, print and write the figures."""
    args = parse_args(argv)
    try:
        iotpush_command()
        wrk = ensure_wrk()
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    server_pin, load_pin = pinning(not args.no_pin)
    workroot = Path(tempfile.mkdtemp(prefix="iotpush-bigstore-"))
    started = time.time()
    try:
        big, first = filled(args, workroot)
        mix = workroot / "mix-table.lua"
        bodies.write_lua(mix, devices=args.devices, first=first)
        ctx = {"workroot": workroot, "wrk": wrk, "server_pin": server_pin, "load_pin": load_pin}
        size = big.stat().st_size
        print(
            f"bigstore: {first:,} entries ({size / 2**20:,.0f} MiB) vs empty, load over"
            f" {args.devices:,} devices; {args.rounds} pair(s) of {args.duration} s,"
            f" {args.connections} connections",
            flush=True,
        )
        runs = []
        order = plan(args.kinds, args.rounds)  # type: ignore[arg-type]
        for i, (round_, kind) in enumerate(order, 1):
            run = measure(kind, round_, big, mix, args, ctx)
            runs.append(run)
            print(
                f"  [{i}/{len(order)}] round {round_ + 1} {kind:<6}{run['ok_rps']:>8,.0f} ok/s"
                f"  CPU {run['cpu_us']:>5.0f} us  reads {run['reads']:>5.1f}"
                f"  written {run['written_bytes']:>7,.0f} B per notification"
                f"  load avg {run['load_average'][0]:.2f}"
                + (f"  ({'; '.join(run['problems'])})" if run["problems"] else ""),
                flush=True,
            )
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    summary = summarize(runs, args.kinds)
    print()
    print(table(summary, args.kinds))
    meta = {
        "started_at": started,
        "finished_at": time.time(),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "entries": first,
        "store_bytes": size,
    }
    write_results(args.out, {"meta": meta, "runs": runs, "summary": summary})
    print(f"\nresults: {args.out}")
    print(json.dumps(summary["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
