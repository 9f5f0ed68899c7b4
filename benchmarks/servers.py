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

from benchmarks.services import BenchError, Store, Stream, iotpush_command

ROOT = Path(__file__).resolve().parent.parent
ConfigName = Literal[
    "iotpush", "baseline", "legacy", "iotpush-pg", "iotpush-pg2", "iotpush-nats", "iotpush-v5",
    "iotpush-nometrics",
]  # fmt: skip
CONFIGS: tuple[ConfigName, ...] = ("iotpush", "baseline", "legacy")
"""The configs run by default."""
ALL_CONFIGS: tuple[ConfigName, ...] = (
    *CONFIGS, "iotpush-pg", "iotpush-pg2", "iotpush-nats", "iotpush-v5", "iotpush-nometrics"
)  # fmt: skip
"""``iotpush-v5`` is ``iotpush`` loaded with the v5 variant of the mix; ``iotpush-nometrics``
``iotpush`` with ``--no-metrics``."""
IOTPUSH_CONFIGS: frozenset[str] = frozenset(c for c in ALL_CONFIGS if c.startswith("iotpush"))
"""The configs that are iotpush, with handlers to count and an inbox to measure."""
POSTGRES_PROCESSES = {"iotpush-pg": 1, "iotpush-pg2": 2}


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


