"""The load generator: wrk, installed if missing, driven by ``mix.lua``, its figures parsed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .servers import BenchError

SCRIPT = Path(__file__).resolve().parent / "mix.lua"
MARKER = "IOTPUSH_BENCH_JSON "
# The platform gives up on a push after 15 s. A request still unanswered when wrk stops is never
# counted at all, so the limit is also at most half the run: a server that hangs shows timeouts.
PLATFORM_TIMEOUT = 15.0


def timeout_for(duration: int) -> int:
    """The seconds after which wrk counts a request as timed out, for a run of ``duration``."""
    return int(min(PLATFORM_TIMEOUT, max(1, duration // 2)))


def ensure_wrk() -> str:
    """The path of ``wrk``, installing the Debian package first if it is missing and we can.

    Raises:
        BenchError: wrk is missing and cannot be installed here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise BenchError(
            "the load generator wrk is not installed and apt-get is not available to install it; "
            "install wrk (https://github.com/wg/wrk) and run again"
        )
    if os.geteuid() != 0:
        raise BenchError(
            "the load generator wrk is not installed; install it with `sudo apt-get install -y "
            "wrk` (this benchmark installs it itself only when run as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    print("wrk is missing; installing it with apt-get ...", flush=True)
    for step in ([install], [["apt-get", "update", "-q"], install]):
        if all(_quiet(cmd, env) for cmd in step) and shutil.which("wrk"):
            return str(shutil.which("wrk"))
    raise BenchError(
        "wrk is missing and `apt-get install -y wrk` failed; install wrk and run again"
    )


def _quiet(cmd: list[str], env: dict[str, str]) -> bool:
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
    return result.returncode == 0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one wrk run measured. Latencies are in milliseconds (None: nothing was answered)."""

    requests: int
    duration: float
    ok: int
    errors: int
    errors_by_kind: dict[str, int]
    rps: float
    ok_rps: float
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None
    mean: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def parse(output: str) -> LoadResult:
    """Read the line ``mix.lua``'s ``done()`` printed.

    Raises:
        BenchError: The line is missing (wrk failed).
    """
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            break
    else:
        raise BenchError(f"wrk printed no result line; its output was:\n{output[-2000:]}")
    errors = {k: int(v) for k, v in data["errors"].items()}
    requests = int(data["requests"])
    duration = data["duration_us"] / 1e6
    # wrk's `status` errors are responses >= 400; the rest are failed sockets and timeouts.
    ok = requests - errors["status"]
    # Without a single answer wrk's latency figures are meaningless zeros.
    lat = {k: (v / 1000.0 if requests else None) for k, v in data["latency_us"].items()}
    return LoadResult(
        requests=requests,
        duration=duration,
        ok=ok,
        errors=sum(errors.values()),
        errors_by_kind=errors,
        rps=requests / duration,
        ok_rps=ok / duration,
        p50=lat["p50"],
        p90=lat["p90"],
        p99=lat["p99"],
        p999=lat["p999"],
        max=lat["max"],
        mean=lat["mean"],
    )


def run_wrk(
    wrk: str, url: str, mix_file: Path, duration: int, connections: int, pin: list[str]
) -> tuple[LoadResult, str]:
    """Load ``url`` with the mix for ``duration`` s (whole seconds, as wrk takes them) on
    ``connections`` connections, one thread.

    Returns the parsed figures and wrk's own report (with its ``--latency`` distribution).

    Raises:
        BenchError: wrk failed or hung.
    """
    cmd = [
        *pin,
        wrk,
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--timeout",
        f"{timeout_for(duration)}s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(mix_file),
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration + 60:.0f} s") from exc
    if done.returncode != 0:
        output = (done.stderr + done.stdout).strip()[-2000:]
        raise BenchError(f"wrk failed with code {done.returncode}: {output}")
    report = "\n".join(line for line in done.stdout.splitlines() if not line.startswith(MARKER))
    return parse(done.stdout), report
