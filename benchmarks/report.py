"""From runs to results: medians per config, ratios within a round, the table and the targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

LOAD_FIELDS = ("rps", "ok_rps", "p50", "p90", "p99", "p999", "max", "mean", "errors", "requests")
E2E_FIELDS = (
    "accepted",
    "published",
    "handled_during",
    "handled",
    "backlog_at_end",
    "delay_p50_ms",
    "delay_p99_ms",
    "delay_max_ms",
    "sustained_rate",
    "drain_s",
    "inbox_bytes",
    "bytes_per_notification",
    "held_us_per_entry",
    "held_transactions",
    "server_cpu_us",
    "server_cores",
    "postgres_cpu_us",
    "postgres_cores",
)

# The goals of issue 5.
INGEST_VS_BASELINE = 0.60
INGEST_VS_LEGACY = 6.0
P99_ACK_MS = 5.0
SUSTAINED_RATE = 15_000.0
BACKLOG_FRACTION = 0.05  # "not growing": under 5% of what was accepted still waits at load end
RSS_GROWTH = 0.10


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by nearest rank, or None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratios(runs: list[dict[str, Any]], config: str, other: str) -> list[float]:
    # Each config against the other of the *same round*: both saw the same machine state.
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["config"]] = run["load"]["ok_rps"]
    return [r[config] / r[other] for r in by_round.values() if config in r and r.get(other, 0) > 0]


def summarize(runs: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    """Median of every figure per config over its runs, plus ratios to baseline and legacy."""
    summary: dict[str, dict[str, Any]] = {}
    for config in configs:
        mine = [run for run in runs if run["config"] == config]
        if not mine:
            continue
        row: dict[str, Any] = {"runs": len(mine)}
        for name in LOAD_FIELDS:
            row[name] = _median([run["load"][name] for run in mine])
        row["peak_rss"] = _median([run["peak_rss"] for run in mine])
        row["x_baseline"] = _median(_ratios(runs, config, "baseline"))
        row["x_legacy"] = _median(_ratios(runs, config, "legacy"))
        e2e = [run["e2e"] for run in mine if run.get("e2e")]
        if e2e:
            row["e2e"] = {name: _median([e.get(name) for e in e2e]) for name in E2E_FIELDS}
        summary[config] = row
    return summary


def _target(name: str, value: float | None, goal: str, passed: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "passed": passed}


def targets(summary: dict[str, dict[str, Any]], connections: int) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it was met (None: not run)."""
    out: list[dict[str, Any]] = []
    iot = summary.get("iotpush")
    if iot is None:
        return out
    vs_base, vs_legacy = iot.get("x_baseline"), iot.get("x_legacy")
    out.append(
        _target(
            "iotpush ingest vs baseline",
            vs_base,
            f">= {INGEST_VS_BASELINE:.2f}x",
            None if vs_base is None else vs_base >= INGEST_VS_BASELINE,
        )
    )
    out.append(
        _target(
            "iotpush ingest vs legacy",
            vs_legacy,
            f">= {INGEST_VS_LEGACY:g}x",
            None if vs_legacy is None else vs_legacy >= INGEST_VS_LEGACY,
        )
    )
    p99 = iot.get("p99")
    # A server that answered nothing has no latency figures, and has certainly missed the goal.
    met = (p99 <= P99_ACK_MS) if p99 is not None else (False if not iot["requests"] else None)
    out.append(
        _target(
            f"iotpush p99 ack at {connections} connections (ms)",
            p99,
            f"<= {P99_ACK_MS:g} ms",
            met,
        )
    )
    e2e = iot.get("e2e")
    if e2e:
        rate, backlog, accepted = e2e["sustained_rate"], e2e["backlog_at_end"], e2e["accepted"]
        keeps_up = backlog is not None and accepted and backlog <= BACKLOG_FRACTION * accepted
        out.append(
            _target(
                "iotpush sustained end to end (/s)",
                rate,
                f">= {SUSTAINED_RATE:,.0f}/s, backlog at load end <= "
                f"{BACKLOG_FRACTION:.0%} of accepted (was {backlog or 0:,.0f})",
                bool(rate and rate >= SUSTAINED_RATE and keeps_up),
            )
        )
    return out


