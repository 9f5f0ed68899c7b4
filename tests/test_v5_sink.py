"""v5 pushes on the NATS JetStream stream: subjects a consumer filters by pair and by device,
apart from the legacy ones."""

from __future__ import annotations

from pathlib import Path

import httpx

from iotpush import Config, create_app, testing
from tests.conftest import RECEIVE, Recorder, running
from tests.test_sink_nats import Stream, consume, nats_url, stream  # noqa: F401 - fixtures

JSON = {"content-type": "application/json"}


def v5(pair: str, device: str) -> bytes:
    header = {"device_id": device, "gateway_id": device}
    return testing.encode(testing.build(pair, notify_data={"header": header}))


def test_sink_v5_pushes_are_filtered_by_pair_and_by_device_apart_from_legacy(
    stream: Stream,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    app = create_app(
        Config(receiver=Recorder(), store=f"sqlite:///{tmp_path / 'i.db'}",
               sinks=(stream.sink_url(),))
    )  # fmt: skip
    bodies = [
        *(v5("device.property:report", "dev-a") for _ in range(3)),
        *(v5("device.property:report", "dev-b") for _ in range(2)),
        v5("device.message:report", "dev-a"),
        testing.encode(testing.build("batchtask:update")),  # about no device
    ]
    legacy = testing.build("deviceDataChanged", device_id="dev-a", gateway_id="dev-a")
    with running(app) as url:
        for body in bodies:
            assert httpx.post(url + "/v5/forwarding", content=body, headers=JSON).status_code == 200
        assert testing.post(url + RECEIVE, legacy).status == 200
        p = stream.prefix
        by_pair = consume(stream, "pair", 5, filter=f"{p}.v5.device%2Eproperty.report.>")
        by_device = consume(stream, "device", 4, filter=f"{p}.v5.*.*.dev-a")
        every_v5 = consume(stream, "v5", 7, filter=f"{p}.v5.>")
        only_legacy = consume(stream, "legacy", 1, filter=f"{p}.*.*")
    assert len(by_pair) == 5
    assert {m.headers["Iotpush-Type"] for m in by_pair} == {"device.property:report"}
    assert sorted(m.subject for m in by_device) == sorted(
        [f"{p}.v5.device%2Eproperty.report.dev-a"] * 3 + [f"{p}.v5.device%2Emessage.report.dev-a"]
    )
    assert len(every_v5) == 7
    assert f"{p}.v5.batchtask.update._" in {m.subject for m in every_v5}
    assert [m.subject for m in only_legacy] == [f"{p}.deviceDataChanged.dev-a"]
