"""The platform's current push format: IoT Device Access v5 data forwarding.

Each push is tagged by two members, ``resource`` and ``event``; iotpush names a push by its pair
``"resource:event"`` (``"device.property:report"``), and has one model class per pair::

    from iotpush.v5 import DevicePropertyReport

    @receiver.on(DevicePropertyReport)          # or @receiver.on("device.property:report")
    def store(push: DevicePropertyReport) -> None:
        for service in push.body.services:
            print(push.header.device_id, service.service_id, service.properties)
"""

from __future__ import annotations

from .decoding import decode, is_v5, pair_of
from .keys import key_and_slot
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
    "V5Notification",
    "decode",
    "is_v5",
    "key_and_slot",
    "pair_of",
    "parse_v5_time",
]