def command_for(
    config: ConfigName, port: int, workdir: Path, store: str | None = None, sink: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line of ``config`` on ``port``, and the extra environment it needs.

    The iotpush configs keep their inbox in ``store`` (default: a SQLite file in ``workdir``) and
    publish to ``sink`` if given.
    """
    python = sys.executable
    host = "127.0.0.1"
    if config in IOTPUSH_CONFIGS:
        cmd = [
            iotpush_command(),
            "serve",
            "benchmarks.noop_receiver:receiver",
            "--host",
            host,
            "--port",
            str(port),
            "--store",
            store or f"sqlite:///{workdir / 'bench.db'}",
            "--synchronous",
            "full",
            "--log-level",
            "warning",
        ]
        if config in POSTGRES_PROCESSES:
            cmd.append("--reuse-port")
        if sink:
            cmd += ["--sink", sink]
        if config == "iotpush-nometrics":
            cmd.append("--no-metrics")
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
    """One running server: its process (and children, for gunicorn), or for ``iotpush-pg2`` two
    processes sharing the port."""

    config: ConfigName
    port: int
    workdir: Path
    processes: list[subprocess.Popen[bytes]]
    log_paths: list[Path]
    store: Store | None = None
    stream: Stream | None = None
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(
        cls,
        config: ConfigName,
        workdir: Path,
        pin: list[str],
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        postgres: str | None = None,
        nats: str | None = None,
    ) -> Server:
        """Start ``config`` in ``workdir`` (``env`` added) and wait until it accepts connections.

        The PostgreSQL configs get a fresh schema of ``postgres`` (migrated with
        ``iotpush db upgrade``), ``iotpush-nats`` a stream of its own on ``nats``; both are
        removed when the server stops.

        Raises:
            BenchError: It exited, or did not listen within ``ready_timeout`` seconds.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        count = POSTGRES_PROCESSES.get(config, 1)
        store = Store.create(postgres, workdir) if config in POSTGRES_PROCESSES else None
        stream = Stream.create(nats, workdir) if config == "iotpush-nats" else None
        server = cls(config, port, workdir, [], [], store, stream)
        try:
            for i in range(count):
                cmd, extra = command_for(
                    config, port, workdir, store and store.url, stream and stream.sink
                )
                if count > 1:  # each its own score file and log; the bench adds them up
                    extra["IOTPUSH_BENCH_STATS"] = str(workdir / f"stats-{i}.json")
                    cmd[cmd.index("--log-level") + 1] = "info"  # says when it listens
                server._spawn([*pin, *cmd], {**extra, **(env or {})}, f"server-{i}.log")
                # One at a time: a second server must listen before the load connects, or the
                # first takes every connection.
                server._wait_ready(server.processes[-1], ready_timeout, shared=count > 1)
        except BaseException:
            server.stop()
            raise
        return server

    def _spawn(self, cmd: list[str], env: dict[str, str], log_name: str) -> None:
        log_path = self.workdir / log_name
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=_clean_env(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        self.log_paths.append(log_path)

    def _wait_ready(
        self, process: subprocess.Popen[bytes], timeout: float, *, shared: bool = False
    ) -> None:
        deadline = time.monotonic() + timeout
        log_path = self.log_paths[self.processes.index(process)]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(
                    f"{self.config} exited with code {process.returncode} before listening:"
                    f"\n{self.log_tail()}"
                )
            if shared:  # the port answers already: only the server's log tells it listens too
                if b"Application startup complete" in log_path.read_bytes():
                    return
                time.sleep(0.05)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"{self.config} did not listen on port {self.port} within {timeout:.0f} s")

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The (first) server process."""
        return self.processes[0]

    @property
    def exited(self) -> list[int]:
        """Exit codes of the server processes that are gone."""
        return [code for p in self.processes if (code := p.poll()) is not None]

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines each server process wrote."""
        tails = []
        for log_path in self.log_paths:
            try:
                text = log_path.read_text(errors="replace")
            except OSError:
                continue
            tails.append("\n".join(text.splitlines()[-lines:]))
        return "\n---\n".join(tails)

    def memory(self) -> dict[str, int]:
        """Resident memory of the server's process trees in bytes: ``rss`` now, ``hwm`` peak.

        For several processes (gunicorn's arbiter and worker, two iotpush servers) the figures
        are sums.
        """
        total = {"rss": 0, "hwm": 0}
        for process in self.processes:
            for pid in process_tree(process.pid):
                for key, value in read_status(pid).items():
                    total[key] += value
        return total

    def stats(self) -> dict[str, Any] | None:
        """What ``noop_receiver`` last wrote (iotpush only), or None if not yet there; for two
        processes, their scores added up."""
        names = ["stats.json"] if len(self.processes) == 1 else [
            f"stats-{i}.json" for i in range(len(self.processes))
        ]  # fmt: skip
        scores = []
        for name in names:
            try:
                scores.append(json.loads((self.workdir / name).read_text()))
            except (OSError, ValueError):
                return None
        return scores[0] if len(scores) == 1 else merge_scores(scores)

    def inbox_bytes(self) -> int:
        """Size of the inbox: the SQLite file plus its write-ahead log, or the PostgreSQL schema."""
        if self.store is not None:
            return self.store.size()
        total = 0
        for name in ("bench.db", "bench.db-wal"):
            try:
                total += (self.workdir / name).stat().st_size
            except OSError:
                pass
        return total

    def cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) so far of every process of the server's trees and, for
        the PostgreSQL configs, of the database server processes serving its schema, by pid."""
        pids = [pid for process in self.processes for pid in process_tree(process.pid)]
        found = {pid: cpu_seconds(pid) for pid in pids}
        if self.store is not None:
            found.update({-pid: cpu_seconds(pid) for pid in self.store.backends()})
        return found

    def published(self) -> int | None:
        """Messages in the config's JetStream stream, or None without one."""
        return None if self.stream is None else self.stream.messages()

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL the process groups; the (first) exit code.

        A PostgreSQL schema made for the run is dropped.
        """
        codes = [_stop(process, grace) for process in self.processes]
        if self.store is not None:
            self.store.drop()
        if self.stream is not None:
            self.stream.delete()
        return codes[0] if codes else None


def _stop(process: subprocess.Popen[bytes], grace: float) -> int | None:
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left of the group we started (gunicorn workers)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return process.wait(5)
    except subprocess.TimeoutExpired:
        return None


def merge_scores(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The scores of several ``noop_receiver`` processes as one: counts (and ``held``) added,
    the timeline summed at every moment any of them recorded."""
    firsts = [s["first_at"] for s in scores if s.get("first_at")]
    lasts = [s["last_at"] for s in scores if s.get("last_at")]
    moments = sorted({t for s in scores for t, _ in s.get("timeline", [])})
    timeline = [[t, sum(count_at(s.get("timeline", []), t, 0) for s in scores)] for t in moments]
    merged = {
        "count": sum(int(s["count"]) for s in scores),
        "first_at": min(firsts, default=None),
        "last_at": max(lasts, default=None),
        "delays": [d for s in scores for d in s.get("delays", [])],
        "timeline": timeline,
    }
    held = [s["held"] for s in scores if "held" in s]
    if held:
        merged["held"] = [sum(column) for column in zip(*held, strict=True)]
    return merged


def count_at(timeline: list[list[float]], moment: float, default: int) -> int:
    """How many were handled at ``moment``, interpolated from (time, count) points."""
    before = [p for p in timeline if p[0] <= moment]
    after = [p for p in timeline if p[0] > moment]
    if not before:
        return default if not after else 0
    t0, c0 = before[-1]
    if not after:
        return int(c0)
    t1, c1 = after[0]
    return int(c0 + (c1 - c0) * (moment - t0) / (t1 - t0))


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far (0 if it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """CPU seconds spent between two `Server.cpu` readings: the server's processes, and the
    database's (negative keys); a process that appeared in between counts from zero."""
    spent = {pid: seconds - before.get(pid, 0.0) for pid, seconds in after.items()}
    return (
        sum(s for pid, s in spent.items() if pid > 0),
        sum(s for pid, s in spent.items() if pid < 0),
    )


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
