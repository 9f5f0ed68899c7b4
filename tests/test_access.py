"""Access control on the receive paths: the path token, the IP allowlist, signatures.

The checks alone first, then each through a real server on loopback (the peer is 127.0.0.1).
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from iotpush import App, Config, ConfigError, Entry, Rejection, Selection, create_app, open_inbox
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
from tests.conftest import EXAMPLES, RECEIVE, Recorder, run, running

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


# --- through a real server ---------------------------------------------------------------------


Serving = Callable[..., contextlib.AbstractContextManager[tuple[str, App]]]


@pytest.fixture
def serving(db: str) -> Serving:
    """``with serving(**config) as (url, app)``: a real server run with iotpush's uvicorn options
    (``proxy_headers`` off among them); ``clock`` replaces the app's."""

    @contextlib.contextmanager
    def start(
        receiver: Recorder | None = None, clock: Callable[[], float] | None = None, **changes: Any
    ) -> Iterator[tuple[str, App]]:
        config = Config(receiver=receiver or Recorder(), store=db, backoff=0.05, **changes)
        app = create_app(config)
        if clock is not None:
            app.clock = clock
        options = uvicorn_options(config)
        for name in ("host", "port", "loop", "http", "log_level"):  # the test's socket and loop
            options.pop(name)
        with running(app, **options) as url:
            yield url, app

    return start


def stored(db: str) -> tuple[list[Entry], list[Rejection]]:
    async def read() -> tuple[list[Entry], list[Rejection]]:
        async with open_inbox(db) as inbox:
            return await inbox.find(Selection(), limit=1000), await inbox.quarantined(limit=1000)

    result: tuple[list[Entry], list[Rejection]] = run(read())
    return result


def test_path_token_serves_both_receive_paths_and_keeps_them_without_the_token(
    serving: Serving, db: str
) -> None:
    recorder = Recorder()
    with serving(recorder, path_token=TOKEN) as (url, app):
        main_path = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=JSON)
        command = EXAMPLES["19-nbCommandStatusChanged"]
        cmd = httpx.post(f"{url}/{TOKEN}{RECEIVE}/cmd", content=command, headers=JSON)
        health = httpx.get(url + "/health")  # the other paths stay where they were
        recorder.wait_for(2)
    assert [r.status_code for r in (main_path, cmd, health)] == [200, 200, 200]
    assert app.counters["accepted"] == 2
    entries, _ = stored(db)
    assert [e.path for e in entries] == [RECEIVE, RECEIVE + "/cmd"]


def test_path_token_wrong_or_missing_is_answered_as_an_unknown_path_but_counted_and_kept(
    serving: Serving, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    near_miss = TOKEN[:-1] + "3"
    wrong_path = f"/{near_miss}{RECEIVE}"
    unknown_path = wrong_path[:-1] + "X"  # the same length: the same headers to compare
    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="iotpush")
    with serving(recorder, path_token=TOKEN) as (url, app):
        wrong = httpx.post(url + wrong_path, content=BODY, headers=JSON)
        unknown = httpx.post(url + unknown_path, content=BODY, headers=JSON)
        missing = httpx.post(url + RECEIVE + "/cmd", content=BODY, headers=JSON)
    assert [r.status_code for r in (wrong, unknown, missing)] == [404, 404, 404]
    assert wrong.json() == {"error": f"no receiver at {wrong_path}", "path": "$"}
    assert unknown.json() == {"error": f"no receiver at {unknown_path}", "path": "$"}
    assert missing.json() == {"error": f"no receiver at {RECEIVE}/cmd", "path": "$"}

    def same(response: httpx.Response) -> dict[str, str]:
        return {name: value for name, value in response.headers.items() if name != "date"}

    assert same(wrong) == same(unknown)
    assert (app.counters["403-token"], app.counters["404"], recorder.seen) == (2, 1, [])
    _, kept = stored(db)
    assert [(r.path, r.status, r.reason, r.body) for r in kept] == [
        (f"/***{RECEIVE}", 404, "wrong or missing path token", BODY),
        (f"{RECEIVE}/cmd", 404, "wrong or missing path token", BODY),
    ]
    assert "wrong or missing path token" in caplog.text
    assert near_miss not in caplog.text and TOKEN not in caplog.text


def test_allowlist_refuses_a_peer_outside_it_with_a_403_counted_and_kept(
    serving: Serving, db: str
) -> None:
    recorder = Recorder()
    with serving(recorder, allow_ips=("10.0.0.0/8", "2001:db8::/32")) as (url, app):
        post = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        get = httpx.get(url + RECEIVE)  # refused before the method is looked at
        health = httpx.get(url + "/health")  # not a receive path
    assert (post.status_code, get.status_code, health.status_code) == (403, 403, 200)
    assert post.json() == {"error": "127.0.0.1 is not in the IP allowlist", "path": "$"}
    assert (app.counters["403-ip"], recorder.seen) == (2, [])
    _, kept = stored(db)
    reason = post.json()["error"]
    assert [(r.status, r.reason, r.body) for r in kept] == [(403, reason, BODY), (403, reason, b"")]


