"""The deployment recipes of ``deploy/``: the systemd unit, and nginx in front of iotpush.

nginx runs as a private process (its own prefix, configuration, pid file and loopback ports, one
process, no daemon), never the machine's nginx service.
"""

from __future__ import annotations

import configparser
import contextlib
import inspect
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from iotpush import Config, testing
from iotpush.dispatch import Dispatcher
from iotpush.server import uvicorn_options
from iotpush.sinks import Publisher
from tests._servers import ROOT, Server, free_port, serve
from tests.conftest import service_missing, wait_until

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy"
API_TOKEN = "an-api-token-for-the-proxy"
CLIENT, STRANGER, PEER = "127.0.0.3", "127.0.0.4", "127.0.0.2"


def program(name: str, package: str) -> str:
    """The path of ``name``; skip (or fail, in CI) if the Debian package is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        service_missing(f"{name} is not installed (apt-get install {package}; .ci/run does)")
    return found


# --- systemd -----------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / "iotpush.service")
    return parser


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = program("systemd-analyze", "systemd")
    # verify checks that ExecStart's program exists: point it at this suite's iotpush.
    text = (DEPLOY / "systemd" / "iotpush.service").read_text()
    here = str(Path(sys.executable).parent / "iotpush")
    assert "ExecStart=/opt/iotpush/bin/iotpush " in text
    copy = tmp_path / "iotpush.service"
    copy.write_text(text.replace("ExecStart=/opt/iotpush/bin/iotpush ", f"ExecStart={here} "))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    complaints = [line for line in done.stderr.splitlines() if "iotpush.service" in line]
    assert (done.returncode, complaints) == (0, []), done.stderr


def test_systemd_unit_runs_hardened_as_its_own_user_and_outlasts_the_shutdown_grace() -> None:
    service = unit()["Service"]
    assert service["User"] == service["Group"] == "iotpush"
    assert service["ExecStart"].endswith("iotpush serve --config /etc/iotpush/iotpush.toml")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/iotpush/iotpush.env"
    for setting, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("PrivateTmp", "yes"), ("StateDirectory", "iotpush"),
                           ("ReadWritePaths", "/var/lib/iotpush")]:  # fmt: skip
        assert service[setting] == value
    # requests, then sink publishers, then handlers under way, one after the other
    grace = (
        uvicorn_options(Config())["timeout_graceful_shutdown"]
        + inspect.signature(Publisher.stop).parameters["grace"].default
        + inspect.signature(Dispatcher.stop).parameters["grace"].default
    )
    assert float(service["TimeoutStopSec"].removesuffix("s")) > grace


def test_example_config_keeps_the_store_in_the_units_state_directory() -> None:
    command = [
        sys.executable,
        "-m",
        "iotpush",
        "config",
        "show",
        "--config",
        DEPLOY / "iotpush.toml",
    ]
    shown = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    state = "/var/lib/" + unit()["Service"]["StateDirectory"]
    assert f'store = "sqlite:///{state}/iotpush.db"' in shown


# --- nginx in front ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def nginx_conf(folder: Path, port: int, upstream: int, ca: trustme.CA) -> Path:
    """deploy/nginx/iotpush.conf on loopback ports and a test certificate, in a private nginx."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    site = (DEPLOY / "nginx" / "iotpush.conf").read_text()
    for old, new in [
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};"),
        ("/etc/iotpush/tls/fullchain.pem", str(folder / "cert.pem")),
        ("/etc/iotpush/tls/privkey.pem", str(folder / "key.pem")),
    ]:
        assert old in site, f"deploy/nginx/iotpush.conf no longer has {old!r}"
        site = site.replace(old, new)
    (folder / "iotpush.conf").write_text(site)
    temp = "".join(
        f"{kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n{temp}access_log {folder / 'access.log'};\n"
        f"include {folder / 'iotpush.conf'};\n}}\n"
    )
    return main


@contextlib.contextmanager
def nginx(folder: Path, conf: Path, port: int) -> Iterator[None]:
    binary = program("nginx", "nginx")
    command = [binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    with (folder / "nginx.out").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, (folder / "error.log").read_text()
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            return False

        wait_until(up, 20, "nginx to listen")
        yield
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA
) -> Iterator[tuple[str, Server]]:
    """iotpush as deploy/iotpush.toml and the unit run it (the allowlist: CLIENT), behind nginx
    as deploy/nginx/iotpush.conf runs it; the proxy's https URL and the server."""
    folder = tmp_path_factory.mktemp("nginx")
    port, upstream = free_port(), free_port()
    conf = nginx_conf(folder, port, upstream, ca)
    options = ["--config", str(DEPLOY / "iotpush.toml"), "--allow-ip", CLIENT]
    env = {"IOTPUSH_SERVE_API_TOKEN": API_TOKEN}  # as the unit's environment file gives it
    with (
        serve(folder, upstream, "iotpush.server:default_receiver", *options,
              store=f"sqlite:///{folder / 'iotpush.db'}", env=env, name="iotpush") as server,
        nginx(folder, conf, port),
    ):  # fmt: skip
        yield f"https://127.0.0.1:{port}", server


def post(
    url: str, ca: trustme.CA | None, source: str, kind: str = "deviceDataChanged", **headers: str
) -> int:
    """Post a push of ``kind`` to ``url`` from the address ``source``; the status code."""
    verify: ssl.SSLContext | bool = False
    if ca is not None:
        verify = ssl.create_default_context()
        ca.configure_trust(verify)
    transport = httpx.HTTPTransport(local_address=source, verify=verify)
    n = testing.build(kind)
    with httpx.Client(transport=transport, timeout=10) as client:
        answer = client.post(
            url + testing.path_for(n), content=testing.encode(n),
            headers={"content-type": "application/json", **headers},
        )  # fmt: skip
    return answer.status_code


@pytest.mark.parametrize(
    "kind", ["deviceDataChanged", "device.property:report"], ids=["legacy", "v5"]
)
def test_nginx_forwards_a_push_over_tls_with_the_clients_address(
    proxied: tuple[str, Server], ca: trustme.CA, kind: str
) -> None:
    url, server = proxied
    assert post(url, ca, CLIENT, kind) == 200
    wait_until(lambda: f'"type":"{kind}"' in server.output(), 10, "the push printed")


def test_nginx_client_outside_the_allowlist_is_refused_even_when_it_forges_the_header(
    proxied: tuple[str, Server], ca: trustme.CA
) -> None:
    url, _ = proxied
    assert post(url, ca, STRANGER) == 403
    assert post(url, ca, STRANGER, **{"X-Forwarded-For": CLIENT}) == 403


def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored(
    proxied: tuple[str, Server],
) -> None:
    _, server = proxied
    assert post(server.url, None, PEER, **{"X-Forwarded-For": CLIENT}) == 403
    assert post(server.url, None, CLIENT) == 200  # the same push, straight from an allowed peer


def test_nginx_serves_the_query_api_with_its_token_only(
    proxied: tuple[str, Server], ca: trustme.CA
) -> None:
    url, _ = proxied
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    transport = httpx.HTTPTransport(local_address=CLIENT, verify=verify)
    with httpx.Client(base_url=url, transport=transport) as client:
        without = client.get("/api/devices")
        with_token = client.get("/api/devices", headers={"authorization": f"Bearer {API_TOKEN}"})
        health = client.get("/health")
    assert (without.status_code, with_token.status_code) == (401, 200)
    assert health.status_code == 404  # not public


def test_nginx_refuses_clients_that_do_not_trust_its_certificate(
    proxied: tuple[str, Server],
) -> None:
    url, _ = proxied
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/api/devices")
