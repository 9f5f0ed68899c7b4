"""The platform's delivery rules, simulated: what a deployment would get from the real platform.

`push_as_platform` posts pushes the way the platform does, not just as fast as it can:

- a push must be answered 2xx within the deadline (15 s), or it failed;
- a failed **v5** push is discarded: the platform never sends it again;
  a failed **legacy** push is kept and re-pushed later (after the ones held before it);
- after 10 failures in a row the URL is blacklisted: pushes are held back on the platform, and
  the URL is probed every 3 minutes with the oldest one held;
- when a probe succeeds, what was held is drained at the flow-control rate (800/s) before new
  pushes go out.

The report says what was delivered, discarded and held back (still on the platform when the run
ended). ``scale`` divides the probe interval, so a test sees in a second what takes minutes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

__all__ = ["DeliveryRules", "PlatformReport", "push_as_platform"]

Format = Literal["legacy", "v5"]


@dataclass(frozen=True)
class DeliveryRules:
    """How the platform delivers.

    Attributes:
        format: ``"v5"`` discards a failed push; ``"legacy"`` re-pushes it later.
        deadline: Seconds a push may take to be answered.
        blacklist_after: Failures in a row that blacklist the URL.
        probe_interval: Seconds between probes of a blacklisted URL (before ``scale``).
        drain_rate: Pushes per second when draining what was held back.
        scale: Divides ``probe_interval``: 60 makes a 3-minute probe interval 3 s.
        linger: Seconds a blacklisted URL goes on being probed after the last push was due or
            it was blacklisted, whichever is later (before ``scale``); default: two probe
            intervals. What is still held then is reported as held back.
    """

    format: Format = "v5"
    deadline: float = 15.0
    blacklist_after: int = 10
    probe_interval: float = 180.0
    drain_rate: float = 800.0
    scale: float = 1.0
    linger: float | None = None

    def __post_init__(self) -> None:
        if self.format not in ("legacy", "v5"):
            raise ValueError(f"format must be legacy or v5, got {self.format!r}")
        if min(self.deadline, self.probe_interval, self.drain_rate, self.scale) <= 0:
            raise ValueError("deadline, probe interval, drain rate and scale must be above 0")
        if self.blacklist_after < 1:
            raise ValueError("blacklist_after must be 1 or more")

    @property
    def probe_every(self) -> float:
        """Seconds between probes, scaled."""
        return self.probe_interval / self.scale


@dataclass(frozen=True)
class PlatformReport:
    """What the platform would have done with ``pushes`` pushes."""

    format: Format
    pushes: int
    delivered: int
    discarded: int
    held_back: int
    failures: int
    blacklisted: int
    probes: int
    elapsed: float

    def __str__(self) -> str:
        return (
            f"as the {self.format} platform: {self.pushes} pushes, delivered {self.delivered}, "
            f"discarded {self.discarded}, held back {self.held_back} ({self.failures} failed "
            f"attempts, blacklisted {self.blacklisted} time(s), {self.probes} probe(s)), "
            f"{self.elapsed:.2f} s"
        )


Post = Callable[[int], Awaitable[bool]]


async def push_as_platform(
    url: str,
    bodies: Sequence[bytes] | Callable[[int], bytes],
    *,
    count: int,
    rules: DeliveryRules,
    rate: float | None = None,
    verify: ssl.SSLContext | bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> PlatformReport:
    """Push ``count`` bodies to ``url`` one at a time under the platform's delivery ``rules``.

    Args:
        url: The URL registered on the platform.
        bodies: Bodies used in turn, or a function building body ``i``.
        count: How many pushes the platform has to deliver.
        rules: The delivery rules (v5 or legacy, the deadline, blacklisting, draining).
        rate: Pushes per second arriving at the platform; default: all at once.
        verify: How to check an HTTPS server: an ``ssl.SSLContext`` holding the CA uploaded to
            the platform, True (the system's CAs) or False.
        clock: Monotonic seconds (injected by tests).
        sleep: Waits (injected by tests).
    """
    if count < 0 or (rate is not None and rate <= 0):
        raise ValueError("count must be >= 0 and rate > 0")
    make = bodies if callable(bodies) else (lambda i: bodies[i % len(bodies)])
    async with httpx.AsyncClient(
        timeout=rules.deadline,
        headers={"content-type": "application/json;charset=UTF-8"},
        verify=verify,
    ) as client:

        async def post(i: int) -> bool:
            try:
                answer = await asyncio.wait_for(client.post(url, content=make(i)), rules.deadline)
            except (httpx.TransportError, TimeoutError):
                return False
            return 200 <= answer.status_code < 300

        return await _run(post, count, rules, rate, clock, sleep)


async def _run(
    post: Post,
    count: int,
    rules: DeliveryRules,
    rate: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
) -> PlatformReport:
    start = clock()

    def due(i: int) -> float:
        return start if rate is None else start + i / rate

    linger = 2 * rules.probe_every if rules.linger is None else rules.linger / rules.scale
    blacklisted_at = start
    held: deque[int] = deque()
    fresh = delivered = discarded = failures = blacklisted = probes = in_a_row = 0
    probe_at: float | None = None  # set while the URL is blacklisted
    drain_at = 0.0

    def failed(i: int) -> None:
        nonlocal failures, discarded, in_a_row, blacklisted, probe_at, blacklisted_at
        failures += 1
        in_a_row += 1
        if rules.format == "v5":
            discarded += 1
        else:
            held.appendleft(i)  # re-pushed later, before anything newer
        if probe_at is None and in_a_row >= rules.blacklist_after:
            blacklisted += 1
            blacklisted_at = clock()
            probe_at = blacklisted_at + rules.probe_every

    while True:
        now = clock()
        while fresh < count and due(fresh) <= now and (probe_at is not None or held):
            held.append(fresh)  # arrived while the URL is blacklisted or a backlog drains
            fresh += 1
        if probe_at is not None:
            end = max(due(count - 1), blacklisted_at) + linger
            if fresh >= count and now > end:
                break
            if now < probe_at or not held:
                wake = [end + 1e-3]
                if held:
                    wake.append(probe_at)
                elif fresh < count:
                    wake.append(max(due(fresh), probe_at))
                await sleep(max(0.0, min(wake) - now))
                continue
            probes += 1
            i = held.popleft()
            if await post(i):
                delivered, in_a_row, probe_at, drain_at = delivered + 1, 0, None, clock()
            else:
                failed(i)
                probe_at = clock() + rules.probe_every
            continue
        if held:
            drain_at += 1 / rules.drain_rate
            if drain_at > now:
                await sleep(drain_at - now)
            i = held.popleft()
        elif fresh < count:
            if due(fresh) > now:
                await sleep(due(fresh) - now)
            i, fresh = fresh, fresh + 1
        else:
            break
        if await post(i):
            delivered += 1
            in_a_row = 0
        else:
            failed(i)
    return PlatformReport(
        format=rules.format, pushes=count, delivered=delivered, discarded=discarded,
        held_back=len(held) + count - fresh, failures=failures, blacklisted=blacklisted,
        probes=probes, elapsed=clock() - start,
    )  # fmt: skip
