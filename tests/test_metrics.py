"""`iotpush.metrics`: the names and labels of the issue, fed by real events and a real store."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from iotpush import Config, create_app, open_inbox, testing
from iotpush.events import (
    REFUSAL_REASONS,
    Answered,
    AttemptFinished,
    Dead,
    Delivered,
    Events,
    Published,
    Received,
    Refused,
    Retried,
    SinkFailed,
)
from iotpush.inbox import Incoming, Rejection
from iotpush.metrics import Metrics
from iotpush.overview import FLEET_TTL, OverviewReader

from .conftest import RECEIVE, Recorder, running, wait_until
from .conftest import run as run_async

JSON = {"content-type": "application/json"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of an exposition, by name and labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def incoming(i: int, device: str = "d1", at: float | None = None) -> Incoming:
    return Incoming(
        b"{}", "deviceDataChanged", device, f"key-{i}", f"slot-{i}", "/p", {},
        time.time() if at is None else at,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def render_with(events_to_emit: list[Any], tmp_path: Path) -> Samples:
    async with open_inbox(f"sqlite:///{tmp_path / 'm.db'}") as inbox:
        events = Events()
        metrics = Metrics(events, OverviewReader(inbox), sinks=("nats:S",), process=False)
        for event in events_to_emit:
            events.emit(event)
        return samples(await metrics.render())


def test_metrics_received_counted_by_type_and_outcome(tmp_path: Path) -> None:
    emitted = [
        Received(1, "deviceDataChanged", "d1", False, 1_800_000_000.0),
        Received(2, "deviceDataChanged", "d2", False, 1_800_000_001.0),
        Received(1, "deviceDataChanged", "d1", True, 1_800_000_002.0),
        Received(3, "nbCommandStatusChanged", "d1", False, 1_800_000_003.0),
    ]
    found = run_async(render_with(emitted, tmp_path))
    name = "iotpush_notifications_received_total"
    assert value(found, name, type="deviceDataChanged", outcome="accepted") == 2
    assert value(found, name, type="deviceDataChanged", outcome="duplicate") == 1
    assert value(found, name, type="nbCommandStatusChanged", outcome="accepted") == 1
    assert value(found, "iotpush_last_received_timestamp_seconds") == 1_800_000_003.0


def test_metrics_refusals_every_reason_from_zero(tmp_path: Path) -> None:
    refusal = Refused("bad_json", 400, "not JSON", "$", "/v1.0.0/messageReceiver")
    found = run_async(render_with([refusal, refusal], tmp_path))
    for reason in REFUSAL_REASONS:
        expected = 2 if reason == "bad_json" else 0
        assert value(found, "iotpush_requests_refused_total", reason=reason) == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([(503, 0.01)] * 3, 3),
        ([(500, 0.01), (200, 16.0)], 2),  # a 200 past the platform's 15 s is a failure too
        ([(503, 0.01), (503, 0.01), (200, 0.01)], 0),
        ([(503, 0.01), (400, 0.01), (413, 0.01), (503, 0.01)], 2),  # a 4xx counts neither way
        ([(200, 0.01), (400, 0.01)], 0),
    ],
    ids=["5xx", "slow-200", "reset-by-200", "4xx-neutral", "none"],
)
def test_metrics_consecutive_failures_counts_what_the_platform_counts(
    answers: list[tuple[int, float]], expected: int, tmp_path: Path
) -> None:
    emitted = [Answered(status, seconds, 0.0) for status, seconds in answers]
    found = run_async(render_with(emitted, tmp_path))
    assert value(found, "iotpush_consecutive_failures") == expected
    assert value(found, "iotpush_ack_seconds_count") == len(answers)
    assert value(found, "iotpush_ack_seconds_bucket", le="15.0") == sum(
        1 for _, seconds in answers if seconds <= 15
    )


def test_metrics_deliveries_handlers_and_sinks_counted(tmp_path: Path) -> None:
    emitted = [
        AttemptFinished(1, "deviceAdded", "d", 1, "h", 0.002, None),
        AttemptFinished(2, "deviceAdded", "d", 1, "h", 0.2, "boom"),
        Delivered(1, "deviceAdded", "d", 1, 0.5),
        Retried(2, "deviceAdded", "d", 1, "h", "boom", 1.0),
        Dead(2, "deviceAdded", "d", 8, "h", "boom"),
        Published("nats:S", 5),
        Published("nats:S", 2),
        SinkFailed("nats:S", "down"),
    ]
    found = run_async(render_with(emitted, tmp_path))
    deliveries = "iotpush_deliveries_total"
    for outcome in ("delivered", "retried", "dead"):
        assert value(found, deliveries, type="deviceAdded", outcome=outcome) == 1
    assert value(found, "iotpush_handler_seconds_count", type="deviceAdded") == 2
    assert value(found, "iotpush_handler_seconds_bucket", type="deviceAdded", le="0.005") == 1
    assert value(found, "iotpush_delivery_lag_seconds_count") == 1
    assert value(found, "iotpush_sink_published_total", sink="nats:S") == 7
    assert value(found, "iotpush_sink_errors_total", sink="nats:S") == 1


def test_metrics_store_gauges_read_from_the_store(tmp_path: Path) -> None:
    async def main() -> Samples:
        clock = Clock()
        store = f"sqlite:///{tmp_path / 's.db'}"
        async with open_inbox(store, outbox=["nats:S"], clock=clock) as inbox:
            for i in range(4):
                await inbox.append(incoming(i, device=f"d{i}", at=clock.now - 30 + i))
            claimed = await inbox.claim("me", 2, 60)
            await inbox.ack([claimed[0].id])
            await inbox.dead(claimed[1].id, "boom", 1)
            await inbox.quarantine(Rejection(clock.now, "/p", 400, "bad", "$", b"x", {}))
            metrics = Metrics(Events(), OverviewReader(inbox, clock=clock), process=False)
            return samples(await metrics.render())

    found = run_async(main())
    states = {"pending": 2, "claimed": 0, "done": 1, "dead": 1}
    for state, count in states.items():
        assert value(found, "iotpush_inbox_entries", state=state) == count
    assert value(found, "iotpush_inbox_oldest_pending_seconds") == 28  # entry 3, at now - 28
    assert value(found, "iotpush_quarantine_entries") == 1
    assert value(found, "iotpush_sink_unpublished", sink="nats:S") == 4


def test_metrics_store_gauges_cached_for_a_second(tmp_path: Path) -> None:
    async def main() -> list[float | None]:
        clock = Clock()
        async with open_inbox(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as inbox:
            metrics = Metrics(Events(), OverviewReader(inbox, clock=clock), process=False)
            seen = []
            for i, later in enumerate((0.0, 0.5, 1.0)):  # seconds after the first reading
                await inbox.append(incoming(i))
                clock.now = 1_800_000_000.0 + later
                found = samples(await metrics.render())
                seen.append(value(found, "iotpush_inbox_entries", state="pending"))
            return seen

    assert run_async(main()) == [1, 1, 3]  # read, cached, read again a second later


def test_metrics_unreadable_store_leaves_its_gauges_out(tmp_path: Path) -> None:
    async def main() -> Samples:
        async with open_inbox(f"sqlite:///{tmp_path / 's.db'}") as inbox:
            metrics = Metrics(Events(), OverviewReader(inbox), process=False)
            with sqlite3.connect(tmp_path / "s.db") as other:  # a store whose schema broke
                other.execute("ALTER TABLE quarantine RENAME TO elsewhere")
            return samples(await metrics.render())

    found = run_async(main())
    assert value(found, "iotpush_inbox_entries", state="pending") is None
    assert value(found, "iotpush_consecutive_failures") == 0  # the rest is served


def test_metrics_tracker_gauges_count_commands_devices_and_shadows() -> None:
    app = create_app(Config(store="memory://"))
    clock_now = time.time()

    async def main() -> tuple[Samples, Samples]:
        async with testing.lifespan(app):
            await app.state["overview"].read()  # a first scrape: the fleet is empty then
            for body in (
                testing.build("deviceAdded", device_id="a", device_info={"status": "ONLINE"}),
                testing.build("deviceAdded", device_id="b", device_info={"status": "OFFLINE"}),
                testing.build("deviceAdded", device_id="c", device_info={"status": "ONLINE"}),
                testing.build("nbCommandStatusChanged", command_id="c1",
                              result={"result_code": "SUCCESSFUL"}),
                testing.build("deviceDesiredPropertiesModifyStatusChanged", device_id="a",
                              status="FAILED"),
            ):  # fmt: skip
                assert (await testing.deliver(app, body)).status == 200
            tracking = app.state["tracking"]
            await tracking.expect("c2", "a", timeout=0.001)
            await tracking.expect("c3", "a", timeout=3600)
            overview = app.state["overview"]
            overview.clock = lambda: clock_now + 10
            stale = samples(await app.state["metrics"].render())
            overview.clock = lambda: clock_now + 10 + FLEET_TTL
            return stale, samples(await app.state["metrics"].render())

    stale, found = run_async(main())
    # The fleet's figures are read at most every FLEET_TTL seconds; overdue at every scrape.
    assert value(stale, "iotpush_devices", status="ONLINE") is None
    assert value(stale, "iotpush_commands_overdue") == 1
    assert value(found, "iotpush_devices", status="ONLINE") == 2
    assert value(found, "iotpush_devices", status="OFFLINE") == 1
    assert value(found, "iotpush_commands", state="SUCCESSFUL") == 1
    assert value(found, "iotpush_commands", state="PENDING") == 2
    assert value(found, "iotpush_commands_overdue") == 1
    assert value(found, "iotpush_shadow_unsynced") == 1


def test_metrics_two_apps_in_one_process_keep_their_own_registries() -> None:
    first, second = create_app(Config(store="memory://")), create_app(Config(store="memory://"))
    first.state["events"].emit(Received(1, "deviceAdded", "d", False, 5.0))

    async def render(app: Any) -> Samples:
        async with testing.lifespan(app):
            return samples(await app.state["metrics"].render())

    name = "iotpush_notifications_received_total"
    assert value(run_async(render(first)), name, type="deviceAdded", outcome="accepted") == 1
    found = run_async(render(second))
    assert value(found, name, type="deviceAdded", outcome="accepted") is None
    assert value(found, "process_cpu_seconds_total") is not None


def test_metrics_endpoint_follows_the_query_api_access_rules() -> None:
    token = "metrics-token-0123456789"
    with running(create_app(Config(store="memory://", api_tokens=(token,)))) as url:
        refused = httpx.get(f"{url}/metrics")
        allowed = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(samples(allowed.text), "iotpush_quarantine_entries") == 0


def test_metrics_endpoint_off_loopback_without_a_token_refused() -> None:
    app = create_app(Config(store="memory://", host="0.0.0.0"))
    with running(app) as url:
        assert httpx.get(f"{url}/metrics").status_code == 403
        assert httpx.get(f"{url}/health/live").status_code == 200  # probes need no token


def test_metrics_endpoint_off_when_metrics_are_off() -> None:
    with running(create_app(Config(store="memory://", metrics=False))) as url:
        assert httpx.get(f"{url}/metrics").status_code == 404
        assert httpx.get(f"{url}/health/ready").status_code == 200


def test_metrics_count_what_a_real_server_received_refused_and_delivered(db: str) -> None:
    with running(create_app(Config(store=db, receiver=Recorder()))) as url:
        for n in [testing.build("deviceAdded", device_id=f"d{i}") for i in range(3)]:
            assert testing.post(url + testing.path_for(n), n).status == 200
        assert httpx.post(url + RECEIVE, content=b"{", headers=JSON).status_code == 400

        def delivered() -> tuple[float | None, float | None]:
            found = samples(httpx.get(f"{url}/metrics").text)
            outcome = value(
                found, "iotpush_deliveries_total", type="deviceAdded", outcome="delivered"
            )
            return outcome, value(found, "iotpush_inbox_entries", state="done")

        wait_until(lambda: delivered() == (3, 3), what="3 deliveries counted and acknowledged")
        found = samples(httpx.get(f"{url}/metrics").text)
    name = "iotpush_notifications_received_total"
    assert value(found, name, type="deviceAdded", outcome="accepted") == 3
    refused = [v for (name, _), v in found.items() if name == "iotpush_requests_refused_total"]
    assert sum(refused) == 1
    assert value(found, "iotpush_handler_seconds_count", type="deviceAdded") == 3
    assert value(found, "iotpush_delivery_lag_seconds_count") == 3
    assert value(found, "iotpush_inbox_entries", state="done") == 3


def test_metrics_and_alerts_failures_in_a_row_from_a_real_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    app = create_app(Config(store=f"sqlite:///{path}", busy_timeout=0.1, max_in_flight=None))
    n = testing.build("deviceAdded", device_id="d")
    with running(app) as url:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the inbox cannot commit: every push gets a 503
        try:
            statuses = [testing.post(url + testing.path_for(n), n).status for _ in range(3)]
            failing = samples(httpx.get(f"{url}/metrics").text)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert testing.post(url + testing.path_for(n), n).status == 200
        found = samples(httpx.get(f"{url}/metrics").text)
    assert statuses == [503] * 3
    assert value(failing, "iotpush_consecutive_failures") == 3
    assert value(found, "iotpush_consecutive_failures") == 0
    assert value(found, "iotpush_ack_seconds_count") == 4
    errors = [r.getMessage() for r in caplog.records if r.name == "iotpush.alerts"]
    assert any(m.startswith("3 answers in a row were failures for the platform") for m in errors)


def test_tallies_give_the_samples_of_the_client_librarys_counter_and_histogram() -> None:
    """`_tallies` (no lock) stands in for prometheus_client's metrics: the same series."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from iotpush._tallies import Buckets, Counts
    from iotpush.metrics import ACK_BUCKETS

    registry = CollectorRegistry()
    counter = Counter("c", "C.", ["a", "b"], registry=registry)
    histogram = Histogram("h", "H.", ["t"], buckets=ACK_BUCKETS, registry=registry)
    counts, buckets = Counts("c", "C.", ["a", "b"]), Buckets("h", "H.", ACK_BUCKETS, ["t"])
    for n, seconds in enumerate((0.0005, 0.001, 0.0011, 2.5, 15.0, 15.5, 0.001)):
        key = ("x", "y" if n % 2 else "z")
        counter.labels(*key).inc()
        counts.inc(key)
        histogram.labels(key[1]).observe(seconds)
        buckets.observe((key[1],), seconds)

    def shown(text: bytes) -> Samples:
        return {k: v for k, v in samples(text).items() if not k[0].endswith("_created")}

    class Tallies:
        def collect(self) -> Any:
            return [counts.family(), buckets.family()]

    ours = CollectorRegistry()
    ours.register(Tallies())
    assert shown(generate_latest(ours)) == shown(generate_latest(registry))