def soak_target(growth: float | None) -> dict[str, Any]:
    """The memory goal of the soak mode."""
    return _target(
        "iotpush RSS growth in soak",
        growth,
        f"< {RSS_GROWTH:.0%}",
        None if growth is None else growth < RSS_GROWTH,
    )


def _num(value: float | None, spec: str, width: int) -> str:
    return ("-" if value is None else format(value, spec)).rjust(width)


def _mb(value: float | None) -> str:
    return "-" if not value else f"{value / 2**20:.0f} MB"


def table(summary: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width text table, one row per config, and iotpush's end to end."""
    head = (
        f"{'config':<12}{'req/s':>9}{'ok/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'errors':>8}{'x base':>8}{'x legacy':>9}{'peak RSS':>10}"
    )
    lines = [head, "-" * len(head)]
    for config, r in summary.items():
        lines.append(
            f"{config:<12}{_num(r['rps'], ',.0f', 9)}{_num(r['ok_rps'], ',.0f', 9)}"
            f"{_num(r['p50'], '.2f', 8)}{_num(r['p99'], '.2f', 8)}{_num(r['max'], '.1f', 8)}"
            f"{_num(r['errors'], ',.0f', 8)}{_num(r['x_baseline'], '.2f', 8)}"
            f"{_num(r['x_legacy'], '.2f', 9)}{_mb(r['peak_rss']).rjust(10)}"
        )
    for config, r in summary.items():
        e = r.get("e2e")
        if not e:
            continue
        share = (e["handled"] or 0) / e["accepted"] if e["accepted"] else 0.0
        lines += [
            "",
            f"{config} end to end: handled {_num(e['handled'], ',.0f', 0)} of "
            f"{_num(e['accepted'], ',.0f', 0)} accepted ({share:.1%}); "
            f"{_num(e['handled_during'], ',.0f', 0)} while loading, "
            f"{_num(e['backlog_at_end'], ',.0f', 0)} waiting at load end, "
            f"last one {_num(e['drain_s'], '.1f', 0)} s after it",
            f"  ack -> handler delay p50 {_num(e['delay_p50_ms'], '.1f', 0)} ms, "
            f"p99 {_num(e['delay_p99_ms'], '.1f', 0)} ms; "
            f"sustained delivery {_num(e['sustained_rate'], ',.0f', 0)}/s; "
            f"inbox {_num(e['bytes_per_notification'], ',.0f', 0)} B/notification",
        ]
        if e.get("server_cpu_us") is not None:
            cpu = (
                f"  CPU during the load: server {_num(e['server_cpu_us'], ',.0f', 0)} µs per"
                f" request ({_num(e['server_cores'], '.2f', 0)} cores)"
            )
            if e.get("postgres_cpu_us") is not None:
                cpu += (
                    f", PostgreSQL {_num(e['postgres_cpu_us'], ',.0f', 0)} µs"
                    f" ({_num(e['postgres_cores'], '.2f', 0)} cores)"
                )
            lines.append(cpu)
        if e.get("published") is not None:
            lines.append(f"  published to JetStream: {_num(e['published'], ',.0f', 0)}")
        if e.get("held_us_per_entry") is not None:
            lines.append(
                f"  held for the whole cluster: {_num(e['held_us_per_entry'], '.1f', 0)} µs"
                f" per entry ({_num(e['held_transactions'], ',.0f', 0)} transactions)"
            )
    return "\n".join(lines)


def target_lines(results: list[dict[str, Any]]) -> str:
    """One line per target: PASS, FAIL or n/a, the value and the goal."""
    lines = []
    for t in results:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        value = t["value"]
        shown = (
            "-" if value is None else (f"{value:.1%}" if "RSS" in t["target"] else f"{value:,.2f}")
        )
        lines.append(f"  [{mark}] {t['target']}: {shown} (goal {t['goal']})")
    return "\n".join(lines)
