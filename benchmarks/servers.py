"""The servers under test: how each config is started, waited for, measured and stopped.

Every server runs as a subprocess on a free 127.0.0.1 port, in a session of its own, pinned to
one core when ``taskset`` exists. It is ready when its port accepts a connection; it is stopped
with SIGTERM, then SIGKILL to its whole process group after a grace period.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
ConfigName = Literal["iotpush", "baseline", "legacy"]
CONFIGS: tuple[ConfigName, ...] = ("iotpush", "baseline", "legacy")


class BenchError(Exception):
    """Something the benchmark cannot go on without; the message is one sentence for a person."""


def iotpush_command() -> str:
    """The ``iotpush`` console script beside this Python, or on PATH.

    Raises:
        BenchError: It is not installed.
    """
    beside = Path(sys.executable).parent / "iotpush"
    found = str(beside) if beside.exists() else shutil.which("iotpush")
    if not found:
        raise BenchError(
            f"the iotpush command is not installed (looked for {beside} and on PATH); "
            "run `make install` (pip install -e .) first, or leave iotpush out with "
            "--configs baseline,legacy"
        )
    return found


def pinning(enabled: bool = True) -> tuple[list[str], list[str]]:
    """``taskset`` prefixes for the server and the load generator: two different cores.

    Empty when pinning is off, ``taskset`` is missing, or fewer than two cores are usable.
    """
    cores = sorted(os.sched_getaffinity(0))
    if not enabled or shutil.which("taskset") is None or len(cores) < 2:
        return [], []
    return ["taskset", "-c", str(cores[0])], ["taskset", "-c", str(cores[1])]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_for(config: ConfigName, port: int, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command line of ``config`` on ``port``, and the extra environment it needs."""
    python = sys.executable
    host = "127.0.0.1"
    if config == "iotpush":
        store = f"sqlite:///{workdir / 'bench.db'}"
        cmd = [
            iotpush_command(),
            "serve",
            "benchmarks.noop_receiver:receiver",
            "--host",
            host,
            "--port",
            str(port),
            "--store",
            store,
            "--synchronous",
            "full",
            "--log-level",
            "warning",
        ]
        return cmd, {"IOTPUSH_BENCH_STATS": str(workdir / "stats.json")}
    if config == "baseline":
        cmd = [
            python,
            "-m",
            "uvicorn",
            "benchmarks.baseline_app:app",
            "--host",
            host,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        return cmd, {}
    cmd = [
        python,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-k",
        "sync",
        "-b",
        f"{host}:{port}",
        "--log-level",
        "warning",
        "benchmarks.legacy_app:app",
    ]
    return cmd, {}


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    # Stray IOTPUSH_* settings of the caller would change the server under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTPUSH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Server:
    """One running server process (and its children, for gunicorn)."""

    config: ConfigName
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(
        cls,
        config: ConfigName,
        workdir: Path,
        pin: list[str],
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> Server:
        """Start ``config`` in ``workdir`` (``env`` added) and wait until it accepts connections.

        Raises:
            BenchError: It exited, or did not listen within ``ready_timeout`` seconds.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cmd, extra = command_for(config, port, workdir)
        log_path = workdir / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*pin, *cmd],
                cwd=ROOT,
                env=_clean_env({**extra, **(env or {})}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(config, port, workdir, process, log_path)
        try:
            server._wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.config} exited with code {self.process.returncode} before listening:"
                    f"\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"{self.config} did not listen on port {self.port} within {timeout:.0f} s")

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines the server wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def memory(self) -> dict[str, int]:
        """Resident memory of the server's process tree in bytes: ``rss`` now, ``hwm`` peak.

        For several processes (gunicorn's arbiter and worker) the figures are sums.
        """
        total = {"rss": 0, "hwm": 0}
        for pid in process_tree(self.process.pid):
            for key, value in read_status(pid).items():
                total[key] += value
        return total

    def stats(self) -> dict[str, Any] | None:
        """What ``noop_receiver`` last wrote (iotpush only), or None if not yet there."""
        try:
            data: dict[str, Any] = json.loads((self.workdir / "stats.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def inbox_bytes(self) -> int:
        """Size of the SQLite inbox: the database file plus its write-ahead log."""
        total = 0
        for name in ("bench.db", "bench.db-wal"):
            try:
                total += (self.workdir / name).stat().st_size
            except OSError:
                pass
        return total

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL the process group; the exit code."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group we started (gunicorn workers)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, found through ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after its end.
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def read_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` from ``/proc/PID/status``, in bytes (empty if gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found["rss" if line.startswith("VmRSS") else "hwm"] = (
                        int(line.split()[1]) * 1024
                    )
    except OSError:
        pass
    return found
