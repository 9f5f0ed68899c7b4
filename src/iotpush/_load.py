"""Posting many prepared bodies over HTTP and reporting what happened: `iotpush.testing.send`'s
engine, and the ``iotpush send`` command's."""

from __future__ import annotations

import asyncio
import math
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpx

__all__ = ["MAX_FAILURES", "SendReport", "describe", "run"]

MAX_FAILURES: Final = 5
"""How many distinct failures a `SendReport` describes (the rest are only counted)."""
_BODY_SHOWN: Final = 300


@dataclass(frozen=True)
class SendReport:
    """What `iotpush.testing.send` did: counts by outcome, time taken, latencies in ms.

    Attributes:
        failures: The first distinct failures, each described in one line (an answer other
            than 200 with its body, or a transport error with its cause), and how many
            requests ended that way.
    """

    sent: int
    ok: int
    by_status: dict[int, int]
    errors: int
    elapsed: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rate: float
    failures: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"sent {self.sent}, 200 OK {self.ok}, errors {self.errors}, {self.elapsed:.2f} s, "
            f"{self.rate:.1f}/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        )


def describe(exc: BaseException) -> str:
    """A transport error in one line, with its root cause (``Connection refused``, a TLS error)."""
    root = exc
    while (cause := root.__cause__ or root.__context__) is not None:
        root = cause
    if isinstance(root, OSError) and not isinstance(root, ssl.SSLError) and root.errno:
        reason = os.strerror(root.errno)
    else:
        reason = str(root) or type(root).__name__
    return f"{type(exc).__name__}: {reason}"


def _percentile(ordered: Sequence[float], percent: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


async def run(
    targets: tuple[str, str],
    make: Callable[[int], tuple[bytes, bool]],
    *,
    count: int,
    rate: float | None,
    concurrency: int,
    timeout: float,
    headers: Mapping[str, str],
    on_progress: Callable[[int], None] | None = None,
    verify: ssl.SSLContext | bool = True,
    sign: Callable[[bytes], Mapping[str, str]] | None = None,
) -> SendReport:
    """Post ``count`` bodies over keep-alive connections; report what happened.

    Args:
        targets: The URL of other bodies and of NB-IoT command status bodies.
        make: Request ``i``'s body, and whether it is an NB-IoT command status.
        count: How many requests to make.
        rate: Requests per second overall; None: as fast as ``concurrency`` allows.
        concurrency: Requests in flight at once (and connections kept open).
        timeout: Seconds to wait for each answer; a request that times out is an error.
        headers: Headers of every request.
        on_progress: Called with the number of finished requests after each one.
        verify: How to verify an HTTPS server: a context (its CA), True (the system's), False.
        sign: The extra headers of one body (a signature).
    """
    latencies: list[float] = []
    by_status: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    errors = finished = claimed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start = time.perf_counter()

    def failed(description: str) -> None:
        if description in failures or len(failures) < MAX_FAILURES:
            failures[description] += 1

    async with httpx.AsyncClient(
        timeout=timeout, limits=limits, headers=dict(headers), verify=verify
    ) as client:

        async def worker() -> None:
            nonlocal errors, finished, claimed
            while claimed < count:
                i, claimed = claimed, claimed + 1
                if rate is not None:
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                body, command = make(i)
                extra = None if sign is None else dict(sign(body))
                began = time.perf_counter()
                try:
                    answer = await client.post(targets[command], content=body, headers=extra)
                except httpx.TransportError as exc:
                    errors += 1
                    failed(describe(exc))
                else:
                    latencies.append((time.perf_counter() - began) * 1000)
                    by_status[answer.status_code] += 1
                    if answer.status_code != 200:
                        text = answer.content[:_BODY_SHOWN].decode("utf-8", "replace").strip()
                        failed(f"HTTP {answer.status_code}: {text}")
                finished += 1
                if on_progress is not None:
                    on_progress(finished)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, count)):
                group.create_task(worker())

    elapsed = time.perf_counter() - start
    latencies.sort()
    return SendReport(
        sent=finished,
        ok=by_status[200],
        by_status=dict(by_status),
        errors=errors,
        elapsed=elapsed,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        rate=finished / elapsed if elapsed > 0 else 0.0,
        failures=dict(failures),
    )
