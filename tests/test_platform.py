"""The platform's delivery rules against a real server on loopback that fails on purpose."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from iotpush.platform import DeliveryRules, PlatformReport, push_as_platform
from tests.conftest import run, running


class Flaky:
    """An ASGI app answering 500 to its first ``failures`` pushes, then 200; it counts them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        self.seen += 1
        status = 500 if self.seen <= self.failures else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def push(url: str, count: int, **rules: Any) -> PlatformReport:
    bodies = [b'{"resource":"device.status","event":"update"}']
    return run(push_as_platform(url, bodies, count=count, rules=DeliveryRules(**rules)))


def test_v5_discards_failed_pushes_blacklists_after_ten_and_drains_after_a_probe() -> None:
    app = Flaky(failures=12)
    with running(app) as url:
        report = push(url, 30, format="v5", scale=1800, linger=3600)  # probes every 0.1 s, 2 s
    # 10 failures blacklist the URL; the 2 probes that fail lose their push too.
    assert (report.delivered, report.discarded, report.held_back) == (18, 12, 0)
    assert (report.failures, report.blacklisted, report.probes) == (12, 1, 3)
    assert app.seen == 30


def test_legacy_re_pushes_failed_pushes_until_delivered() -> None:
    app = Flaky(failures=12)
    with running(app) as url:
        report = push(url, 30, format="legacy", scale=1800, linger=3600)
    assert (report.delivered, report.discarded, report.held_back) == (30, 0, 0)
    assert (report.failures, report.blacklisted, report.probes) == (12, 1, 3)
    assert app.seen == 42


def test_few_failures_do_not_blacklist() -> None:
    app = Flaky(failures=9)
    with running(app) as url:
        report = push(url, 20, format="v5")
    assert (report.delivered, report.discarded, report.blacklisted, report.probes) == (11, 9, 0, 0)


def test_unreachable_url_holds_back_what_the_probes_did_not_lose() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket closes
    report = push(f"http://127.0.0.1:{port}/v5/forwarding", 25, format="v5", scale=3600)
    assert report.delivered == 0
    assert report.blacklisted == 1
    assert report.discarded == 10 + report.probes
    assert report.held_back == 25 - report.discarded
    legacy = push(f"http://127.0.0.1:{port}/v5/forwarding", 25, format="legacy", scale=3600)
    assert (legacy.delivered, legacy.discarded, legacy.held_back) == (0, 0, 25)


@pytest.mark.parametrize(
    "rules",
    [{"format": "v4"}, {"scale": 0}, {"drain_rate": -1}, {"blacklist_after": 0}],
    ids=["format", "scale", "drain-rate", "blacklist-after"],
)
def test_delivery_rules_refuse_values_that_cannot_work(rules: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DeliveryRules(**rules)
