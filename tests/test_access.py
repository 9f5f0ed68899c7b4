"""Access control on the receive paths: the path token, the IP allowlist, signatures.

The checks alone, and their configuration; through a real server in ``test_app_access.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from click.testing import CliRunner

from iotpush import Config, ConfigError
from iotpush.access import (
    IPAllowlist,
    PathToken,
    SignatureVerifier,
    decode_secret,
    parse_network,
    sign,
)
from iotpush.cli import main
from iotpush.cli import serve as cli_module
from iotpush.server import uvicorn_options
from tests.conftest import EXAMPLES, RECEIVE

TOKEN = "pAth-t0ken.with_entropy~42"
KEY = b"a key of the relay, 32 bytes...."
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
OTHER_KEY = "the next secret, as plain text"  # rotation: both are accepted for a while
NOW = 1_700_000_000
BODY = EXAMPLES["07-deviceDeleted"]
JSON = {"content-type": "application/json"}


def signed(key: bytes, body: bytes = BODY, timestamp: int = NOW, msg_id: str = "msg_1") -> Any:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = sign(secret, body, msg_id=msg_id, timestamp=timestamp)
    return [(name.encode(), value.encode()) for name, value in headers.items()]


def test_sign_matches_the_standard_webhooks_reference_example() -> None:
    # The example of the Standard Webhooks specification and its reference libraries.
    headers = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        b'{"test": 2432232314}',
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330.9,
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


# --- the path token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "matched", "rest"),
    [(f"/{TOKEN}{RECEIVE}", True, RECEIVE), (f"/{TOKEN}{RECEIVE}/cmd", True, RECEIVE + "/cmd"),
     (f"/{TOKEN}", True, ""), (f"/{TOKEN}x{RECEIVE}", False, RECEIVE),
     (f"/{TOKEN[:-1]}{RECEIVE}", False, RECEIVE), (RECEIVE, False, "/messageReceiver"),
     ("/", False, ""), ("/t\u00f6ken-\udcff/x", False, "/x")],
    ids=["receive", "cmd", "token-alone", "longer", "shorter", "no-token", "root", "not-ascii"],
)  # fmt: skip
def test_path_token_split_compares_the_first_segment(path: str, matched: bool, rest: str) -> None:
    assert PathToken(TOKEN).split(path) == (matched, rest)


@pytest.mark.parametrize(
    ("token", "message"),
    [("short-token", "at least 16"), ("a/token/with/slashes", "only letters"),
     ("a token with spaces", "only letters"), ("percent%2Fencoded-x", "only letters")],
    ids=["short", "slash", "space", "percent"],
)  # fmt: skip
def test_path_token_refuses_short_or_unsafe_tokens(token: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathToken(token)


# --- the IP allowlist ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "network"),
    [("10.0.0.0/8", "10.0.0.0/8"), ("192.0.2.7", "192.0.2.7/32"),
     ("2001:db8::/32", "2001:db8::/32"), ("::1", "::1/128")],
)  # fmt: skip
def test_parse_network_reads_cidr_and_single_addresses(text: str, network: str) -> None:
    assert str(parse_network(text)) == network


@pytest.mark.parametrize(
    ("text", "message"),
    [("10.1.2.3/8", r"host bits set; did you mean 10\.0\.0\.0/8\?"),
     ("10.0.0.300", "not an IP address"), ("example.com", "not an IP address"),
     ("10.0.0.0/33", "not an IP address")],
    ids=["host-bits", "bad-octet", "name", "bad-prefix"],
)  # fmt: skip
def test_parse_network_refuses_what_is_not_a_network(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_network(text)


PROXIES = IPAllowlist(["10.0.0.0/8"], trusted_proxies=["127.0.0.1", "172.16.0.0/12"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", ["10.1.1.1"], "192.0.2.1"),  # not a proxy: the header is ignored
        ("127.0.0.1", [], "127.0.0.1"),  # a proxy's own request
        ("127.0.0.1", ["10.1.1.1"], "10.1.1.1"),
        ("127.0.0.1", ["192.0.2.66, 10.1.1.1"], "10.1.1.1"),  # the left entry is the client's word
        ("127.0.0.1", ["10.1.1.1, 192.0.2.66"], "192.0.2.66"),
        ("127.0.0.1", ["10.1.1.1, 172.16.5.5"], "10.1.1.1"),  # a trusted hop is passed over
        ("127.0.0.1", ["10.1.1.1", "172.16.5.5"], "10.1.1.1"),  # two header lines, in order
        ("127.0.0.1", ["172.16.9.9, 172.16.5.5"], "172.16.9.9"),  # all trusted: the left-most
        ("127.0.0.1", ["10.1.1.1,, "], "10.1.1.1"),  # empty entries are skipped
        ("127.0.0.1", ["10.1.1.1:4711"], "10.1.1.1"),  # with a port
        ("127.0.0.1", ["[2001:db8::5]:4711"], "2001:db8::5"),
        ("127.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        ("::ffff:127.0.0.1", ["10.1.1.1"], "10.1.1.1"),  # a dual-stack socket's peer
        ("::ffff:192.0.2.1", [], "192.0.2.1"),
    ],
)
def test_allowlist_client_is_the_right_most_forwarded_address_not_a_trusted_proxy(
    peer: str, forwarded: list[str], client: str
) -> None:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    headers.append((b"content-type", b"application/json"))
    assert str(PROXIES.client(peer, headers)) == client


@pytest.mark.parametrize(
    ("peer", "forwarded", "denial"),
    [("10.9.9.9", None, None), ("127.0.0.1", "10.1.1.1", None),
     ("192.0.2.1", "10.1.1.1", ("192.0.2.1 is not in the IP allowlist", "$")),
     ("127.0.0.1", None, ("127.0.0.1 is not in the IP allowlist", "$")),
     ("127.0.0.1", "10.1.1.1, unknown", ("trusted proxy holds", "$.headers.x-forwarded-for")),
     ("192.0.2.1", "unknown", ("192.0.2.1 is not in", "$")),
     (None, None, ("peer address is unknown", "$")), ("nonsense", None, ("not an IP", "$"))],
    ids=["allowed", "allowed-via-proxy", "outside", "proxy-itself", "proxy-sends-garbage",
         "garbage-ignored", "unix-socket", "bad-peer"],
)  # fmt: skip
def test_allowlist_check_says_why_a_client_is_refused(
    peer: str | None, forwarded: str | None, denial: tuple[str, str] | None
) -> None:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    result = PROXIES.check(peer, headers)
    if denial is None:
        assert result is None
    else:
        assert result is not None and result.control == "ip"
        assert denial[0] in result.reason and result.field == denial[1]


def test_allowlist_holds_ipv4_and_ipv6_networks_apart() -> None:
    allowlist = IPAllowlist(["0.0.0.0/0"])  # every IPv4 address, no IPv6 one
    assert allowlist.check("203.0.113.9") is None
    assert allowlist.check("2001:db8::1") is not None
    assert IPAllowlist(["::/0"]).check("203.0.113.9") is not None


# --- signatures -------------------------------------------------------------------------------


def test_signature_published_standard_webhooks_vector_verifies() -> None:
    # The reference libraries' test vector (standard-webhooks, test_sign_function).
    verifier = SignatureVerifier(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    signature = b"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    msg_id, timestamp = b"msg_p5jXN8AQM9LWM0D4loKWxJek", b"1614265330"
    headers = [(b"webhook-id", msg_id), (b"webhook-timestamp", timestamp),
               (b"webhook-signature", signature)]  # fmt: skip
    assert verifier.verify(headers, b'{"test": 2432232314}', now=1614265330) is None
    assert verifier.verify(headers, b'{"test": 2432232315}', now=1614265330) is not None


def test_access_bad_secret_or_network_is_a_config_error() -> None:
    for build in (lambda: decode_secret("short"), lambda: parse_network("10.1.2.3/8"),
                  lambda: PathToken("short"), lambda: SignatureVerifier([])):  # fmt: skip
        with pytest.raises(ConfigError):
            build()


def test_decode_secret_reads_whsec_base64_or_plain_text() -> None:
    assert decode_secret(WHSEC) == KEY
    assert decode_secret(WHSEC.rstrip("=")) == KEY  # unpadded base64
    assert decode_secret(OTHER_KEY) == OTHER_KEY.encode()
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_not*base64*at*all!!")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        decode_secret("whsec_" + base64.b64encode(b"too short").decode())
    with pytest.raises(ValueError, match="at least 16 bytes"):
        decode_secret("short")


VERIFIER = SignatureVerifier([WHSEC, OTHER_KEY])


@pytest.mark.parametrize(
    "headers",
    [signed(KEY), signed(OTHER_KEY.encode()), signed(KEY, timestamp=NOW - 300),
     signed(KEY, timestamp=NOW + 300), signed(KEY, msg_id="another id, any text"),
     [*signed(KEY)[:2], (b"webhook-signature",
                         b"v1a,c2lnbmVk v2,abc v1,!!! " + signed(KEY)[2][1] + b" v1,AAAA")],
     [*signed(KEY)[:2], (b"webhook-signature", b"v1,AAAA"), signed(OTHER_KEY.encode())[2]]],
    ids=["whsec", "rotated-plain-text", "oldest", "newest", "any-id", "one-valid-among-others",
         "two-header-lines"],
)  # fmt: skip
def test_signature_verifier_accepts_a_valid_v1_signature(headers: Any) -> None:
    assert VERIFIER.verify([(b"host", b"x"), *headers], BODY, now=NOW) is None


def _without(name: bytes) -> Any:
    return [header for header in signed(KEY) if header[0] != name]


def _with(name: bytes, value: bytes) -> Any:
    return [(n, value if n == name else v) for n, v in signed(KEY)]


@pytest.mark.parametrize(
    ("headers", "body", "field", "reason"),
    [(_without(b"webhook-id"), BODY, "webhook-id", "the webhook-id header is missing"),
     (_without(b"webhook-timestamp"), BODY, "webhook-timestamp", "header is missing"),
     (_without(b"webhook-signature"), BODY, "webhook-signature", "header is missing"),
     (_with(b"webhook-signature", b"  "), BODY, "webhook-signature", "header is missing"),
     (_with(b"webhook-timestamp", b"1700000000.5"), BODY, "webhook-timestamp", "Unix seconds"),
     (_with(b"webhook-timestamp", b"9" * 40), BODY, "webhook-timestamp", "Unix seconds"),
     (signed(KEY, timestamp=NOW - 301), BODY, "webhook-timestamp",
      "webhook-timestamp is outside the 300 s tolerance"),
     (signed(KEY, timestamp=NOW + 301), BODY, "webhook-timestamp", "outside the 300 s"),
     (signed(KEY), BODY + b" ", "webhook-signature", "no valid v1 signature"),
     (_with(b"webhook-id", b"msg_2"), BODY, "webhook-signature", "no valid v1 signature"),
     (_with(b"webhook-timestamp", str(NOW + 1).encode()), BODY, "webhook-signature", "no valid"),
     (signed(b"a key iotpush does not know"), BODY, "webhook-signature", "no valid"),
     (_with(b"webhook-signature", b"v1a," + signed(KEY)[2][1][3:]), BODY, "webhook-signature",
      "no valid")],
    ids=["no-id", "no-timestamp", "no-signature", "blank-signature", "fractional-time",
         "huge-time", "too-old", "too-new", "body-changed", "id-changed", "time-changed",
         "unknown-key", "not-v1"],
)  # fmt: skip
def test_signature_verifier_names_the_header_that_is_wrong(
    headers: Any, body: bytes, field: str, reason: str
) -> None:
    denial = VERIFIER.verify(headers, body, now=NOW)
    assert denial is not None and denial.control == "signature"
    assert (denial.field, reason in denial.reason) == (f"$.headers.{field}", True)


def test_signature_verifier_tolerance_follows_the_clock_it_is_given() -> None:
    verifier = SignatureVerifier([WHSEC], tolerance=30)
    assert verifier.verify(signed(KEY), BODY, now=NOW + 30) is None
    denial = verifier.verify(signed(KEY), BODY, now=NOW + 31)
    assert denial is not None and denial.reason == "webhook-timestamp is outside the 30 s tolerance"


def test_signature_verifier_needs_a_secret_and_a_positive_tolerance() -> None:
    with pytest.raises(ValueError, match="at least one signing secret"):
        SignatureVerifier([])
    with pytest.raises(ValueError, match="above 0"):
        SignatureVerifier([WHSEC], tolerance=0)


# --- configuration and the command line --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"path_token": "too-short"}, "--path-token: a path token must have at least 16"),
     ({"path_token": "with/a/slash/in/it"}, "--path-token: a path token may hold only"),
     ({"allow_ips": ("10.0.0.0/8", "10.1.2.3/8")}, "--allow-ip: '10.1.2.3/8' has host bits"),
     ({"allow_ips": ("10.0.0.0/8",), "trusted_proxies": ("proxy",)}, "--trusted-proxy: 'proxy'"),
     ({"trusted_proxies": ("127.0.0.1",)}, "--trusted-proxy needs --allow-ip"),
     ({"signing_secrets": ("tiny-secret",)}, "--signing-secret: .* at least 16 bytes"),
     ({"signing_secrets": (WHSEC, "whsec_%%%%%%%%%%%%%%%%%%%%%%")}, "--signing-secret: .*base64"),
     ({"signature_tolerance": 0.0}, "--signature-tolerance must be above 0")],
    ids=["short-token", "token-slash", "host-bits", "bad-proxy", "proxy-alone", "short-secret",
         "bad-whsec", "no-tolerance"],
)  # fmt: skip
def test_config_check_refuses_bad_access_options_without_echoing_secrets(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Config(store="memory://", **changes).check()
    for secret in changes.get("signing_secrets", ()):
        assert secret not in str(raised.value)


def test_uvicorn_options_leave_x_forwarded_for_to_iotpush() -> None:
    assert uvicorn_options(Config())["proxy_headers"] is False


def test_cli_serve_access_options_and_their_environment_variables_reach_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configs: list[Config] = []
    monkeypatch.setattr(cli_module, "run", configs.append)
    args = ["serve", "--path-token", TOKEN, "--allow-ip", "10.0.0.0/8", "--allow-ip", "::1",
            "--trusted-proxy", "127.0.0.1", "--signing-secret", WHSEC,
            "--signature-tolerance", "1m"]  # fmt: skip
    env = {"IOTPUSH_SERVE_PATH_TOKEN": "from-the-environment-0123",
           "IOTPUSH_SERVE_ALLOW_IP": "192.0.2.0/24 2001:db8::/32",
           "IOTPUSH_SERVE_TRUSTED_PROXY": "172.16.0.1",
           "IOTPUSH_SERVE_SIGNING_SECRET": f"{WHSEC} {OTHER_KEY.replace(' ', '-')}",
           "IOTPUSH_SERVE_SIGNATURE_TOLERANCE": "90s"}  # fmt: skip
    runner = CliRunner()
    for result in (runner.invoke(main, args), runner.invoke(main, ["serve"], env=env)):
        assert result.exit_code == 0, result.output
    given, from_env = configs
    assert (given.path_token, given.allow_ips, given.trusted_proxies, given.signing_secrets,
            given.signature_tolerance) == (TOKEN, ("10.0.0.0/8", "::1"), ("127.0.0.1",),
                                           (WHSEC,), 60.0)  # fmt: skip
    assert from_env.path_token == "from-the-environment-0123"
    assert from_env.allow_ips == ("192.0.2.0/24", "2001:db8::/32")
    assert from_env.trusted_proxies == ("172.16.0.1",)
    assert from_env.signing_secrets == (WHSEC, OTHER_KEY.replace(" ", "-"))
    assert from_env.signature_tolerance == 90.0


def test_cli_serve_bad_access_option_is_one_line_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--store", "memory://", "--allow-ip", "10.1.2.3/8"])
    assert result.exit_code == 1
    expected = "Error: --allow-ip: '10.1.2.3/8' has host bits set; did you mean 10.0.0.0/8?"
    assert result.output.strip() == expected
