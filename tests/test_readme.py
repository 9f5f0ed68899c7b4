"""Every example of the README runs: Python blocks are executed, console sessions are run in a
shell against a real server on loopback and their output compared where it is deterministic.

A block that cannot run here (systemd, nginx, another host) is marked on the line before it:
``<!-- not run: why -->``; a console block that expects ``iotpush serve`` running elsewhere (as
the quick start's second terminal does) is marked ``<!-- run with a server -->``, and gets one
on a free port, with ``IOTPUSH_SEND_URL`` pointing at it. A Python block whose first line is
``# NAME.py`` is also written to ``NAME.py``, for the blocks after it to import. In console
output, times, durations (decimals, and whole milliseconds: ``3 ms``) and other decimals are
compared as "a number"; a command marked
``# trimmed`` has its output unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
VENV_BIN = Path(sys.executable).parent
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->\s*$")
_WITH_SERVER = "<!-- run with a server -->"
_END = "@@readme-command-done@@"
# Values that differ from run to run: ISO times, decimals (durations, rates, Unix times), whole
# milliseconds.
_VOLATILE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z|\d+\.\d+|\b\d+(?= ms\b)")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: its language, text, first line number, and why not run."""

    language: str
    text: str
    line: int
    not_run: str | None
    with_server: bool = False

    @property
    def id(self) -> str:
        return f"{self.language}-line-{self.line}"


def blocks(text: str) -> list[Block]:
    """The README's ``python`` and ``console`` blocks, in order."""
    found = []
    for match in _FENCE.finditer(text):
        language = match.group(1)
        if language not in ("python", "console"):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 2
        found.append(
            Block(language, match.group(2), line, reason and reason.group(1),
                  before.strip() == _WITH_SERVER)
        )  # fmt: skip
    return found


@dataclass
class Command:
    """One ``$`` command of a console block and the output shown after it."""

    text: str
    expected: list[str]


def commands(block: str) -> list[Command]:
    """The commands of a console block (``>`` and ``\\`` continue one) and their output."""
    found: list[Command] = []
    continued = False
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:], []))
            continued = line.endswith("\\")
        elif found and (continued or (line.startswith("> ") and not found[-1].expected)):
            found[-1].text += "\n" + (line[2:] if line.startswith("> ") else line)
            continued = line.endswith("\\")
        elif found:
            found[-1].expected.append(line)
    return found


def normalised(lines: list[str]) -> list[str]:
    return [_VOLATILE.sub("<n>", line.rstrip()) for line in lines]


ALL = blocks(README.read_text())


def test_readme_blocks_found_include_both_languages_and_marks() -> None:
    languages = {b.language for b in ALL}
    assert languages == {"python", "console"}
    assert any(b.not_run for b in ALL) and any(not b.not_run for b in ALL)


def test_blocks_marked_not_run_are_told_apart_and_continuations_joined() -> None:
    text = (
        "a\n<!-- not run: needs systemd -->\n```console\n$ x \\\n  --y\nout\n```\n"
        "```python\nz\n```\n"
    )
    found = blocks(text)
    assert [(b.language, b.not_run, b.line) for b in found] == [
        ("console", "needs systemd", 4), ("python", None, 9)
    ]  # fmt: skip
    assert commands(found[0].text) == [Command("x \\\n  --y", ["out"])]


def test_normalised_masks_times_decimals_and_milliseconds() -> None:
    line = "at 2026-12-01T14:46:30.123Z, 2.06 s and 12 ms; 200 pushes, 3 msgs"
    assert normalised([line]) == ["at <n>, <n> s and <n> ms; 200 pushes, 3 msgs"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTPUSH_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["IOTPUSH_SERVE_PORT"] = str(port)
    env["IOTPUSH_SEND_URL"] = f"http://127.0.0.1:{port}/v1.0.0/messageReceiver"
    return env


def _prepare(tmp_path: Path) -> None:
    """Write the blocks that name a file (``# app.py``) into ``tmp_path``."""
    for block in ALL:
        first = block.text.split("\n", 1)[0]
        name = re.match(r"#\s*(\w+\.py)\b", first)
        if block.language == "python" and name:
            (tmp_path / name.group(1)).write_text(block.text)


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "python"], ids=lambda b: b.id)
def test_readme_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.not_run:
        pytest.skip(f"README marks it not run: {block.not_run}")
    _prepare(tmp_path)
    env = _environment(_free_port())
    result = subprocess.run(
        [sys.executable, "-c", block.text], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"README line {block.line}:\n{result.stderr}"


def _script(cmds: list[Command], port: int, *, with_server: bool = False) -> str:
    """A bash script running ``cmds``, each followed by a marker with its exit status; a server
    started in the background is waited for, and stopped at the end."""
    lines = ["exec 2>&1"]
    if with_server:
        cmds = [Command("iotpush serve --store sqlite:///server.db > server.log 2>&1 &", []), *cmds]
    for command in cmds:
        lines.append(command.text.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
        if command.text.rstrip().endswith("&") or "&  #" in command.text:
            lines.append(
                f"for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break;"
                " sleep 0.1; done"
            )
        lines.append(f'echo "{_END} $?"')
    lines.append("kill $(jobs -p) 2>/dev/null; wait")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "console"], ids=lambda b: b.id)
def test_readme_console_block_runs_and_prints_what_it_shows(block: Block, tmp_path: Path) -> None:
    if block.not_run:
        pytest.skip(f"README marks it not run: {block.not_run}")
    if shutil.which("curl") is None and "curl" in block.text:
        if os.environ.get("IOTPUSH_REQUIRE_SERVICES") == "1":
            pytest.fail("curl is needed for the README's sessions")
        pytest.skip("curl is not installed")
    _prepare(tmp_path)
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)  # for `.venv/bin/iotpush`
    port = _free_port()
    cmds = commands(block.text)
    result = subprocess.run(
        ["bash", "-c", _script(cmds, port, with_server=block.with_server)],
        cwd=tmp_path, env=_environment(port), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    outputs = result.stdout.split(_END)
    if block.with_server:  # the server's start is not the README's
        outputs = [outputs[1].split("\n", 1)[1], *outputs[2:]]
    assert len(outputs) == len(cmds) + 1, f"README line {block.line}: {result.stdout}"
    for i, command in enumerate(cmds):
        status_line, _, _ = outputs[i + 1].partition("\n")
        output = outputs[i].split("\n", 1)[1] if i else outputs[0]
        shown = output.rstrip("\n").split("\n") if output.strip() else []
        where = f"README line {block.line}, `{command.text}`"
        assert status_line.strip() == "0", f"{where} failed:\n{output}"
        if "# trimmed" not in command.text:
            assert normalised(shown) == normalised(command.expected), where
