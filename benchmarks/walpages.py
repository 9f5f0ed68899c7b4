"""Pages written per notification, by B-tree: the bench mix appended to an empty and a big store.

    python -m benchmarks.walpages --store /tmp/big.db        # fill once (2M entries), reuse
    python -m benchmarks.walpages --entries 200000           # a quick look on a smaller store
    python -m benchmarks.walpages --store /tmp/big.db --ordered-dedupe      # a what-if

In process and without a server: the real `SQLiteInbox` with every tracker, ``--appends``
requests of the bench mix (numbered after the big store's, devices from the same pool) appended
``--batch`` at a time, so that each group commit holds about that many, as under 64 connections.
The WAL is not checkpointed during the appends (``wal_autocheckpoint = 0``), so each commit's
frames stay in it; afterwards each frame's page is mapped to its B-tree with SQLite's ``dbstat``
(pointer-map pages, which ``auto_vacuum`` keeps and ``dbstat`` does not list, are counted as
``(pointer map)``). Frames are what a commit writes and what the next checkpoint reads back and
writes into the file, so they count the I/O a notification costs; unlike ok/s and CPU time they do
not depend on what else the machine runs. The same counts for both stores: what the big store
costs more, tree by tree.

``--ordered-dedupe`` is a what-if, not a mode of iotpush: it replaces every new slot digest,
state slots' too, by one that grows with every append (8 bytes of a counter, then 8 of the
digest), as if the dedupe index received all its keys in order; it shows what the dedupe index's
random inserts cost (the inbox orders only event slots, by their time: `ordered_digest`).
See benchmarks/README.md (the big store).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import resource
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import api_scale, bodies
from benchmarks.run import machine, write_results
from iotpush.inbox import Incoming
from iotpush.inbox import sqlite as sqlite_inbox
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.models import decode
from iotpush.server import PROJECTIONS

RESULTS = Path(__file__).resolve().parent / "results" / "walpages.json"
POINTER_MAP = "(pointer map)"
WAL_HEADER = 32
FRAME_HEADER = 24


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.walpages", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--entries", type=int, default=2_000_000, help="in the big store [%(default)s]")
    p.add_argument("--devices", type=int, default=bodies.DEVICES, help="device pool [%(default)s]")
    p.add_argument("--appends", type=int, default=5000, help="per store [%(default)s]")
    p.add_argument("--batch", type=int, default=64, help="appends in flight [%(default)s]")
    p.add_argument(
        "--store",
        type=Path,
        help="fill this file and keep it, or reuse it if it exists (its entries decide N)",
    )
    p.add_argument(
        "--ordered-dedupe",
        action="store_true",
        help="what-if: slot digests that arrive in order (see the module's docstring)",
    )
    p.add_argument("--top", type=int, default=16, help="B-trees listed [%(default)s]")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file [%(default)s]")
    args = p.parse_args(argv)
    if min(args.entries, args.devices, args.appends, args.batch, args.top) < 1:
        p.error("--entries, --devices, --appends, --batch and --top must be positive")
    return args


def filled(args: argparse.Namespace, workroot: Path) -> tuple[Path, int]:
    """The big store (made now unless ``--store`` names an existing file) and its last id."""
    path = args.store or workroot / "big.db"
    if not path.exists():
        now = time.time()
        print(f"filling {path}: {args.entries:,} entries, {args.devices:,} devices", flush=True)
        api_scale.fill_sqlite(path, args.entries, args.devices, now - 86400.0, 86400.0)
        print(flush=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (last,) = conn.execute("SELECT max(id) FROM inbox").fetchone()
    finally:
        conn.close()
    return path, int(last or 0)


def incoming(first: int, count: int, devices: int) -> list[Incoming]:
    """Requests ``first`` to ``first + count - 1`` of the bench mix, as the app appends them."""
    mix = bodies.build_mix()
    items = []
    now = time.time()
    for n in range(first, first + count):
        template = mix[n % len(mix)]
        body = bodies.render(template, n, devices)
        notification = decode(body, api_scale._route(template.path))  # type: ignore[arg-type]
        items.append(
            Incoming.from_notification(
                notification, body=body, path=template.path, headers={}, received_at=now
            )
        )
    return items


@contextmanager
def ordered_digests(on: bool) -> Iterator[None]:
    """With ``on``, the SQLite inbox's slot digests grow with each append (the what-if)."""
    if not on:
        yield
        return
    real: Callable[[str, float | None], bytes] = sqlite_inbox.ordered_digest
    counter = itertools.count(1)
    sqlite_inbox.ordered_digest = lambda slot, order: (
        struct.pack(">Q", next(counter)) + real(slot, None)[:8]
    )
    try:
        yield
    finally:
        sqlite_inbox.ordered_digest = real


