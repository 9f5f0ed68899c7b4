"""Counters and histograms for the metrics' listeners: plain numbers, no lock.

prometheus_client's metrics take a lock at every increment, as they may be called from any
thread. The pipeline's events reach their listeners on the app's event loop, where the scrape
also runs, so the busiest metrics (one increment or more per push) keep plain numbers here and
become metric families at collection: a listener then costs a fraction of what it did.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ["Buckets", "Counts"]

Key = tuple[str, ...]


class Counts:
    """A counter by label values (``iotpush_X_total``, with ``_created``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.clock = clock
        self.values: dict[Key, float] = {}
        self.created: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1.0) -> None:
        """Add ``amount`` to the series of the label values ``key``."""
        values = self.values
        if key in values:
            values[key] += amount
        else:
            values[key] = amount
            self.created[key] = self.clock()

    def family(self) -> CounterMetricFamily:
        """Every series, for a collector."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in sorted(self.values.items()):
            family.add_metric(list(key), value, created=self.created[key])
        return family


class Buckets:
    """A histogram by label values; with no labels its one series exists from the start."""

    def __init__(
        self, name: str, documentation: str, bounds: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        self.labels = list(labels)
        shown = floatToGoString  # untyped: the spelling of ``le`` the client library uses
        self._les = [*(shown(bound) for bound in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        # Per series: the count of each bucket (the last one past every bound), then the sum.
        self.series: dict[Key, list[float]] = {}
        if not self.labels:
            self._new(())

    def _new(self, key: Key) -> list[float]:
        made = self.series[key] = [0.0] * (len(self.bounds) + 2)
        return made

    def observe(self, key: Key, value: float) -> None:
        """Count ``value`` in the series of the label values ``key``."""
        counts = self.series.get(key) or self._new(key)
        counts[bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        counts[-1] += value

    def family(self) -> HistogramMetricFamily:
        """Every series (cumulative buckets, sum and count), for a collector."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, counts in sorted(self.series.items()):
            total = 0.0
            buckets = []
            for le, count in zip(self._les, counts[:-1], strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(list(key), buckets, sum_value=counts[-1])
        return family
