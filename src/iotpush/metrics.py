"""Prometheus metrics: the pipeline's events counted, the store's figures read at scrape time.

One `Metrics` per app, with a registry of its own (never the client library's global one), so
that tests and several apps in one process do not collide. It subscribes to the app's `Events`
for the counters and histograms; the gauges of what the store holds (entries by state, oldest
pending, quarantine, outbox backlog, commands, shadows, devices) come from an `OverviewReader` when
`/metrics` is scraped, so every process of a cluster on PostgreSQL reports the cluster's truth.

No label ever holds a device, command or entry id: types are the 22 notification types (and a
few of the newer platform), reasons a fixed set (`iotpush.events.REFUSAL_REASONS`), sinks the
configured ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._tallies import Buckets, Counts
from .events import (
    REFUSAL_REASONS,
    Answered,
    AttemptFinished,
    Dead,
    Delivered,
    Events,
    Published,
    PurgeRound,
    Received,
    Refused,
    Retried,
    SinkFailed,
)
from .overview import Overview, OverviewReader

__all__ = ["CONTENT_TYPE", "PLATFORM_DEADLINE", "Metrics", "platform_failure"]

log = logging.getLogger("iotpush.metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PLATFORM_DEADLINE: Final = 15.0
"""Seconds the platform waits for a 200 before it counts a push as failed."""

ACK_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
)  # fmt: skip
HANDLER_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
LAG_BUCKETS: Final = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip


def platform_failure(answer: Answered) -> bool | None:
    """Whether the platform counts ``answer`` as a failed push: True for a 5xx or an answer past
    its 15 s deadline, False for a 200 in time (which ends a run of failures), None otherwise (a
    4xx counts neither way)."""
    if answer.status >= 500 or answer.seconds > PLATFORM_DEADLINE:
        return True
    return False if answer.status == 200 else None


class Metrics:
    """The app's metrics: a registry fed by ``events`` and, at scrape time, by ``overview``.

    Args:
        events: The app's event surface; `Metrics` subscribes to it at once.
        overview: Reads the store's figures (cached): the gauges of every scrape.
        sinks: The configured sinks' names: their series exist from the start.
        clock: Unix time (the start value of ``iotpush_last_received_timestamp_seconds``).
        process: Also export the client library's process and platform metrics.
    """

    def __init__(
        self,
        events: Events,
        overview: OverviewReader,
        *,
        sinks: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
        process: bool = True,
    ) -> None:
        self.overview = overview
        self.registry = registry = CollectorRegistry()
        # The metrics of every push are plain numbers (`_tallies`): the listeners and the scrape
        # all run on the event loop, so they need none of the client library's locks.
        self.received = Counts(
            "iotpush_notifications_received", "Pushes committed to the inbox, by type and outcome"
            " (accepted, or duplicate: seen before, not delivered again).", ["type", "outcome"],
        )  # fmt: skip
        self.refused = Counter(
            "iotpush_requests_refused", "Requests refused, by reason.", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.ack = Buckets(
            "iotpush_ack_seconds", "From a push's arrival to its answer (the platform waits 15 s).",
            ACK_BUCKETS,
        )  # fmt: skip
        self.deliveries = Counts(
            "iotpush_deliveries", "Delivery outcomes by type: delivered, retried (an attempt"
            " failed, another follows) or dead (dead-lettered).", ["type", "outcome"],
        )  # fmt: skip
        self.handler = Buckets(
            "iotpush_handler_seconds", "Time of one handler call, by notification type.",
            HANDLER_BUCKETS, ["type"],
        )  # fmt: skip
        self.lag = Buckets(
            "iotpush_delivery_lag_seconds", "From a push's receipt to its delivery.", LAG_BUCKETS
        )
        self.published = Counter(
            "iotpush_sink_published", "Entries a sink acknowledged.", ["sink"], registry=registry
        )
        self.sink_errors = Counter(
            "iotpush_sink_errors", "Failed publish attempts of a sink.", ["sink"],
            registry=registry,
        )  # fmt: skip
        self.failures = Gauge(
            "iotpush_consecutive_failures",
            "Answers in a row the platform counts as failures (5xx, past 15 s); a 200 resets it."
            " The platform blacklists the callback URL after 10.",
            registry=registry,
        )
        self.purged = Counter(
            "iotpush_purged", "Rows retention purged: delivered inbox entries, and each tracker"
            " history's events (by table).", ["what"], registry=registry,
        )  # fmt: skip
        self.purge = Histogram(
            "iotpush_purge_seconds", "Time of one retention round (in short transactions).",
            buckets=HANDLER_BUCKETS, registry=registry,
        )  # fmt: skip
        registry.register(_TallyCollector(self))
        registry.register(_StoreCollector(self))
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.last_received = clock()
        for reason in REFUSAL_REASONS:  # every reason from the start: rate() needs the zero
            self.refused.labels(reason)
        for sink in sinks:
            self.published.labels(sink)
            self.sink_errors.labels(sink)
        self._snapshot: Overview | None = None
        self._failures = 0
        events.subscribe(self._on_answered, Answered)
        events.subscribe(self._on_received, Received)
        events.subscribe(self._on_refused, Refused)
        events.subscribe(self._on_attempt, AttemptFinished)
        events.subscribe(self._on_delivery, Delivered, Retried, Dead)
        events.subscribe(self._on_sink, Published, SinkFailed)
        events.subscribe(self._on_purge, PurgeRound)

    async def render(self) -> bytes:
        """The metrics in Prometheus's text format, with the store's figures read now (cached).

        A store that cannot be read leaves its gauges out of this scrape (and says why in the
        log) rather than failing the scrape: the counters still tell what happened.
        """
        try:
            self._snapshot = await self.overview.read()
        except Exception as exc:  # noqa: BLE001 - any store failure: serve what we know
            self._snapshot = None
            log.warning("metrics: cannot read the store's figures: %s", exc)
        return generate_latest(self.registry)

    # listeners: quick, no I/O ---------------------------------------------------------------

    def _on_answered(self, event: object) -> None:
        assert isinstance(event, Answered)
        self.ack.observe((), event.seconds)
        failed = platform_failure(event)
        if failed:
            self._failures += 1
            self.failures.set(self._failures)
        elif failed is not None and self._failures:
            self._failures = 0
            self.failures.set(0)

    def _on_received(self, event: object) -> None:
        assert isinstance(event, Received)
        self.received.inc((event.type, "duplicate" if event.duplicate else "accepted"))
        self.last_received = event.at

    def _on_refused(self, event: object) -> None:
        assert isinstance(event, Refused)
        self.refused.labels(event.reason).inc()

    def _on_attempt(self, event: object) -> None:
        assert isinstance(event, AttemptFinished)
        self.handler.observe((event.type,), event.seconds)

    def _on_delivery(self, event: object) -> None:
        assert isinstance(event, Delivered | Retried | Dead)
        self.deliveries.inc((event.type, _OUTCOMES[type(event)]))
        if isinstance(event, Delivered):
            self.lag.observe((), event.lag)

    def _on_sink(self, event: object) -> None:
        if isinstance(event, Published):
            self.published.labels(event.sink).inc(event.count)
        elif isinstance(event, SinkFailed):
            self.sink_errors.labels(event.sink).inc()

    def _on_purge(self, event: object) -> None:
        assert isinstance(event, PurgeRound)
        for what, count in event.purged.items():
            self.purged.labels(what).inc(count)
        self.purge.observe(event.seconds)


_OUTCOMES: Final[dict[type, str]] = {Delivered: "delivered", Retried: "retried", Dead: "dead"}


class _TallyCollector(Collector):
    """The metrics the listeners keep as plain numbers (`_tallies`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # collected at each scrape only

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield from (m.received.family(), m.deliveries.family())
        yield from (m.ack.family(), m.handler.family(), m.lag.family())
        yield GaugeMetricFamily(
            "iotpush_last_received_timestamp_seconds",
            "When the last push was committed (Unix seconds; the start time until one is).",
            value=m.last_received,
        )


class _StoreCollector(Collector):
    """The gauges read from the store: the snapshot `Metrics.render` took for this scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the names are only known at collection: the registry must not ask early

    def collect(self) -> Iterator[Metric]:
        view = self.metrics._snapshot
        if view is None:
            return
        yield _by("iotpush_inbox_entries", "Inbox entries by state.", "state", view.entries)
        yield GaugeMetricFamily(
            "iotpush_inbox_oldest_pending_seconds",
            "Age of the oldest entry not yet delivered (0 when there is none).",
            value=view.oldest_pending_seconds,
        )
        yield GaugeMetricFamily(
            "iotpush_quarantine_entries", "Refused requests kept in quarantine.",
            value=view.quarantined,
        )  # fmt: skip
        yield _by(
            "iotpush_sink_unpublished", "Entries waiting in a sink's outbox.", "sink",
            view.unpublished,
        )  # fmt: skip
        yield _by("iotpush_commands", "Tracked commands by state.", "state", view.commands)
        yield GaugeMetricFamily(
            "iotpush_commands_overdue", "Commands past their deadline without a final state.",
            value=view.commands_overdue,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "iotpush_shadow_unsynced",
            "Device services whose desired properties failed or are not yet confirmed.",
            value=view.shadow_unsynced,
        )
        yield _by("iotpush_devices", "Devices (not deleted) by status.", "status", view.devices)


def _by(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family
