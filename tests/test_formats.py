"""The push format registry: every type with its key rule, sample and callback, in step."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from iotpush import NOTIFICATION_TYPES, NotificationError, PushMessageReceiver, decode, testing
from iotpush._samples import Faker
from iotpush.formats import FORMATS, LEGACY, Formats, TypeSpec
from iotpush.formats.legacy import keys, samples
from iotpush.formats.legacy.models import DeviceDeleted
from iotpush.idempotency import key_and_slot

README = Path(__file__).resolve().parents[1] / "README.md"


def test_legacy_registry_covers_every_type_with_key_sample_and_callback() -> None:
    assert list(LEGACY.types) == list(NOTIFICATION_TYPES)
    assert len(LEGACY.types) == 22
    for name, spec in LEGACY.types.items():
        assert spec.model is NOTIFICATION_TYPES[name]
        assert callable(spec.key) and callable(spec.sample)
        assert spec.callback is not None and spec.callback.startswith("handle")
        assert spec.model.callback == spec.callback
        assert callable(getattr(PushMessageReceiver, spec.callback)), name
    assert len({spec.callback for spec in LEGACY.types.values()}) == 22


@pytest.mark.parametrize("name", list(NOTIFICATION_TYPES), ids=list(NOTIFICATION_TYPES))
def test_legacy_sample_of_each_type_decodes_and_keys(name: str) -> None:
    notification = testing.build(name, seed=7)
    body = testing.encode(notification)
    again = LEGACY.decode(body, name)
    assert type(again) is NOTIFICATION_TYPES[name]
    assert FORMATS.decode_stored(name, body) == again
    assert key_and_slot(again)[0].startswith(f"{name}:")


def test_legacy_sample_is_reproducible_by_seed() -> None:
    def draw() -> dict[str, object]:
        return samples.rule_event(Faker(random.Random(3), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))

    assert draw() == draw()


def test_readme_type_table_matches_registry() -> None:
    rows = re.findall(r"^\| (\d+) \| (.+?) \| `(\w+)` \| `(\w+)`", README.read_text(), re.M)
    table = [(int(n), model, callback) for n, _, model, callback in rows]
    expected = [
        (i, spec.model.__name__, spec.callback)
        for i, spec in enumerate(LEGACY.types.values(), start=1)
    ]
    assert table == expected


def test_formats_two_formats_with_one_type_name_refused() -> None:
    with pytest.raises(ValueError, match="deviceAdded"):
        Formats([LEGACY, LEGACY])


def test_formats_stored_type_no_format_knows_is_notification_error() -> None:
    with pytest.raises(NotificationError) as info:
        FORMATS.decode_stored("deviceVanished", b"{}")
    assert info.value.problem == "unknown_type"


def test_formats_type_added_by_one_entry_is_decoded_and_keyed() -> None:
    class DeviceRenamed(DeviceDeleted, tag="deviceRenamed", kw_only=True):
        """A 23rd type for the test: a model, and one registry entry below."""

        name: str

    spec = TypeSpec(DeviceRenamed, keys.registry, samples.device_deleted, "handleDeviceRenamed")
    DeviceRenamed.notify_type = "deviceRenamed"

    class Format:
        name = "legacy-plus"
        projections: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.types: Mapping[str, TypeSpec[Any]] = {spec.name: spec}

        def decode(self, body: bytes, kind: str | None = None) -> DeviceRenamed:
            return msgspec.json.decode(body, type=DeviceRenamed)

    formats = Formats([LEGACY, Format()])
    body = b'{"notifyType": "deviceRenamed", "deviceId": "d", "gatewayId": "d", "name": "x"}'
    renamed = formats.decode_stored("deviceRenamed", body)
    assert formats.key_and_slot(renamed)[1] == "registry:d"
    assert formats.format_of("deviceDeleted") is LEGACY
    with pytest.raises(NotificationError):
        decode(body)  # the default registry does not know it
