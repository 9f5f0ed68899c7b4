"""Start-up on a big store: how long ``iotpush serve`` takes to accept its first push, and what
it reads on the way, on an empty store and on a prefilled one, alternated.

    python -m benchmarks.startup --store /tmp/big.db                # SQLite, 2M entries
    python -m benchmarks.startup --store /tmp/big.db --postgres postgresql://127.0.0.1:5432/test
    python -m benchmarks.startup --store /tmp/big.db --before /tmp/old   # and on older code

The big store is `bigstore`'s (``--store FILE`` reuses it; without it one of ``--entries`` is
filled first). With ``--postgres URL`` it is also copied once into a schema of its own there
(`api_scale.copy_to_postgres`), beside an empty schema. Each run starts the server on its store
(one copy of the big file for every run, a new empty file each; the same two schemas on
PostgreSQL: a start writes a few rows) and posts one push until it is answered 200.

Per run: the seconds from the spawn to that 200; on SQLite the bytes the server's processes read
(``rchar`` of ``/proc/PID/io``: SQLite reads its pages with ``pread``; the empty store's figure is
what Python's imports read); on PostgreSQL the 8 KiB blocks the database read for the schema's
tables and indexes (``pg_statio_user_tables``, hits and reads, taken after the server stopped).
With ``--before DIR`` (a checkout of earlier code, e.g. ``git worktree add DIR COMMIT``) each
kind also runs on that code (its ``src`` first on ``PYTHONPATH``), in the same alternation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import api_scale, bodies, services
from benchmarks.bigstore import filled
from benchmarks.run import machine, plan, write_results
from benchmarks.servers import ROOT, BenchError, free_port, iotpush_command, process_tree

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
BLOCK = 8192


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.startup", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--entries", type=int, default=2_000_000, help="in the big store [%(default)s]")
    p.add_argument("--devices", type=int, default=bodies.DEVICES, help="[%(default)s]")
    p.add_argument("--store", type=Path, help="the big SQLite store: fill it, or reuse it")
    p.add_argument("--postgres", help="also on PostgreSQL at this URL (schemas of their own)")
    p.add_argument("--before", type=Path, help="a checkout of earlier iotpush code: also run it")
    p.add_argument("--rounds", type=int, default=3, help="runs of each kind [%(default)s]")
    p.add_argument("--timeout", type=float, default=120.0, help="most seconds to start [120]")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file [%(default)s]")
    args = p.parse_args(argv)
    if args.before is not None and not (args.before / "src" / "iotpush").is_dir():
        p.error(f"--before {args.before}: no src/iotpush there")
    if min(args.entries, args.devices, args.rounds) < 1:
        p.error("--entries, --devices and --rounds must be positive")
    return args


def _blocks(store: services.Store) -> int:
    """Blocks read (hit or not) for the tables and indexes of ``store``'s schema so far."""
    sql = (
        "SELECT coalesce(sum(coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)"
        " + coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0)"
        " + coalesce(toast_blks_read, 0) + coalesce(toast_blks_hit, 0)), 0)"
        f" FROM pg_statio_user_tables WHERE schemaname = '{store.schema}'"  # our own name
    )
    return int(store._execute(sql))


def _rchar(pid: int) -> tuple[int, int]:
    """Bytes and read calls of ``pid``'s process tree so far."""
    total = [0, 0]
    for child in process_tree(pid):
        try:
            io = Path(f"/proc/{child}/io").read_text()
        except OSError:
            continue
        for line in io.splitlines():
            name, _, value = line.partition(":")
            if name in ("rchar", "syscr"):
                total[name == "syscr"] += int(value)
    return total[0], total[1]


