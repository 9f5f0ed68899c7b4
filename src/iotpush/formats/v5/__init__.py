"""The platform's current push format: IoT Device Access v5 data forwarding.

Each push is tagged by two members, ``resource`` and ``event``; iotpush names a push by its pair
``"resource:event"`` (``"device.property:report"``), and has one model class per pair (in
`.models`, decoded by `.decoding`, keyed by `.keys`, sampled by `.samples`), registered in
`iotpush.formats.FORMATS` as `V5`. Users import the models from `iotpush.v5`::

    from iotpush.v5 import DevicePropertyReport

    @receiver.on(DevicePropertyReport)          # or @receiver.on("device.property:report")
    def store(push: DevicePropertyReport) -> None:
        for service in push.body.services:
            print(push.header.device_id, service.service_id, service.properties)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..._samples import Faker
from ..base import TypeSpec
from . import samples
from .decoding import decode, is_v5, pair_of
from .keys import key_and_slot, rule
from .models import (
    PAIRS,
    BatchTaskBody,
    BatchTaskUpdate,
    CommandStatusBody,
    Data,
    DeviceBody,
    DeviceCommandStatusUpdate,
    DeviceCreate,
    DeviceDataUpdate,
    DeviceDelete,
    DeviceMessageReport,
    DeviceMessageStatusUpdate,
    DevicePropertyReport,
    DeviceStatusUpdate,
    DeviceUpdate,
    ErrorInfo,
    Header,
    MessageBody,
    MessageStatusBody,
    ProductBody,
    ProductCreate,
    ProductDelete,
    ProductUpdate,
    PropertiesBody,
    ServiceProperties,
    StatusBody,
    Tag,
    Time,
    V5Notification,
    parse_v5_time,
)

__all__ = [
    "PAIRS",
    "V5",
    "BatchTaskBody",
    "BatchTaskUpdate",
    "CommandStatusBody",
    "Data",
    "DeviceBody",
    "DeviceCommandStatusUpdate",
    "DeviceCreate",
    "DeviceDataUpdate",
    "DeviceDelete",
    "DeviceMessageReport",
    "DeviceMessageStatusUpdate",
    "DevicePropertyReport",
    "DeviceStatusUpdate",
    "DeviceUpdate",
    "ErrorInfo",
    "Header",
    "MessageBody",
    "MessageStatusBody",
    "ProductBody",
    "ProductCreate",
    "ProductDelete",
    "ProductUpdate",
    "PropertiesBody",
    "ServiceProperties",
    "StatusBody",
    "Tag",
    "Time",
    "V5Format",
    "V5Notification",
    "decode",
    "is_v5",
    "key_and_slot",
    "pair_of",
    "parse_v5_time",
]


def _sample(pair: str) -> Any:
    def sample(faker: Faker) -> dict[str, Any]:
        return samples.defaults(pair, faker)

    return sample


class V5Format:
    """The v5 format as a `PushFormat`: tagged on two members, ``resource`` and ``event``.

    Its types are named by their pair; their samples are wire values (``notify_data`` nested),
    built into models by `samples.build`.
    """

    name: str = "v5"
    projections: tuple[str, ...] = ("commands", "devices_v5", "messages", "tasks")

    def __init__(self) -> None:
        self.types: Mapping[str, TypeSpec[Any]] = {
            pair: TypeSpec(cls, rule(cls), _sample(pair)) for pair, cls in PAIRS.items()
        }

    def decode(self, body: bytes, kind: str | None = None) -> V5Notification[Any]:
        """Decode ``body``; every v5 body names its pair, so ``kind`` is not needed."""
        return decode(body)


V5: Final = V5Format()
"""The v5 format, registered in `iotpush.formats.FORMATS`."""
