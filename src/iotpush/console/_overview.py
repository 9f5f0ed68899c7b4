"""The overview's figures: the store's (`iotpush.overview.read_entries`) and the live ones.

The pushes chart comes from `Live`, not the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .. import trackers
from ..inbox import Inbox
from ..overview import read_entries
from ._live import Live, Minute

__all__ = ["Bar", "Chart", "Figures", "chart", "figures"]

# Okabe-Ito: told apart with the common colour blindnesses.
PALETTE: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
OTHER_COLOUR: Final = "#999999"
WIDTH: Final = 1100
HEIGHT: Final = 150


@dataclass(frozen=True, slots=True)
class Figures:
    """What the store says: entries by state, the oldest waiting, quarantine, sinks, trackers."""

    by_state: dict[str, int]
    oldest_pending_at: float | None
    quarantined: int
    unpublished: dict[str, int]
    overdue: int
    unsynced: int


async def figures(inbox: Inbox, now: float) -> Figures:
    """The store's figures at ``now``."""
    entries = await read_entries(inbox)
    overdue = await inbox.read(lambda db: trackers.count_overdue(db, now))
    unsynced = await inbox.read(trackers.count_unsynced)
    return Figures(
        entries.by_state, entries.oldest_pending_at, entries.quarantined, entries.unpublished,
        overdue, unsynced,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bar:
    """One coloured piece of a minute's bar in the chart (SVG user units)."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """The pushes-per-minute chart: bars, the legend, the scale and a sentence saying it all."""

    bars: list[Bar]
    legend: list[tuple[str, str, int]]
    """(type, colour, pushes in the hour), the busiest first."""
    peak: int
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    ticks: list[tuple[float, str]] = field(default_factory=list)
    """(x, label) under the bars: minutes ago."""


def chart(live: Live) -> Chart:
    """The last hour's pushes per minute, stacked by type, as SVG geometry."""
    minutes: list[Minute] = live.minutes()
    totals: dict[str, int] = {}
    for minute in minutes:
        for kind, count in minute.by_type.items():
            totals[kind] = totals.get(kind, 0) + count
    ranked = sorted(totals, key=lambda kind: (-totals[kind], kind))
    colours = {kind: PALETTE[i] for i, kind in enumerate(ranked[: len(PALETTE)])}
    peak = max((sum(m.by_type.values()) for m in minutes), default=0)
    slot = WIDTH / len(minutes)
    bars: list[Bar] = []
    for i, minute in enumerate(minutes):
        y = float(HEIGHT)
        pieces: dict[str, int] = {}
        for kind, count in minute.by_type.items():
            shown = kind if kind in colours else "other"
            pieces[shown] = pieces.get(shown, 0) + count
        ago = len(minutes) - 1 - i
        for kind in sorted(pieces, key=lambda k: ranked.index(k) if k in colours else 99):
            height = HEIGHT * pieces[kind] / peak
            y -= height
            when = "this minute" if ago == 0 else f"{ago} min ago"
            bars.append(
                Bar(i * slot + 1, y, slot - 2, height, colours.get(kind, OTHER_COLOUR),
                    f"{when}: {pieces[kind]} {kind}")
            )  # fmt: skip
    legend = [(kind, colours[kind], totals[kind]) for kind in ranked[: len(PALETTE)]]
    rest = sum(totals[kind] for kind in ranked[len(PALETTE) :])
    if rest:
        legend.append(("other", OTHER_COLOUR, rest))
    ticks = [(WIDTH - (ago + 0.5) * slot, f"{ago} min ago") for ago in (45, 30, 15)]
    return Chart(bars, legend, peak, sum(totals.values()), ticks=ticks)