def _accepted(url: str, body: bytes) -> bool:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def measure(
    kind: str, code: str, store: str, args: argparse.Namespace, n: int, pg: services.Store | None
) -> dict[str, Any]:
    """One start: spawn, post until 200, read the figures, stop."""
    port = free_port()
    template = bodies.build_mix()[0]
    body = bodies.render(template, 10**9 + n, args.devices)  # a request no store holds
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTPUSH_")}
    paths = [str(ROOT)] if code == "after" else [str(args.before.resolve() / "src"), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    cmd = [iotpush_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--store", store, "--log-level", "warning"]
    blocks_before = _blocks(pg) if pg is not None else 0
    load = os.getloadavg()[0]
    began = time.perf_counter()
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}{template.path}"
        while not _accepted(url, body):
            if process.poll() is not None:
                raise BenchError(f"the server exited: {process.stderr.read().decode()[-500:]}")
            if time.perf_counter() - began > args.timeout:
                raise BenchError(f"no push accepted within {args.timeout:g} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - began
        rchar, syscr = _rchar(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    run: dict[str, Any] = {"kind": kind, "code": code, "seconds": seconds, "load": load}
    if pg is None:
        run.update(read_bytes=rchar, read_calls=syscr)
    else:
        time.sleep(1.0)  # a backend's counts reach the statistics when it exits
        run["blocks"] = _blocks(pg) - blocks_before
    return run


def main(argv: list[str] | None = None) -> int:
    """Fill (or find) the big store, run the starts, print and write the figures."""
    args = parse_args(argv)
    workroot = Path(tempfile.mkdtemp(prefix="iotpush-startup-"))
    schemas: dict[str, services.Store] = {}
    runs: list[dict[str, Any]] = []
    try:
        iotpush_command()
        big, entries = filled(args, workroot)
        served = workroot / "served.db"  # the runs' copy: each start adds an entry to it
        shutil.copyfile(big, served)
        kinds = ["sqlite-empty", "sqlite-big"]
        if args.postgres:
            for name in ("empty", "big"):
                schemas[name] = services.Store.create(args.postgres, workroot / name)
            print(f"copying {entries:,} entries to PostgreSQL", flush=True)
            api_scale.copy_to_postgres(big, schemas["big"].url)
            kinds += ["pg-empty", "pg-big"]
        codes = ["after"] if args.before is None else ["before", "after"]
        configs = [f"{kind}/{code}" for kind in kinds for code in codes]
        print(f"startup: {entries:,} entries ({big.stat().st_size / 2**20:,.0f} MiB)", flush=True)
        for i, (round_, config) in enumerate(plan(configs, args.rounds), 1):  # type: ignore[arg-type]
            kind, code = config.split("/")
            pg = schemas[kind.removeprefix("pg-")] if kind.startswith("pg-") else None
            if pg is not None:
                store = pg.url
            else:
                path = served if kind == "sqlite-big" else workroot / f"run-{i}.db"
                store = f"sqlite:///{path}"
            run = measure(kind, code, store, args, i, pg)
            run["round"] = round_
            runs.append(run)
            read = (
                f"{run['read_bytes'] / 2**20:8.1f} MiB read"
                if pg is None
                else f"{run['blocks'] * BLOCK / 2**20:8.1f} MiB of blocks"
            )
            print(
                f"  [{i}] {config:<20} {run['seconds']:6.2f} s to the first 200  {read}"
                f"  load avg {run['load']:.2f}",
                flush=True,
            )
            if kind == "sqlite-empty":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for schema in schemas.values():
            schema.drop()
        shutil.rmtree(workroot, ignore_errors=True)
    summary: dict[str, Any] = {}
    for name in dict.fromkeys(f"{r['kind']}/{r['code']}" for r in runs):
        mine = [r for r in runs if f"{r['kind']}/{r['code']}" == name]
        figure = "read_bytes" if "read_bytes" in mine[0] else "blocks"
        summary[name] = {
            "seconds": statistics.median(r["seconds"] for r in mine),
            figure: statistics.median(r[figure] for r in mine),
        }
    print()
    for name, figures in summary.items():
        amount = figures.get("read_bytes", figures.get("blocks", 0) * BLOCK) / 2**20
        print(f"{name:<20} median {figures['seconds']:6.2f} s  {amount:8.1f} MiB")
    meta = {"machine": machine(), "entries": entries, "settings": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}  # fmt: skip
    write_results(args.out, {"meta": meta, "runs": runs, "summary": summary})
    print(f"\nresults: {args.out}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