def test_allowlist_admits_a_peer_inside_it(serving: Serving) -> None:
    recorder = Recorder()
    with serving(recorder, allow_ips=("10.0.0.0/8", "127.0.0.0/8", "::1")) as (url, app):
        response = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        recorder.wait_for(1)
    assert (response.status_code, app.counters["403-ip"]) == (200, 0)


def test_allowlist_ignores_x_forwarded_for_from_an_untrusted_peer(
    serving: Serving, db: str
) -> None:
    spoofed = {**JSON, "x-forwarded-for": "10.1.2.3"}
    with serving(allow_ips=("10.0.0.0/8",)) as (url, app):
        response = httpx.post(url + RECEIVE, content=BODY, headers=spoofed)
    assert (response.status_code, app.counters["403-ip"]) == (403, 1)
    # What proxy_headers=False prevents: uvicorn's own rewriting believes 127.0.0.1's header.
    config = Config(receiver=Recorder(), store=db, allow_ips=("10.0.0.0/8",))
    with running(create_app(config), proxy_headers=True) as url:
        fooled = httpx.post(url + RECEIVE, content=BODY, headers=spoofed)
    assert fooled.status_code == 200


def test_allowlist_behind_a_trusted_proxy_uses_the_right_most_untrusted_forwarded_address(
    serving: Serving,
) -> None:
    table = [
        (None, 403, "127.0.0.1 is not in the IP allowlist"),  # the proxy's own request
        ("10.1.2.3", 200, None),
        ("192.0.2.9, 10.1.2.3", 200, None),  # the left entry came from the client: ignored
        ("10.1.2.3, 192.0.2.9", 403, "192.0.2.9 is not in the IP allowlist"),
        ("10.1.2.3, 127.0.0.1", 200, None),  # a second trusted hop
        ("10.1.2.3, not-an-address", 403, "X-Forwarded-For from a trusted proxy"),
    ]
    recorder = Recorder()
    config = {"allow_ips": ("10.0.0.0/8",), "trusted_proxies": ("127.0.0.1",)}
    with serving(recorder, **config) as (url, app):
        for forwarded, status, error in table:
            headers = JSON if forwarded is None else {**JSON, "x-forwarded-for": forwarded}
            response = httpx.post(url + RECEIVE, content=BODY, headers=headers)
            assert response.status_code == status, forwarded
            if error is not None:
                assert error in response.json()["error"], forwarded
    assert (app.counters["403-ip"], app.counters["accepted"] + app.counters["duplicate"]) == (3, 3)


def test_signatures_are_verified_on_the_raw_body_against_the_app_clock(
    serving: Serving, db: str
) -> None:
    recorder = Recorder()
    secrets = (WHSEC, OTHER_KEY)
    with serving(recorder, clock=lambda: NOW + 0.5, signing_secrets=secrets) as (url, app):

        def post(headers: Any, body: bytes = BODY) -> httpx.Response:
            sent = {**JSON, **{name.decode(): value.decode() for name, value in headers}}
            return httpx.post(url + RECEIVE, content=body, headers=sent)

        good = post(signed(KEY))
        rotated = post(signed(OTHER_KEY.encode(), EXAMPLES["04-deviceDataChanged"]),
                       EXAMPLES["04-deviceDataChanged"])  # fmt: skip
        unsigned = post([])
        expired = post(signed(KEY, timestamp=NOW - 301))
        tampered = post(signed(KEY), BODY.replace(b"deviceDeleted", b"deviceAdded"))
        recorder.wait_for(2)
    assert (good.status_code, rotated.status_code) == (200, 200)
    assert unsigned.status_code == expired.status_code == tampered.status_code == 403
    assert unsigned.json() == {"error": "the webhook-id header is missing",
                               "path": "$.headers.webhook-id"}  # fmt: skip
    assert expired.json() == {"error": "webhook-timestamp is outside the 300 s tolerance",
                              "path": "$.headers.webhook-timestamp"}  # fmt: skip
    assert tampered.json()["path"] == "$.headers.webhook-signature"
    assert app.counters["403-signature"] == 3
    _, kept = stored(db)
    assert [(r.status, r.field) for r in kept] == [
        (403, "$.headers.webhook-id"), (403, "$.headers.webhook-timestamp"),
        (403, "$.headers.webhook-signature"),
    ]  # fmt: skip
    assert kept[2].body == BODY.replace(b"deviceDeleted", b"deviceAdded")


def test_all_three_controls_together_admit_only_what_passes_each(serving: Serving) -> None:
    recorder = Recorder()
    config = {"path_token": TOKEN, "allow_ips": ("127.0.0.1",), "signing_secrets": (WHSEC,)}
    with serving(recorder, clock=lambda: NOW, **config) as (url, app):
        headers = {**JSON, **{name.decode(): value.decode() for name, value in signed(KEY)}}
        ok = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=headers)
        no_token = httpx.post(url + RECEIVE, content=BODY, headers=headers)
        unsigned = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=JSON)
        recorder.wait_for(1)
    assert (ok.status_code, no_token.status_code, unsigned.status_code) == (200, 404, 403)
    assert (app.counters["403-token"], app.counters["403-signature"]) == (1, 1)
