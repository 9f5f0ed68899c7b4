"""The v5 data-forwarding pushes: one model per ``resource:event`` pair, and their decoder.

The models live with their format (`iotpush.formats.v5`); this module keeps their names for
users::

    from iotpush.v5 import DevicePropertyReport

    @receiver.on(DevicePropertyReport)          # or @receiver.on("device.property:report")
    def store(push: DevicePropertyReport) -> None:
        for service in push.body.services:
            print(push.header.device_id, service.service_id, service.properties)
"""

from __future__ import annotations

from .formats.v5 import decode, is_v5, key_and_slot, pair_of
from .formats.v5.models import (
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
