"""Plausible values for simulated notifications: ids, times, service data.

Each format's types draw their sample values from a `Faker` (see `TypeSpec.sample`).
"""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from collections.abc import Callable
from typing import Any, Final

__all__ = ["SERVICES", "Faker"]

_SERVICES: Final[dict[str, Callable[[random.Random], dict[str, Any]]]] = {
    "Temperature": lambda r: {"temperature": round(r.uniform(15.0, 32.0), 1)},
    "Humidity": lambda r: {"humidity": r.randint(25, 80)},
    "Battery": lambda r: {"batteryLevel": r.randint(5, 100)},
    "Brightness": lambda r: {"brightness": r.randint(0, 100)},
    "Pressure": lambda r: {"pressure": round(r.uniform(990.0, 1030.0), 1)},
    "WaterMeter": lambda r: {"currentReading": round(r.uniform(0, 9999), 2)},
}
SERVICES: Final = tuple(sorted(_SERVICES))
"""The names of the services `Faker.service` knows."""


class Faker:
    """Plausible platform values from one `random.Random` and one "now"."""

    def __init__(self, rng: random.Random, now: dt.datetime) -> None:
        self.rng = rng
        self.now = now

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex(self, digits: int = 32) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def time(self, seconds_ago: int = 0) -> str:
        """A platform time string (``20151212T121212Z``), ``seconds_ago`` before now."""
        from .formats.legacy.models import format_time  # the formats import this module

        return format_time(self.now - dt.timedelta(seconds=seconds_ago))

    def imei(self) -> str:
        digits = [8, 6, *(self.rng.randrange(10) for _ in range(12))]
        # A real IMEI ends with a Luhn check digit.
        total = sum(d if i % 2 == 0 else sum(divmod(2 * d, 10)) for i, d in enumerate(digits))
        return "".join(map(str, digits)) + str(-total % 10)

    def token(self, length: int) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=length))

    def service(self, name: str) -> dict[str, Any]:
        data = _SERVICES[name](self.rng)
        return {"service_id": name, "service_type": name, "data": data, "event_time": self.time(1)}

    def upgrade(self, device: str) -> dict[str, Any]:
        return {
            "device_id": device,
            "app_id": self.token(28),
            "operation_id": self.hex(24),
            "sub_operation_id": self.hex(24),
        }

    def versions(self) -> dict[str, Any]:
        minor = self.rng.randint(0, 7)
        target = f"1.{minor + self.rng.randint(1, 2)}.0"
        return {"cur_version": target, "target_version": target, "source_version": f"1.{minor}.0"}
