"""HTTPS and the query API's tokens, through a real server on loopback."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from click.testing import CliRunner

from iotpush import Config, ConfigError, create_app, testing
from iotpush.cli import main
from iotpush.events import Refused
from iotpush.server import uvicorn_options
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, running

TOKEN = "t0ken-with-enough-entropy"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A server certificate for 127.0.0.1, its key, and the CA, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": folder / "cert.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    ca.cert_pem.write_to_path(files["ca"])
    return {name: str(path) for name, path in files.items()}


def serving(config: Config) -> Any:
    options = uvicorn_options(config)
    for name in ("host", "port", "loop", "http", "log_level"):  # the test's own socket and loop
        options.pop(name)
    return running(create_app(config), **options)


def test_https_serves_notifications_with_a_certificate_the_client_verifies(
    tls_files: dict[str, str], db: str, ca: trustme.CA
) -> None:
    recorder = Recorder()
    config = Config(receiver=recorder, store=db, ssl_certfile=tls_files["cert"],
                    ssl_keyfile=tls_files["key"])  # fmt: skip
    with serving(config) as url:
        assert url.startswith("https://")
        verify = ssl.create_default_context(cafile=tls_files["ca"])
        response = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"], verify=verify)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
        # Plain HTTP to the TLS port gets no HTTP answer: a protocol error or a reset, as the
        # server's close races the client's read.
        with pytest.raises(httpx.TransportError):
            httpx.post(url.replace("https", "http") + RECEIVE, content=b"{}")
        recorder.wait_for(1)
    assert (response.status_code, response.text, response.http_version) == (200, "ok", "HTTP/1.1")


def test_https_required_client_certificate_refuses_clients_without_one(
    tls_files: dict[str, str], db: str, ca: trustme.CA, tmp_path: Path
) -> None:
    client = ca.issue_cert("gateway.example")
    client_pem = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(client_pem)
    config = Config(receiver=Recorder(), store=db, ssl_certfile=tls_files["cert"],
                    ssl_keyfile=tls_files["key"], ssl_ca_certs=tls_files["ca"],
                    ssl_cert_reqs="required")  # fmt: skip
    with serving(config) as url:
        bare = ssl.create_default_context(cafile=tls_files["ca"])
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"], verify=bare)
        with_cert = ssl.create_default_context(cafile=tls_files["ca"])
        with_cert.load_cert_chain(client_pem)
        response = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"], verify=with_cert)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Bearer wrong-token-of-some-length", 401), ("Basic abc", 401),
     (f"Bearer {TOKEN}", 200), (f"bearer {TOKEN}", 200)],
    ids=["missing", "wrong", "other-scheme", "right", "lower-case-scheme"],
)  # fmt: skip
def test_query_api_with_tokens_requires_one(db: str, header: str | None, status: int) -> None:
    config = Config(receiver=Recorder(), store=db, api_tokens=("another-token-0000", TOKEN))
    headers = {} if header is None else {"authorization": header}
    with serving(config) as url:
        response = httpx.get(url + "/api/devices", headers=headers)
        schema = httpx.get(url + "/openapi.json")  # no device data: open to all
        receive = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="iotpush"'
        assert response.json()["error"] == "a valid bearer token is required"
    assert (schema.status_code, receive.status_code) == (200, 200)


def test_query_api_off_loopback_without_token_is_refused(db: str) -> None:
    config = Config(receiver=Recorder(), store=db, host="0.0.0.0")
    app = create_app(config)
    tally = Tally(app.events)
    with running(app) as url:  # served on loopback here, configured as if public
        response = httpx.get(url + "/api/devices")
    assert response.status_code == 403
    assert "--api-token" in response.json()["error"]
    assert tally(Refused, reason="forbidden", status=403, route="/api/devices") == 1


def test_query_api_behind_a_trusted_proxy_without_token_is_refused(db: str) -> None:
    config = Config(receiver=Recorder(), store=db, allow_ips=("127.0.0.0/8",),
                    trusted_proxies=("127.0.0.1",))  # fmt: skip
    app = create_app(config)
    with running(app) as url:  # the proxy is on loopback; its clients are anywhere
        response = httpx.get(url + "/api/devices", headers={"x-forwarded-for": "127.0.0.9"})
    assert response.status_code == 403
    assert "--api-token" in response.json()["error"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False), ("example.com", False)],
)  # fmt: skip
def test_config_loopback_knows_loopback_addresses(host: str, loopback: bool) -> None:
    assert Config(host=host).loopback is loopback


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"ssl_keyfile": "k.pem"}, "--ssl-keyfile needs --ssl-certfile"),
     ({"ssl_certfile": "c.pem", "ssl_cert_reqs": "required"}, "needs --ssl-ca-certs"),
     ({"ssl_ca_certs": "ca.pem"}, "client certificates need TLS"),
     ({"api_tokens": ("short",)}, "at least 16 characters")],
    ids=["key-alone", "reqs-without-ca", "ca-without-tls", "short-token"],
)  # fmt: skip
def test_config_check_refuses_options_that_cannot_work(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(store="memory://", **changes).check()


def test_cli_serve_bad_tls_options_is_one_line_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--store", "memory://", "--ssl-keyfile", "k.pem"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --ssl-keyfile needs --ssl-certfile"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_cli_api_token_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTPUSH_SERVE_API_TOKEN", "short")  # refused when read, named
    result = CliRunner().invoke(main, ["serve", "--store", "memory://"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "'IOTPUSH_SERVE_API_TOKEN'" in last and "at least 16 characters" in last


def test_access_log_with_path_token_masks_the_token(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import wait_until

    token = "s3cret-Path-Token-0123"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "iotpush.cli", "serve", "--port", str(port),
        "--store", f"sqlite:///{tmp_path / 'db.sqlite'}", "--path-token", token, "--access-log",
    ]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=root, env=os.environ.copy(), stdout=out, stderr=out)
    try:
        wait_until(lambda: b"Application startup complete" in log.read_bytes(), timeout=20)
        url = f"http://127.0.0.1:{port}"
        body = testing.encode(testing.build("deviceDataChanged"))
        headers = {"content-type": "application/json"}
        ok = httpx.post(f"{url}/{token}{RECEIVE}?x=1", content=body, headers=headers)
        guess = httpx.post(f"{url}/{token[:-1]}X{RECEIVE}", content=body, headers=headers)
        health = httpx.get(f"{url}/health")
        assert (ok.status_code, guess.status_code, health.status_code) == (200, 404, 200)
        wait_until(lambda: log.read_text().count('HTTP/1.1" ') >= 3, timeout=10)
    finally:
        server.terminate()
        server.wait(20)
    text = log.read_text()
    assert token not in text and token[:-1] not in text
    assert f'"POST /***{RECEIVE}?x=1 HTTP/1.1" 200' in text
    assert f'"POST /***{RECEIVE} HTTP/1.1" 404' in text
    assert '"GET /health HTTP/1.1" 200' in text
