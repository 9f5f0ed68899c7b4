"""``iotpush send`` against real servers on loopback: failures described, secured servers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result

from iotpush import Config, create_app
from iotpush.cli import main
from iotpush.server import uvicorn_options
from tests.conftest import RECEIVE, Recorder, running

TOKEN = "t0ken-with-enough-entropy"
SECRET = "a signing secret of the relay"


def send(url: str, *options: str, count: int = 3) -> Result:
    args = ["send", "deviceDeleted", "--url", url + RECEIVE, "--count", str(count), *options]
    return CliRunner().invoke(main, args)


def serving(db: str, **options: Any) -> Any:
    config = Config(receiver=Recorder(), store=db, **options)
    uvicorn = uvicorn_options(config)
    for name in ("host", "port", "loop", "http", "log_level"):  # the test's own socket and loop
        uvicorn.pop(name)
    return running(create_app(config), **uvicorn)


def test_send_connection_refused_says_so() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = send(f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert "errors 3" in result.stdout
    assert "  3 x ConnectError: Connection refused\n" in result.stderr


def test_send_refusal_shows_status_and_body_once_per_distinct_answer(db: str) -> None:
    with serving(db, signing_secrets=(SECRET,)) as url:
        unsigned = send(url)
        signed = send(url, "--signing-secret", SECRET)
    assert unsigned.exit_code == 1
    assert unsigned.stderr == (
        '  3 x HTTP 403: {"error":"the webhook-id header is missing",'
        '"path":"$.headers.webhook-id"}\n'
    )
    assert (signed.exit_code, signed.stderr) == (0, "")
    assert "200 OK 3" in signed.stdout


def test_send_path_token_goes_in_front_of_the_path(db: str) -> None:
    with serving(db, path_token=TOKEN) as url:
        without = send(url, count=1)
        with_token = send(url, "--path-token", TOKEN, count=1)
    assert without.exit_code == 1 and "1 x HTTP 404: " in without.stderr
    assert (with_token.exit_code, with_token.stderr) == (0, "")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A server certificate for 127.0.0.1, its key, and the CA that issued it, as PEM files."""
    ca, folder = trustme.CA(), tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("127.0.0.1")
    files = {"cert": folder / "cert.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    ca.cert_pem.write_to_path(files["ca"])
    return {name: str(path) for name, path in files.items()}


def test_send_https_verifies_with_cacert_or_not_at_all_with_insecure(
    db: str, tls_files: dict[str, str]
) -> None:
    with serving(db, ssl_certfile=tls_files["cert"], ssl_keyfile=tls_files["key"]) as url:
        untrusted = send(url, count=1)
        trusted = send(url, "--cacert", tls_files["ca"], count=1)
        insecure = send(url, "--insecure", count=1)
    assert untrusted.exit_code == 1
    assert "1 x ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]" in untrusted.stderr
    assert (trusted.exit_code, insecure.exit_code) == (0, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--signing-secret", "short"], "at least 16 bytes"),
        (["--cacert", "{ca}", "--insecure"], "--cacert and --insecure contradict"),
        (["--cacert", "{readme}"], "not a PEM CA certificate"),
    ],
    ids=["short-secret", "cacert-and-insecure", "not-a-certificate"],
)
def test_send_bad_security_options_are_one_line_usage_errors(
    tls_files: dict[str, str], options: list[str], message: str
) -> None:
    readme = str(Path(__file__).parents[1] / "README.md")
    options = [o.format(ca=tls_files["ca"], readme=readme) for o in options]
    result = send("http://127.0.0.1:9", *options, count=1)
    assert result.exit_code == 2
    assert message in result.output
