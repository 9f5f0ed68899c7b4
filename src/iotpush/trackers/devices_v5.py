"""v5 pushes in the device tracker: the same registry and latest values as legacy devices.

A v5 device is answered for exactly as a legacy one (`iotpush.trackers.devices`):

- ``device:create``, ``device:update`` and ``device:delete`` merge the device's members into its
  info under the legacy member names (``device_name`` -> ``name``, ``fw_version`` ->
  ``fwVersion``...); create marks it added, delete soft-deletes it (newest entry wins);
- ``device.status:update`` sets ``status`` and ``lastOnlineTime``;
- ``device.property:report`` (and the older ``device.data:update``) sets each property's latest
  value: the newest event time wins (a service's own time, else the push's, else when it was
  received), the higher entry id on a tie.

It keeps no table of its own: `devices` owns the tables and their reset.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..formats.v5.models import (
    DeviceCreate,
    DeviceDataUpdate,
    DeviceDelete,
    DevicePropertyReport,
    DeviceStatusUpdate,
    DeviceUpdate,
    enc_hook,
)
from ..models import Notification
from ._common import Database, Tracker, dumps
from .devices import _LOAD, _SET_DATA, _TOUCH, _UPSERT, _load

__all__ = ["HANDLES", "PROJECTION", "RESET", "SCHEMA", "apply"]

HANDLES: Final = (
    DeviceCreate,
    DeviceUpdate,
    DeviceDelete,
    DeviceStatusUpdate,
    DevicePropertyReport,
    DeviceDataUpdate,
)
SCHEMA: Final = ""
RESET: Final[tuple[str, ...]] = ()

# v5 member names whose legacy deviceInfo name is not their camelCase.
_RENAMED: Final = {"device_name": "name"}
# Kept in columns of their own, or the device's id itself.
_NOT_INFO: Final = frozenset(("device_id", "gateway_id", "node_type"))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _info(body: msgspec.Struct) -> dict[str, Any]:
    members: dict[str, Any] = msgspec.to_builtins(body, enc_hook=enc_hook)
    return {
        _RENAMED.get(name) or _camel(name): value
        for name, value in members.items()
        if name not in _NOT_INFO
    }


def apply(db: Database, entry_id: int, received_at: float, notification: Notification) -> None:
    """Merge a v5 device push into its device, or a property report into the latest values.

    Applying an entry twice changes nothing, as for the legacy pushes.
    """
    n = notification
    if not isinstance(n, HANDLES):
        return
    device = n.device
    if device is None:
        return
    gateway = n.header.gateway_id
    if isinstance(n, DevicePropertyReport | DeviceDataUpdate):
        fallback = n.time
        for service in n.body.services:
            when = service.event_time or fallback
            stamp = enc_hook(when) if when is not None else ""
            ts = when.timestamp() if when is not None else received_at
            for name, value in service.properties.items():
                db.execute(
                    _SET_DATA,
                    (device, service.service_id, name, None, dumps(value), stamp, ts, entry_id),
                )
        db.execute(_TOUCH, (device, gateway, entry_id if gateway else 0, received_at, received_at))
        return
    logged = db.execute(
        "INSERT INTO device_events (entry_id, device_id, notify_type, received_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
        (entry_id, device, n.notify_type, received_at),
    )
    asked = db.execute(_LOAD, (device,))  # before the row count: see `devices.apply`
    if not logged.rowcount:
        return
    row = _load(asked, device, received_at)
    row.set("gateway_id", gateway, entry_id)
    if isinstance(n, DeviceStatusUpdate):
        status: dict[str, Any] = {"status": n.body.status}
        if n.body.last_online_time is not None:
            status["lastOnlineTime"] = enc_hook(n.body.last_online_time)
        row.merge_info(status, entry_id)
    else:
        body = n.body
        row.set("gateway_id", body.gateway_id, entry_id)
        row.set("node_type", body.node_type, entry_id)
        row.merge_info(_info(body), entry_id)
        if isinstance(n, DeviceCreate):
            row.added_entry_id = max(row.added_entry_id or 0, entry_id)
        elif isinstance(n, DeviceDelete) and entry_id > (row.deleted_entry_id or 0):
            row.deleted_entry_id, row.deleted_at = entry_id, received_at
    db.execute(_UPSERT, row.values())


PROJECTION: Final = Tracker("devices_v5", HANDLES, apply, RESET)
"""This tracker as a `iotpush.projections.Projection`."""
