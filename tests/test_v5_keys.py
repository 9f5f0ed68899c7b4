from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest

from iotpush import v5
from iotpush._samples import Faker
from iotpush.formats.v5 import samples

NOW = dt.datetime(2026, 11, 21, 10, 15, 30, tzinfo=dt.UTC)


def push(pair: str, seed: int = 1, **changes: Any) -> v5.V5Notification[Any]:
    data = samples.defaults(pair, Faker(random.Random(seed), NOW))
    data = samples.merge(data, changes)
    return v5.decode(json.dumps({k: v for k, v in data.items() if v is not None}).encode())


@pytest.mark.parametrize("pair", list(v5.PAIRS), ids=list(v5.PAIRS))
def test_key_with_request_id_is_pair_and_id(pair: str) -> None:
    n = push(pair)
    key, slot = v5.key_and_slot(n)
    assert key == slot == f"{pair}:{n.request_id}"


@pytest.mark.parametrize("pair", list(v5.PAIRS), ids=list(v5.PAIRS))
def test_key_without_request_id_is_stable_across_member_order(pair: str) -> None:
    n = push(pair, request_id=None)
    data = json.loads(n.raw)
    reordered = json.dumps(dict(reversed(list(data.items())))).encode()
    assert v5.key_and_slot(v5.decode(reordered)) == v5.key_and_slot(n)
    assert v5.key_and_slot(n)[0].startswith(f"{pair}:")


def test_key_property_reports_differ_by_values_and_time() -> None:
    a = push("device.property:report", request_id=None)
    services = [{"properties": {"temperature": -5}}]
    b = push(
        "device.property:report", request_id=None, notify_data={"body": {"services": services}}
    )
    c = push("device.property:report", request_id=None, event_time="20261121T101531Z",
             event_time_ms=None)  # fmt: skip
    keys = {v5.key_and_slot(n)[0] for n in (a, b, c)}
    assert len(keys) == 3


def test_key_status_updates_share_the_device_slot() -> None:
    online = push("device.status:update", request_id=None)
    offline = push("device.status:update", request_id=None,
                   notify_data={"body": {"status": "OFFLINE"}})  # fmt: skip
    (k1, s1), (k2, s2) = v5.key_and_slot(online), v5.key_and_slot(offline)
    assert s1 == s2 == f"v5-status:{online.device}"
    assert k1 != k2


def test_key_command_status_is_command_and_status_whatever_the_time() -> None:
    a = push("device.command.status:update", request_id=None)
    b = push("device.command.status:update", request_id=None, event_time="20200101T000000Z")
    failed = push("device.command.status:update", request_id=None,
                  notify_data={"body": {"status": "FAILED"}})  # fmt: skip
    assert v5.key_and_slot(a) == v5.key_and_slot(b)
    assert v5.key_and_slot(a) != v5.key_and_slot(failed)


def test_key_device_lifecycle_shares_the_registry_slot_not_the_key() -> None:
    created, deleted = (
        push("device:create", request_id=None),
        push("device:delete", request_id=None),
    )
    (k1, s1), (k2, s2) = v5.key_and_slot(created), v5.key_and_slot(deleted)
    assert s1 == s2 == f"v5-device:{created.device}"
    assert k1 != k2
