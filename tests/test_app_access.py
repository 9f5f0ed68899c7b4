"""The app's access controls through a real server on loopback (the peer is 127.0.0.1): the path
token, the IP allowlist on every path, signatures on the raw body."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from iotpush import Config, Entry, Rejection, Selection, create_app, open_inbox
from iotpush.events import Received, Refused
from iotpush.server import uvicorn_options
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, run, running
from tests.test_access import BODY, JSON, KEY, NOW, OTHER_KEY, TOKEN, WHSEC, signed

Serving = Callable[..., contextlib.AbstractContextManager[tuple[str, Tally]]]


@pytest.fixture
def serving(db: str) -> Serving:
    """``with serving(**config) as (url, tally)``: a real server run with iotpush's uvicorn options
    (``proxy_headers`` off among them), counting its events; ``clock`` replaces the app's."""

    @contextlib.contextmanager
    def start(
        receiver: Recorder | None = None, clock: Callable[[], float] | None = None, **changes: Any
    ) -> Iterator[tuple[str, Tally]]:
        config = Config(receiver=receiver or Recorder(), store=db, backoff=0.05, **changes)
        app = create_app(config)
        if clock is not None:
            app.app.endpoint.clock = clock
        options = uvicorn_options(config)
        for name in ("host", "port", "loop", "http", "log_level"):  # the test's socket and loop
            options.pop(name)
        tally = Tally(app.events)
        with running(app, **options) as url:
            yield url, tally

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
    with serving(recorder, path_token=TOKEN) as (url, tally):
        main_path = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=JSON)
        command = EXAMPLES["19-nbCommandStatusChanged"]
        cmd = httpx.post(f"{url}/{TOKEN}{RECEIVE}/cmd", content=command, headers=JSON)
        health = httpx.get(url + "/health")  # the other paths stay where they were
        recorder.wait_for(2)
    assert [r.status_code for r in (main_path, cmd, health)] == [200, 200, 200]
    assert tally(Received, duplicate=False) == 2
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
    with serving(recorder, path_token=TOKEN) as (url, tally):
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
    assert (
        tally(Refused, reason="forbidden"),
        tally(Refused, reason="not_found"),
        recorder.seen,
    ) == (2, 1, [])
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
    with serving(recorder, allow_ips=("10.0.0.0/8", "2001:db8::/32")) as (url, tally):
        post = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        get = httpx.get(url + RECEIVE)  # refused before the method is looked at
    assert (post.status_code, get.status_code) == (403, 403)
    assert post.json() == {"error": "127.0.0.1 is not in the IP allowlist", "path": "$"}
    assert (tally(Refused, reason="forbidden"), recorder.seen) == (2, [])
    _, kept = stored(db)
    reason = post.json()["error"]
    assert [(r.status, r.reason, r.body) for r in kept] == [(403, reason, BODY), (403, reason, b"")]


def test_allowlist_covers_every_path_and_keeps_only_pushes(serving: Serving, db: str) -> None:
    token = {"authorization": f"Bearer {TOKEN}"}
    with serving(allow_ips=("10.0.0.0/8",), api_tokens=(TOKEN,)) as (url, tally):
        answers = [
            httpx.get(url + "/api/devices", headers=token),
            httpx.get(url + "/openapi.json"),
            httpx.get(url + "/health"),
            httpx.get(url + "/elsewhere"),
        ]
    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    assert {a.json()["error"] for a in answers} == {"127.0.0.1 is not in the IP allowlist"}
    assert tally(Refused, reason="forbidden", status=403) == 4
    assert stored(db) == ([], [])  # no push, nothing to recover


def test_api_allowlist_replaces_the_allowlist_on_the_api_only(serving: Serving) -> None:
    token = {"authorization": f"Bearer {TOKEN}"}
    config = {"allow_ips": ("10.0.0.0/8",), "api_allow_ips": ("127.0.0.1",), "api_tokens": (TOKEN,)}
    with serving(**config) as (url, _):
        api = httpx.get(url + "/api/devices", headers=token)
        schema = httpx.get(url + "/openapi.json")
        push = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        health = httpx.get(url + "/health")
    with serving(allow_ips=("127.0.0.1",), api_allow_ips=("10.0.0.0/8",)) as (url, _):
        outside_api = httpx.get(url + "/api/devices")
        inside_push = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
    assert [r.status_code for r in (api, schema, push, health)] == [200, 200, 403, 403]
    assert (outside_api.status_code, inside_push.status_code) == (403, 200)


def test_allowlist_admits_a_peer_inside_it(serving: Serving) -> None:
    recorder = Recorder()
    with serving(recorder, allow_ips=("10.0.0.0/8", "127.0.0.0/8", "::1")) as (url, tally):
        response = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        recorder.wait_for(1)
    assert (response.status_code, tally(Refused)) == (200, 0)


def test_allowlist_ignores_x_forwarded_for_from_an_untrusted_peer(
    serving: Serving, db: str
) -> None:
    spoofed = {**JSON, "x-forwarded-for": "10.1.2.3"}
    with serving(allow_ips=("10.0.0.0/8",)) as (url, tally):
        response = httpx.post(url + RECEIVE, content=BODY, headers=spoofed)
    assert (response.status_code, tally(Refused, status=403)) == (403, 1)
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
    with serving(recorder, **config) as (url, tally):
        for forwarded, status, error in table:
            headers = JSON if forwarded is None else {**JSON, "x-forwarded-for": forwarded}
            response = httpx.post(url + RECEIVE, content=BODY, headers=headers)
            assert response.status_code == status, forwarded
            if error is not None:
                assert error in response.json()["error"], forwarded
    assert (tally(Refused, status=403), tally(Received)) == (3, 3)


def test_signatures_are_verified_on_the_raw_body_against_the_app_clock(
    serving: Serving, db: str
) -> None:
    recorder = Recorder()
    secrets = (WHSEC, OTHER_KEY)
    with serving(recorder, clock=lambda: NOW + 0.5, signing_secrets=secrets) as (url, tally):

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
    assert tally(Refused, reason="forbidden", status=403) == 3
    _, kept = stored(db)
    assert [(r.status, r.field) for r in kept] == [
        (403, "$.headers.webhook-id"), (403, "$.headers.webhook-timestamp"),
        (403, "$.headers.webhook-signature"),
    ]  # fmt: skip
    assert kept[2].body == BODY.replace(b"deviceDeleted", b"deviceAdded")


def test_all_three_controls_together_admit_only_what_passes_each(serving: Serving) -> None:
    recorder = Recorder()
    config = {"path_token": TOKEN, "allow_ips": ("127.0.0.1",), "signing_secrets": (WHSEC,)}
    with serving(recorder, clock=lambda: NOW, **config) as (url, tally):
        headers = {**JSON, **{name.decode(): value.decode() for name, value in signed(KEY)}}
        ok = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=headers)
        no_token = httpx.post(url + RECEIVE, content=BODY, headers=headers)
        unsigned = httpx.post(f"{url}/{TOKEN}{RECEIVE}", content=BODY, headers=JSON)
        recorder.wait_for(1)
    assert (ok.status_code, no_token.status_code, unsigned.status_code) == (200, 404, 403)
    assert (tally(Refused, status=404), tally(Refused, status=403)) == (1, 1)
