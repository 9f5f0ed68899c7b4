"""Bounds on the shape of a JSON body: nesting depth, members per container, string length.

The receive path checks every body, so the check must cost next to nothing for the bodies the
platform sends. It first counts bytes, which C does at memory speed: a body with no more
``{`` and ``[`` than the depth bound cannot nest deeper, one with fewer commas than the member
bound cannot hold a larger container, and one no longer than the string bound cannot hold a
longer string (a character takes at least one byte, an escape more). Only a body that passes
none of these cheap tests is decoded into plain values and walked, which names the offending
member's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_STRING",
    "JSONLimits",
    "Violation",
]

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_MEMBERS = 1000
DEFAULT_MAX_STRING = 64 * 1024

_decode = msgspec.json.decode


@dataclass(frozen=True, slots=True)
class Violation:
    """A bound a body exceeds: ``reason`` says which and by how much, ``path`` where."""

    reason: str
    path: str


@dataclass(frozen=True, slots=True)
class JSONLimits:
    """The bounds a body must keep; ``None`` or ``0`` turns a bound off.

    Attributes:
        max_depth: The deepest nesting of objects and arrays (the body itself is level 1).
        max_members: The most members of one object, or items of one array.
        max_string: The longest string, key or value, in characters.
    """

    max_depth: int | None = DEFAULT_MAX_DEPTH
    max_members: int | None = DEFAULT_MAX_MEMBERS
    max_string: int | None = DEFAULT_MAX_STRING

    @property
    def active(self) -> bool:
        """Whether any bound is on."""
        return bool(self.max_depth or self.max_members or self.max_string)

    def check(self, body: bytes) -> Violation | None:
        """The first bound ``body`` exceeds, or None (also for a body that is not JSON at all:
        the decoder that follows says what is wrong with it)."""
        depth, members, string = self.max_depth, self.max_members, self.max_string
        if (
            (not depth or body.count(b"{") + body.count(b"[") <= depth)
            and (not members or body.count(b",") < members)
            and (not string or len(body) <= string)
        ):
            return None
        return self._walk(body)

    def _walk(self, body: bytes) -> Violation | None:
        max_depth = self.max_depth or 0
        max_members = self.max_members or 0
        max_string = self.max_string or 0
        try:
            root = _decode(body)
        except msgspec.DecodeError:
            return None
        except RecursionError:  # deeper than the decoder's own bound, far beyond any sane one
            if not max_depth:
                return None  # the notification decoder refuses it in turn
            return Violation(f"JSON nested deeper than {max_depth} levels", "$")
        stack: list[tuple[Any, str, int]] = [(root, "$", 1)]
        while stack:
            value, path, level = stack.pop()
            if isinstance(value, str):
                if max_string and len(value) > max_string:
                    return Violation(f"string longer than {max_string} characters", path)
                continue
            if not isinstance(value, dict | list):
                continue
            if max_depth and level > max_depth:
                return Violation(f"JSON nested deeper than {max_depth} levels", path)
            if max_members and len(value) > max_members:
                kind = "object has more than" if isinstance(value, dict) else "array has more than"
                return Violation(f"{kind} {max_members} members", path)
            if isinstance(value, dict):
                for key, item in reversed(value.items()):
                    if max_string and len(key) > max_string:
                        return Violation(f"key longer than {max_string} characters", path)
                    stack.append((item, f"{path}.{key}", level + 1))
            else:
                for index in range(len(value) - 1, -1, -1):
                    stack.append((value[index], f"{path}[{index}]", level + 1))
        return None
