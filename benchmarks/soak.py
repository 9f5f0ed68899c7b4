"""The soak mode: iotpush at a fixed rate for minutes, watching its memory and its backlog.

The rate is given (``--rate``) or half the maximum a short wrk probe measures first. The
fixed-rate ``pacer`` drives the load; the server's resident memory (``VmRSS``) and the handled
count are sampled every second. Growth is measured from the sample at the end of a warm-up
(10% of the soak, 30 s at most: buffers, caches and thread pools fill first) to the last sample
under load, and also as a least-squares slope over all samples after the warm-up. The SQLite
store's size (file and write-ahead log) is sampled too: with ``--retention 30s --purge-interval
5s`` (``make bench-retention``) it should stay flat once the retention is full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from benchmarks import report
from benchmarks.bigstore import sample
from benchmarks.servers import ROOT, BenchError, Server
from benchmarks.wrk import run_wrk

if TYPE_CHECKING:
    from benchmarks.run import Bench

PROBE_SECONDS = 5
SAMPLE_EVERY = 1.0


def probe_rate(bench: Bench) -> float:
    """iotpush's maximum ingest rate (2xx/s) over a short wrk run on a fresh server."""
    server = Server.start(
        "iotpush", bench.workroot / "soak-probe", bench.server_pin, bench.iotpush_env
    )
    try:
        load, _ = run_wrk(
            bench.wrk, server.url, bench.mix_file, PROBE_SECONDS, bench.connections, bench.load_pin
        )
    finally:
        server.stop()
    return load.ok_rps


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points, or None with fewer than two."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