def frames(wal: bytes) -> list[int]:
    """The page number of each frame of a WAL file's contents, in order."""
    (page_size,) = struct.unpack(">I", wal[8:12])
    pages, offset = [], WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        pages.append(struct.unpack(">I", wal[offset : offset + 4])[0])
        offset += FRAME_HEADER + page_size
    return pages


def owners(path: Path) -> Callable[[int], str]:
    """Which B-tree each page of the store at ``path`` belongs to (its name in ``dbstat``)."""
    conn = sqlite3.connect(path)
    try:
        owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    span = page_size // 5 + 1  # a pointer-map page, then the pages it maps

    def name(page: int) -> str:
        if page in owner:
            return str(owner[page])
        return POINTER_MAP if page >= 2 and (page - 2) % span == 0 else "(other)"

    return name


def measure(path: Path, items: list[Incoming], batch: int, ordered: bool) -> dict[str, Any]:
    """Append ``items`` to the store at ``path`` (made if missing) and count its WAL frames."""

    async def appends() -> tuple[bytes, dict[str, float]]:
        inbox = SQLiteInbox(path, projections=PROJECTIONS)
        await inbox.open()
        try:
            await inbox.transact(lambda conn: conn.execute("PRAGMA wal_autocheckpoint = 0"))
            before = resource.getrusage(resource.RUSAGE_SELF)
            reads = _reads()
            with ordered_digests(ordered):
                for i in range(0, len(items), batch):
                    await asyncio.gather(*(inbox.append(item) for item in items[i : i + batch]))
            after = resource.getrusage(resource.RUSAGE_SELF)
            cost = {
                "reads": _reads() - reads,
                "user_s": after.ru_utime - before.ru_utime,
                "system_s": after.ru_stime - before.ru_stime,
            }
            return Path(f"{path}-wal").read_bytes(), cost
        finally:
            await inbox.close()

    wal, cost = asyncio.run(appends())
    pages = frames(wal)
    name = owners(path)
    by_tree = collections.Counter(name(page) for page in pages)
    count = len(items)
    return {
        "pages": len(pages) / count,
        "by_tree": {tree: n / count for tree, n in by_tree.most_common()},
        "reads": cost["reads"] / count,
        "user_us": cost["user_s"] * 1e6 / count,
        "system_us": cost["system_s"] * 1e6 / count,
    }


def _reads() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


def table(empty: dict[str, Any], big: dict[str, Any], top: int) -> str:
    """Pages per notification of each store, tree by tree, the biggest differences first."""
    trees = set(empty["by_tree"]) | set(big["by_tree"])
    order = sorted(
        trees, key=lambda t: big["by_tree"].get(t, 0.0) - empty["by_tree"].get(t, 0.0), reverse=True
    )
    lines = [f"{'WAL pages per notification':<36}{'empty':>8}{'big':>8}{'big - empty':>13}"]
    for tree in order[:top]:
        e, b = empty["by_tree"].get(tree, 0.0), big["by_tree"].get(tree, 0.0)
        lines.append(f"  {tree:<34}{e:>8.2f}{b:>8.2f}{b - e:>+13.2f}")
    e, b = empty["pages"], big["pages"]
    lines.append(f"  {'all':<34}{e:>8.2f}{b:>8.2f}{b - e:>+13.2f}")
    lines.append(
        f"{'reads per notification':<36}{empty['reads']:>8.1f}{big['reads']:>8.1f}"
        f"{big['reads'] - empty['reads']:>+13.1f}"
    )
    for what in ("user", "system"):
        e, b = empty[f"{what}_us"], big[f"{what}_us"]
        lines.append(f"{what + ' CPU us per notification':<36}{e:>8.0f}{b:>8.0f}{b - e:>+13.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Fill (or find) the big store, append to a copy of it and to an empty store, print."""
    args = parse_args(argv)
    workroot = Path(tempfile.mkdtemp(prefix="iotpush-walpages-"))
    started = time.time()
    try:
        source, first = filled(args, workroot)
        items = incoming(first, args.appends, args.devices)
        big = workroot / "copy.db"
        shutil.copyfile(source, big)
        results = {
            "empty": measure(workroot / "empty.db", items, args.batch, args.ordered_dedupe),
            "big": measure(big, items, args.batch, args.ordered_dedupe),
        }
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    what = " (what-if: ordered slot digests)" if args.ordered_dedupe else ""
    print(
        f"walpages: {args.appends:,} appends, {args.batch} in flight, to an empty store and to"
        f" one of {first:,} entries over {args.devices:,} devices{what}"
    )
    print(table(results["empty"], results["big"], args.top))
    meta = {
        "started_at": started,
        "finished_at": time.time(),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "entries": first,
    }
    write_results(args.out, {"meta": meta, **results})
    print(f"\nresults: {args.out}")
    print(json.dumps({kind: round(r["pages"], 3) for kind, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
