"""What the server stack costs per request: uvicorn's httptools protocol as `iotpush serve` makes
it, in process, its transport faked, the bare app (`baseline_app`) behind it.

    python -m benchmarks.stack -n 20000

No sockets and no disk: run it under ``valgrind --tool=callgrind`` at two sizes and divide the
difference of the instruction counts by the difference of the requests, to compare two versions
of the protocol class on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from benchmarks.baseline_app import app
from iotpush._slowclients import with_header_timeout

BODY = (
    b'{"notifyType":"deviceDataChanged","deviceId":"d1","gatewayId":"g","service":{"serviceId":'
    b'"s","serviceType":"t","data":{"a":1},"eventTime":"20260101T000000Z"}}'
)
REQUEST = (
    b"POST /v1.0.0/messageReceiver HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY)
) + BODY


class Transport(asyncio.Transport):
    """Counts the writes; never blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(count: int, connections: int) -> float:
    """CPU seconds for ``count`` requests over ``connections`` connections (after a warm-up)."""
    loop = asyncio.get_running_loop()
    config = Config(app, loop="none", http="httptools", log_level="warning", access_log=False,
                    timeout_keep_alive=5, lifespan="off")  # fmt: skip
    config.load()
    state = ServerState()
    protocol = with_header_timeout(HttpToolsProtocol, 30.0)
    pairs = []
    for _ in range(connections):
        conn: Any = protocol(config=config, server_state=state, app_state={}, _loop=loop)
        transport = Transport()
        conn.connection_made(transport)
        pairs.append((conn, transport))

    async def drive(conn: Any, transport: Transport, requests: int) -> None:
        for _ in range(requests):
            answered = transport.writes + 2  # the head, then the body
            conn.data_received(REQUEST)
            while transport.writes < answered:
                await asyncio.sleep(0)

    await asyncio.gather(*(drive(c, t, 50) for c, t in pairs))
    start = cpu()
    await asyncio.gather(*(drive(c, t, count // connections) for c, t in pairs))
    spent = cpu() - start
    for conn, _ in pairs:
        conn.connection_lost(None)
    return spent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20_000, help="requests")
    p.add_argument("--connections", type=int, default=64, help="connections")
    args = p.parse_args(argv)
    spent = uvloop.run(measure(args.n, args.connections))
    print(f"server stack: {spent / args.n * 1e6:.1f} µs CPU per request")


if __name__ == "__main__":
    main()
