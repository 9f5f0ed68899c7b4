"""Several servers on one port (``serve --reuse-port``): the kernel spreads the connections."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from iotpush import testing
from iotpush.exceptions import ConfigError
from iotpush.server import Config
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_config_reuse_port_with_sqlite_store_is_refused() -> None:
    with pytest.raises(ConfigError, match="--reuse-port needs a shared store"):
        Config(reuse_port=True).check()


def _printed(log: Path) -> list[dict[str, object]]:
    """The notifications the default receiver printed (one JSON object per line)."""
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_serve_reuse_port_two_servers_share_the_port_and_the_work(
    tmp_path: Path, postgres_store: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", "--port", str(port), "--store",
        postgres_store, "--reuse-port", "--log-level", "warning",
    ]  # fmt: skip
    logs = [tmp_path / f"server-{i}.log" for i in range(2)]
    processes = []
    for log in logs:
        with log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT
                )
            )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not all(f"port {port}" in log.read_text() or _up(url) for log in logs):
            assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
            assert time.monotonic() < deadline, "the servers did not start"
            time.sleep(0.1)
        wait_until(lambda: all(p.poll() is None for p in processes) and _up(url))
        count = 60
        for i in range(count):  # a new connection each: the kernel picks a server for each
            body = testing.encode(testing.build("deviceDataChanged", service={"data": {"n": i}}))
            answer = httpx.post(url + testing.path_for("deviceDataChanged"), content=body,
                                headers={"content-type": "application/json"})  # fmt: skip
            assert answer.status_code == 200, answer.text
        wait_until(lambda: sum(len(_printed(log)) for log in logs) >= count, timeout=20)
        handled = [len(_printed(log)) for log in logs]
        assert sum(handled) == count
        assert all(n > 0 for n in handled), f"one server took every connection: {handled}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
