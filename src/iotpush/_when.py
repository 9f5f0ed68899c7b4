"""Reading and writing times and durations the way operators type them."""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["format_duration", "format_ts", "parse_duration", "parse_when"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``200ms``, ``90s``, ``15m``, ``48h``, ``7d`` or ``2w``.

    Raises:
        ValueError: Not a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected a duration like 200ms, 30s, 15m, 48h or 7d, got {text!r}")
    return float(match[1]) * _UNITS[match[2] or "s"]


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that writes it whole: ``48h``, ``90s``, ``200ms``."""
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def parse_when(text: str, now: float) -> float:
    """Unix time of an ISO 8601 time (UTC unless it says), a platform time, or a duration ago.

    Raises:
        ValueError: Neither a time nor a duration.
    """
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    value = text.strip()
    try:
        if re.fullmatch(r"\d{8}T\d{6}Z", value):
            moment = dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ")
        else:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected a time (2026-11-21T10:00:00Z) or a duration ago (2h, 7d), got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def format_ts(ts: float | None) -> str:
    """A Unix time as ``2026-11-21T10:00:00.123Z``; ``-`` for none."""
    if ts is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