def run_soak(
    bench: Bench, seconds: float, rate: float | None, *, lifecycles: bool = False
) -> dict[str, Any]:
    """Run the soak; print progress and a summary; return the JSON-ready results
    (``lifecycles``: the mix whose commands, upgrades and devices finish, `bodies`)."""
    if rate is None:
        top = probe_rate(bench)
        rate = top / 2
        print(f"  probe: {top:,.0f} ok/s for {PROBE_SECONDS:g} s; soaking at half: {rate:,.0f}/s")
    warmup = min(30.0, seconds * 0.1)
    server = Server.start("iotpush", bench.workroot / "soak", bench.server_pin, bench.iotpush_env)
    samples: list[dict[str, float]] = []
    try:
        time.sleep(1.0)
        idle_rss = server.memory()["rss"]
        io_start = sample(server)
        cmd = [
            *bench.load_pin,
            sys.executable,
            "-m",
            "benchmarks.pacer",
            "--url",
            server.url,
            "--rate",
            f"{rate:.3f}",
            "--duration",
            f"{seconds:g}",
            "--connections",
            str(bench.connections),
            *(["--lifecycles"] if lifecycles else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        began = time.time()
        pacer = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        every = max(10.0, seconds / 10)
        next_print = every
        try:
            while pacer.poll() is None:
                time.sleep(SAMPLE_EVERY)
                t = time.time() - began
                stats = server.stats() or {"count": 0}
                samples.append({"t": t, "rss": server.memory()["rss"], "handled": stats["count"],
                                "store": _store_bytes(server)})  # fmt: skip
                if t >= next_print:
                    next_print += every
                    s = samples[-1]
                    print(
                        f"  {t:5.0f} s  RSS {s['rss'] / 2**20:6.1f} MB  store "
                        f"{s['store'] / 2**20:7.1f} MB  handled "
                        f"{s['handled']:>10,.0f} ({s['handled'] / t:,.0f}/s)",
                        flush=True,
                    )
                if t > seconds + 60:
                    pacer.kill()
                    raise BenchError("the pacer did not finish within a minute of the soak's end")
            out, _ = pacer.communicate(timeout=10)
        finally:
            if pacer.poll() is None:
                pacer.kill()
                pacer.wait()
        load_end = time.time()
        if pacer.returncode != 0 or not out.strip():
            raise BenchError(f"the pacer failed with code {pacer.returncode}")
        load = json.loads(out.strip().splitlines()[-1])
        drained = _drain(server, load["ok"], bench.drain_timeout)
        memory = server.memory()
        io_end = sample(server)
        handled_n = max(1, int(drained.get("count", 0)))
        cpu_ms = (io_end["cpu"] - io_start["cpu"]) * 1000 / handled_n
        wchar_kb = (io_end["wchar"] - io_start["wchar"]) / 1024 / handled_n
        print(f"  server CPU {cpu_ms:.3f} ms and write() {wchar_kb:.2f} KB per notification")
    finally:
        server.stop()
    result = _summarize(seconds, rate, warmup, idle_rss, samples, load, drained, memory, load_end)
    result["soak"]["server_cpu_ms_per_notification"] = cpu_ms
    result["soak"]["server_write_kb_per_notification"] = wchar_kb
    return result


def _store_bytes(server: Server) -> int:
    """The SQLite store's size: its file and write-ahead log (0 on PostgreSQL)."""
    files = (server.workdir / "bench.db", server.workdir / "bench.db-wal")
    return sum(f.stat().st_size for f in files if f.exists())


def _drain(server: Server, accepted: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last, changed = -1, time.monotonic()
    stats: dict[str, Any] = {"count": 0}
    while time.monotonic() < deadline:
        stats = server.stats() or stats
        if stats["count"] >= accepted:
            break
        if stats["count"] != last:
            last, changed = stats["count"], time.monotonic()
        elif time.monotonic() - changed > 3.0:
            break
        time.sleep(0.2)
    return stats


def _summarize(
    seconds: float,
    rate: float,
    warmup: float,
    idle_rss: int,
    samples: list[dict[str, float]],
    load: dict[str, Any],
    stats: dict[str, Any],
    memory: dict[str, int],
    load_end: float,
) -> dict[str, Any]:
    warm = next((s for s in samples if s["t"] >= warmup), None)
    under_load = [s for s in samples if s["t"] <= seconds]
    end = under_load[-1] if under_load else None
    growth = (end["rss"] - warm["rss"]) / warm["rss"] if warm and end and warm["rss"] else None
    after = [(s["t"] / 60, s["rss"] / 2**20) for s in under_load if s["t"] >= warmup]
    slope = _slope(after)
    handled = int(stats.get("count", 0))
    last_at = stats.get("last_at")
    result = {
        "seconds": seconds,
        "rate_target": rate,
        "warmup_s": warmup,
        "load": load,
        "rss_idle": idle_rss,
        "rss_warm": warm["rss"] if warm else None,
        "rss_end": end["rss"] if end else None,
        "rss_peak": memory["hwm"],
        "rss_growth": growth,
        "rss_slope_mb_per_min": slope,
        "handled": handled,
        "drain_s": max(0.0, last_at - load_end) if last_at else None,
        "samples": samples,
    }
    goal = report.soak_target(growth)
    mb = 2**20
    lat = load["latency_ms"]
    print(
        f"\nsoak: {seconds:g} s at {rate:,.0f}/s target, {load['rate_achieved']:,.0f}/s achieved; "
        f"{load['ok']:,} ok, {load['errors']:,} errors, {load['unfinished']:,} unfinished"
    )
    print(
        f"  latency from schedule: p50 {lat['p50'] or 0:.2f} ms, p99 {lat['p99'] or 0:.2f} ms, "
        f"max {lat['max'] or 0:.1f} ms"
    )
    print(
        f"  handled {handled:,} of {load['ok']:,} accepted; last one "
        f"{result['drain_s'] or 0:.1f} s after the load ended"
    )
    if warm and end:
        print(
            f"  RSS idle {idle_rss / mb:.1f} MB, after {warmup:.0f} s warm-up "
            f"{warm['rss'] / mb:.1f} MB, at the end {end['rss'] / mb:.1f} MB, "
            f"peak {memory['hwm'] / mb:.1f} MB; "
            f"growth {growth:.1%}, slope {slope or 0:+.2f} MB/min"
        )
    if under_load:
        thirds = [under_load[0], under_load[len(under_load) // 2], under_load[-1]]
        print(
            "  start / middle / end: "
            + ", ".join(
                f"{s['t']:.0f} s: RSS {s['rss'] / mb:.1f} MB, store {s['store'] / mb:.1f} MB"
                for s in thirds
            )
        )
        result["store_start_middle_end"] = [s["store"] for s in thirds]
        result["rss_start_middle_end"] = [s["rss"] for s in thirds]
        # Retention settles within its bounds (30 s in `make bench-retention`): the second half
        # of the soak is where a bounded store is flat.
        late = [s for s in under_load if s["t"] >= seconds / 2]
        store_slope = _slope([(s["t"] / 60, s["store"] / mb) for s in late])
        rss_slope = _slope([(s["t"] / 60, s["rss"] / mb) for s in late])
        print(
            f"  second half: store {store_slope or 0:+.2f} MB/min, RSS {rss_slope or 0:+.2f} MB/min"
        )
        result["store_slope_second_half_mb_per_min"] = store_slope
        result["rss_slope_second_half_mb_per_min"] = rss_slope
    print("\ntargets:\n" + report.target_lines([goal]))
    return {"soak": result, "targets": [goal]}
