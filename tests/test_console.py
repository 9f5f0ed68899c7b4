"""The console over HTTP (no browser): access, sessions and CSRF, paging bounds, live figures.

The browser tests (`tests/test_console_browser.py`) drive the pages themselves.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from iotpush import Selection, Tracking, open_inbox, testing
from iotpush.console import Console
from iotpush.console._auth import COOKIE, SESSION_SECONDS, Guard
from iotpush.console._live import MINUTES, Live
from iotpush.console._overview import chart
from iotpush.events import Answered, Events, Received
from iotpush.trackers.effects import effects
from tests.conftest import run
from tests.test_tracking import incoming

TOKEN = "console-token-0123456789"
LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.7", 50000)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _client_call(
    tokens: tuple[str, ...], client: tuple[str, int], base: str, calls: Any
) -> Any:
    async with open_inbox("memory://") as inbox:
        console = Console(inbox, Tracking(inbox), Events(), tokens=tokens)
        transport = httpx.ASGITransport(app=console, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base) as http:
            return await calls(http, inbox)


def talk(calls: Any, *, tokens: tuple[str, ...] = (), client: tuple[str, int] = LOOPBACK,
         base: str = "http://127.0.0.1") -> Any:  # fmt: skip
    """Run ``calls(http, inbox)`` against a console on a memory inbox."""
    return run(_client_call(tokens, client, base, calls))


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1]


# access --------------------------------------------------------------------------------------


def test_console_without_token_answers_loopback_without_login() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.get("/ui/")

    page = talk(calls)
    assert page.status_code == 200
    assert "<h1>Overview</h1>" in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


def test_console_without_token_refuses_other_clients() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.get("/ui/notifications")

    page = talk(calls, client=ELSEWHERE)
    assert page.status_code == 403
    assert "only on this machine" in page.text
    assert "set-cookie" not in page.headers


def test_console_without_token_refuses_loopback_clients_behind_a_proxy() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.get("/ui/", headers={"x-forwarded-for": "198.51.100.4"})

    assert talk(calls).status_code == 403


def test_console_with_token_sends_loopback_to_the_login_page_too() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.get("/ui/devices?status=ONLINE")

    page = talk(calls, tokens=(TOKEN,))
    assert page.status_code == 401
    assert 'name="token"' in page.text
    assert 'value="/ui/devices?status=ONLINE"' in page.text  # back there after logging in


def test_console_login_over_https_sets_a_secure_session_cookie() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> tuple[httpx.Response, httpx.Response]:
        login = await http.post("/ui/login", data={"token": TOKEN, "next": "/ui/quarantine"})
        page = await http.get("/ui/quarantine")
        return login, page

    login, page = talk(calls, tokens=(TOKEN,), client=ELSEWHERE, base="https://console.example")
    assert login.status_code == 303 and login.headers["location"] == "/ui/quarantine"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert page.status_code == 200 and "<h1>Quarantine</h1>" in page.text


@pytest.mark.parametrize(
    "next_path",
    ["https://evil.example/", "//evil.example/ui/", "/ui//evil.example"],
    ids=["absolute", "scheme-relative", "double-slash"],
)
def test_console_login_redirects_only_to_console_pages(next_path: str) -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.post("/ui/login", data={"token": TOKEN, "next": next_path})

    login = talk(calls, tokens=(TOKEN,))
    assert login.headers["location"] == "/ui/"


def test_console_post_without_csrf_token_is_403_and_changes_nothing() -> None:
    async def calls(http: httpx.AsyncClient, inbox: Any) -> tuple[int, int, str]:
        await inbox.append(incoming(testing.build("deviceDataChanged"), 1_800_000_000.0))
        [entry] = await inbox.find(Selection(), limit=1)
        await inbox.dead(entry.id, "boom", 1)
        page = await http.get(f"/ui/notifications/{entry.id}/replay")
        forged = await http.post(f"/ui/notifications/{entry.id}/replay", data={"csrf": "x" * 43})
        after_forgery = (await inbox.get(entry.id)).state
        real = await http.post(f"/ui/notifications/{entry.id}/replay", data={"csrf": csrf_of(page)})
        assert real.status_code == 303
        return forged.status_code, real.status_code, after_forgery

    assert talk(calls) == (403, 303, "dead")


def test_console_logout_revokes_the_session() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> tuple[int, int]:
        await http.post("/ui/login", data={"token": TOKEN, "next": "/ui/"})
        page = await http.get("/ui/")
        session = http.cookies[COOKIE]
        logout = await http.post("/ui/logout", data={"csrf": csrf_of(page)})
        http.cookies.set(COOKIE, session, path="/ui")  # a copy kept of the old cookie
        again = await http.get("/ui/")
        return logout.status_code, again.status_code

    assert talk(calls, tokens=(TOKEN,)) == (303, 401)


def test_guard_session_expires_and_changes_with_the_token() -> None:
    clock = Clock()
    guard = Guard([TOKEN], clock)
    session = guard.new_session()
    request = type("R", (), {"cookies": {COOKIE: ["1.forged.mac", session]}})()
    assert guard.session(request) == session  # type: ignore[arg-type]
    assert Guard(["another-token-0123456789"], clock).session(request) is None  # type: ignore[arg-type]
    clock.now += SESSION_SECONDS + 1
    assert guard.session(request) is None  # type: ignore[arg-type]


# pages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/notifications?limit=201", 400, "limit must be 1..200"),
        ("/ui/notifications?after=x", 400, "after must be"),
        ("/ui/notifications?state=lost", 400, "state must be one of"),
        ("/ui/notifications?since=yesterday", 400, "since: expected a time"),
        ("/ui/notifications/99", 404, "no inbox entry 99"),
        ("/ui/quarantine/7", 404, "no quarantined body 7"),
        ("/ui/devices/nobody", 404, "no device nobody"),
        ("/ui/commands?state=LOST", 400, "state must be one of"),
        ("/ui/nothing", 404, "No page at /ui/nothing"),
        ("/ui/static/nothing.css", 404, "not found"),
    ],
    ids=lambda value: str(value),
)
def test_console_bad_request_gets_a_page_naming_the_problem(
    path: str, status: int, says: str
) -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        return await http.get(path)

    page = talk(calls)
    assert page.status_code == status
    assert says in page.text


def test_console_pages_come_with_a_content_security_policy() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> tuple[httpx.Response, httpx.Response]:
        return await http.get("/ui/"), await http.get("/ui/static/console.css")

    page, css = talk(calls)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text  # no font or image from elsewhere


def test_console_post_to_a_read_only_page_is_405() -> None:
    async def calls(http: httpx.AsyncClient, _: Any) -> httpx.Response:
        await http.post("/ui/login", data={"token": TOKEN, "next": "/ui/"})
        page = await http.get("/ui/")
        return await http.post("/ui/devices", data={"csrf": csrf_of(page)})

    answer = talk(calls, tokens=(TOKEN,))
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


# live figures --------------------------------------------------------------------------------


def received(
    entry_id: int, at: float, kind: str = "deviceDataChanged", duplicate: bool = False
) -> Received:
    return Received(entry_id, kind, "meter-1", duplicate, at)


def test_live_counts_received_events_and_refused_answers() -> None:
    events, clock = Events(), Clock()
    live = Live(events, clock)
    events.emit(received(1, clock.now))
    events.emit(received(1, clock.now, duplicate=True))
    for _ in range(3):
        events.emit(Answered(200, 0.001, clock.now))  # the answers of accepted pushes count not
        events.emit(Answered(400, 0.001, clock.now))
    assert (live.accepted, live.duplicates, live.refused, live.refusals_in_a_row) == (1, 1, 3, 3)
    events.emit(received(2, clock.now))
    assert live.refusals_in_a_row == 0 and live.last_push_at == clock.now
    live.close()
    events.emit(received(3, clock.now))
    assert live.accepted == 2


def test_live_minutes_keep_the_last_hour_by_type() -> None:
    events, clock = Events(), Clock(1_800_000_000.0)  # a multiple of 60
    live = Live(events, clock)
    events.emit(received(1, clock.now - 3600))  # an hour ago: off the chart
    events.emit(received(2, clock.now - 61, "deviceAdded"))
    events.emit(received(3, clock.now + 1))
    events.emit(received(4, clock.now - 100, "deviceAdded"))  # late: counted in its minute
    minutes = live.minutes()
    assert len(minutes) == MINUTES and minutes[-1].start == clock.now
    assert dict(minutes[-1].by_type) == {"deviceDataChanged": 1}
    assert dict(minutes[-3].by_type) == {"deviceAdded": 2}
    drawn = chart(live)
    assert drawn.total == 3 and drawn.peak == 2
    assert [(kind, count) for kind, _, count in drawn.legend] == [
        ("deviceAdded", 2),
        ("deviceDataChanged", 1),
    ]
    assert max(bar.height for bar in drawn.bars) == drawn.height


# what the trackers did -----------------------------------------------------------------------


def test_effects_name_what_each_tracker_recorded_from_an_entry() -> None:
    async def scenario() -> list[Any]:
        async with open_inbox("memory://") as inbox:
            for code in ("SUCCESSFUL", "SENT"):
                command = testing.build(
                    "nbCommandStatusChanged", command_id="cmd-1", device_id="meter-1",
                    result={"result_code": code},
                )  # fmt: skip
                await inbox.append(incoming(command, 1_800_000_000.0))
            return [await inbox.read(lambda db, i=i: effects(db, i)) for i in (1, 2)]

    first, late = run(scenario())
    assert [(e.tracker, e.subject, e.applied) for e in first] == [("commands", "cmd-1", True)]
    assert late[0].applied is False and "history only" in late[0].what
