"""The package as users get it: the sdist and wheel ``python -m build`` makes, the wheel installed
in a fresh virtual environment (no Makefile, no source tree) and served from there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from iotpush import __version__, testing
from tests._servers import ROOT, free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

NAME = f"iotpush-{__version__}"
WHEEL = f"{NAME}-py3-none-any.whl"


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def test_wheel_holds_every_file_of_the_package_and_the_license(dist: Path) -> None:
    with zipfile.ZipFile(dist / WHEEL) as wheel:
        names = set(wheel.namelist())
    source = ROOT / "src"
    package = {
        path.relative_to(source).as_posix()
        for path in (source / "iotpush").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "iotpush/py.typed" in package
    assert package == {name for name in names if name.startswith("iotpush/")}
    info = f"{NAME}.dist-info"
    assert {f"{info}/licenses/LICENSE", f"{info}/entry_points.txt"} <= names


def test_sdist_holds_the_sources_license_and_deploy_recipes(dist: Path) -> None:
    with tarfile.open(dist / f"{NAME}.tar.gz") as sdist:
        names = set(sdist.getnames())
    for path in ("LICENSE", "README.md", "pyproject.toml", "src/iotpush/py.typed",
                 "deploy/iotpush.toml", "deploy/systemd/iotpush.service"):  # fmt: skip
        assert f"{NAME}/{path}" in names
    assert not any("/.venv/" in name or "__pycache__" in name for name in names)


def test_wheel_in_a_fresh_venv_serves_a_push(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    wheel = dist / WHEEL
    run(venv / "bin" / "pip", "install", "--quiet", "-c", ROOT / "requirements.lock", wheel)
    iotpush = venv / "bin" / "iotpush"
    assert run(iotpush, "--version") == f"iotpush, version {__version__}\n"
    where = run(
        venv / "bin" / "python", "-c", "import iotpush; print(iotpush.__file__)", cwd=tmp_path
    )
    assert where.startswith(str(venv))
    # Away from the source tree, with nothing of this suite's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "IOTPUSH_"))}
    port = free_port()
    log = tmp_path / "out.log"
    command = [iotpush, "serve", "--port", str(port), "--store", "sqlite:///inbox.db"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 30, "the installed server to answer")
        n = testing.build("deviceDataChanged", device_id="from-the-wheel")
        assert testing.post(url + testing.path_for(n), n).status == 200
        wait_until(lambda: '"device":"from-the-wheel"' in log.read_text(), 10, "the push printed")
    finally:
        server.terminate()
        # uvicorn ends by SIGTERM again once shut down: a clean stop for systemd too.
        status = server.wait(30)
    assert status in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert (tmp_path / "inbox.db").exists()
