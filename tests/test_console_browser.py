"""The console in a real browser: Chromium driven by Playwright against a real server on loopback.

Each test leaves a screenshot of the page it ends on in the run's artifacts folder
(``IOTPUSH_ARTIFACTS``, else ``artifacts/`` in pytest's temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iotpush import Config, Receiver, create_app, testing
from tests.conftest import RECEIVE, running, service_missing

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

TOKEN = "console-token-0123456789"
CHROMIUM = os.environ.get("IOTPUSH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
WAIT = 20_000  # ms a page may take to show what a test waits for (CI runs under load)

Page = Any  # playwright's Page: its types are not on the mypy path of the tests
expect.set_options(timeout=WAIT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        service_missing(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(
        os.environ.get("IOTPUSH_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot(page: Page, name: str) -> None:
    """Save a screenshot of the whole page now, as ``NAME.png`` in the artifacts folder."""
    page.screenshot(path=page.context.artifacts / f"{name}.png", full_page=True)


@pytest.fixture
def page(browser: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser tab (no cookies) at 1280 px; its screenshot is saved at the end."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT)
    context.artifacts = artifacts
    tab = context.new_page()
    yield tab
    tab.screenshot(path=artifacts / f"{request.node.name}.png", full_page=True)
    context.close()


class Flaky(Receiver):
    """A receiver whose handler raises while ``broken`` is set: dead letters on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.add(self.handle)

    def handle(self, notification: Any) -> None:
        if self.broken:
            raise RuntimeError(f"the billing service refused device {notification.device}")


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with serve(**config) as url``: a real server with the console, on one SQLite file."""
    store = f"sqlite:///{tmp_path / 'iotpush.db'}"

    @contextlib.contextmanager
    def start(receiver: Receiver | None = None, **options: Any) -> Iterator[str]:
        options = {"store": store, "console_tokens": (TOKEN,), "max_attempts": 1, **options}
        with running(create_app(Config(receiver=receiver or Receiver(), **options))) as url:
            yield url

    return start


def log_in(page: Page, url: str, path: str = "/ui/") -> None:
    page.goto(url + path)
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="iotpush")).to_be_visible()


def post(url: str, body: bytes | Any, status: int = 200) -> None:
    answer = testing.post(url + RECEIVE, body)
    assert answer.status == status, answer.body


def data(device: str, **values: Any) -> Any:
    return testing.build(
        "deviceDataChanged", device_id=device, gateway_id=device,
        service={"service_id": "WaterMeter", "data": values},
    )  # fmt: skip


def reload_until(page: Page, done: Callable[[], bool]) -> None:
    """Reload ``page`` until ``done()``: delivery (and dead-lettering) happens in the background,
    and a page shows what was true when it was loaded. The caller's `expect` says what failed."""
    for _ in range(50):
        if done():
            return
        page.wait_for_timeout(200)
        page.reload()


def figure(page: Page, name: str) -> Any:
    return page.locator(f'[data-figure="{name}"]')


def test_console_login_with_the_token_opens_the_overview(page: Page, serve: Any) -> None:
    with serve() as url:
        page.goto(url + "/ui/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_label("Token").fill("not-the-token-at-all")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        cookie = page.context.cookies()[0]
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
        assert TOKEN not in page.url


def test_console_overview_counts_match_the_pushes_sent(page: Page, serve: Any) -> None:
    with serve() as url:
        log_in(page, url)
        reports = (
            [data(f"meter-{i}", reading=i) for i in range(4)]
            + [
                testing.build("nbCommandStatusChanged", command_id=f"cmd-{i}", device_id="meter-1")
                for i in range(2)
            ]
            + [testing.build("deviceInfoChanged", device_id="meter-2")]
        )
        for report in reports:
            post(url, report)
        for report in reports[:2]:
            post(url, report)  # duplicates: acknowledged, counted, not delivered again
        for _ in range(3):
            post(url, b'{"notifyType": "deviceDataChanged"', 400)
        # The page swaps in fresh figures by itself: no reload.
        expect(figure(page, "accepted")).to_have_text("7")
        expect(figure(page, "duplicates")).to_have_text("2")
        expect(figure(page, "refused")).to_have_text("3")
        expect(figure(page, "in-a-row")).to_contain_text("3")
        expect(figure(page, "quarantined")).to_have_text("3")
        expect(figure(page, "done")).to_have_text("7")
        expect(page.locator(".legend")).to_contain_text("deviceDataChanged 4")
        expect(page.locator(".legend")).to_contain_text("nbCommandStatusChanged 2")
        shot(page, "overview")
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        shot(page, "overview-phone")


def test_console_notifications_filter_by_device(page: Page, serve: Any) -> None:
    with serve() as url:
        for i in range(3):
            post(url, data("meter-a", reading=i))
            post(url, data("meter-b", reading=i))
        log_in(page, url, "/ui/notifications")
        expect(page.locator("tbody tr")).to_have_count(6)
        page.get_by_label("Device").fill("meter-a")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tbody tr")).to_have_count(3)
        devices = page.locator("tbody tr td:nth-child(4)").all_inner_texts()
        assert devices == ["meter-a"] * 3
        assert "device=meter-a" in page.url


def test_console_dead_entry_shows_its_traceback_and_replays_to_delivered(
    page: Page, serve: Any
) -> None:
    receiver = Flaky()
    receiver.broken = True
    with serve(receiver) as url:
        post(url, data("meter-7", reading=42.5))
        log_in(page, url, "/ui/notifications?state=dead")
        reload_until(page, lambda: page.locator("tbody tr").count() == 1)
        expect(page.locator("tbody tr")).to_have_count(1)
        page.locator("tbody tr a").first.click()
        expect(page.get_by_role("heading", name=re.compile("Entry 1"))).to_contain_text("dead")
        expect(page.locator("pre.traceback")).to_contain_text(
            "RuntimeError: the billing service refused device meter-7"
        )
        expect(page.locator("pre.traceback")).to_contain_text("Traceback")
        shot(page, "entry-dead")
        receiver.broken = False  # the fix is deployed
        page.get_by_role("link", name="Replay…").click()
        page.get_by_role("button", name="Replay entry 1").click()
        expect(page.get_by_role("status")).to_contain_text("Replayed")
        reload_until(page, lambda: "done" in page.get_by_role("heading", level=1).inner_text())
        expect(page.get_by_role("heading", level=1)).to_contain_text("done")


def test_console_replays_every_dead_entry_of_a_filter_after_showing_how_many(
    page: Page, serve: Any
) -> None:
    receiver = Flaky()
    receiver.broken = True
    with serve(receiver) as url:
        for i, device in enumerate(("meter-1", "meter-1", "meter-2")):
            post(url, data(device, reading=i))
        log_in(page, url, "/ui/notifications?state=dead&device=meter-1")
        reload_until(page, lambda: page.locator("tbody tr").count() == 2)
        expect(page.locator("tbody tr")).to_have_count(2)
        receiver.broken = False
        page.get_by_role("link", name=re.compile("Replay dead entries")).click()
        expect(page.locator("main")).to_contain_text("2 dead entries match")
        page.get_by_role("button", name="Replay 2").click()
        expect(page.get_by_role("status")).to_contain_text("Replayed 2 dead entries")
        page.goto(url + "/ui/notifications?state=dead")
        expect(page.locator("tbody tr")).to_have_count(1)  # meter-2's stays dead


def test_console_retries_a_quarantined_body_after_its_limit_was_raised(
    page: Page, serve: Any
) -> None:
    deep = data("meter-4", reading={"value": {"unit": {"scale": 3}}})
    with serve(max_depth=4) as url:
        post(url, deep, 400)  # nested deeper than 4: refused, kept in quarantine
    with serve() as url:  # restarted with the default bound (32)
        log_in(page, url, "/ui/quarantine")
        expect(page.locator("tbody tr")).to_have_count(1)
        page.locator("tbody tr a").first.click()
        facts = page.locator("dl.facts").first
        expect(facts).to_contain_text("nested deeper than 4")
        expect(facts).to_contain_text("$.service.data.reading.value")
        expect(page.locator("pre.code")).to_contain_text('"scale": 3')
        page.get_by_role("button", name=re.compile("Retry")).click()
        expect(page.get_by_role("status")).to_have_text(
            "Accepted as entry 1: it will be delivered and tracked."
        )
        page.goto(url + "/ui/notifications/1")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Entry 1")
        expect(page.locator("pre.code")).to_contain_text('"scale": 3')


def test_console_device_page_shows_latest_data_and_command_history(page: Page, serve: Any) -> None:
    with serve() as url:
        post(url, data("meter-9", reading=11.0))
        post(url, data("meter-9", reading=12.5))
        for code in ("SENT", "SUCCESSFUL", "DELIVERED"):
            post(url, testing.build(
                "nbCommandStatusChanged", command_id="cmd-42", device_id="meter-9",
                result={"result_code": code},
            ))  # fmt: skip
        log_in(page, url, "/ui/devices")
        page.get_by_role("link", name="meter-9").click()
        data_table = page.get_by_role("region", name="Latest data").locator("table")
        expect(data_table).to_contain_text("reading")
        expect(data_table).to_contain_text("12.5")
        shot(page, "device")
        page.get_by_role("link", name="cmd-42").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("SUCCESSFUL")
        timeline = page.locator(".timeline li")
        expect(timeline).to_have_count(3)
        expect(timeline.nth(2)).to_contain_text("not applied: late or repeated")


def test_console_forged_post_without_csrf_token_is_refused(page: Page, serve: Any) -> None:
    receiver = Flaky()
    receiver.broken = True
    with serve(receiver) as url:
        post(url, data("meter-3", reading=1))
        log_in(page, url, "/ui/notifications/1")
        reload_until(page, lambda: "dead" in page.get_by_role("heading", level=1).inner_text())
        expect(page.get_by_role("heading", level=1)).to_contain_text("dead")
        # What a page of another site could make the browser send: the session, no CSRF token.
        answer = page.request.post(url + "/ui/notifications/1/replay", form={"csrf": "forged"})
        assert answer.status == 403
        answer = page.request.post(url + "/ui/notifications/1/replay", form={})
        assert answer.status == 403
        page.reload()
        expect(page.get_by_role("heading", level=1)).to_contain_text("dead")  # nothing replayed
        page.goto(url + "/ui/notifications/1/replay")
        page.evaluate("document.querySelector('form.confirm input[name=csrf]').value = 'forged'")
        page.get_by_role("button", name="Replay entry 1").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")


def test_console_without_a_session_gets_the_login_page_then_the_page_asked_for(
    page: Page, serve: Any
) -> None:
    with serve() as url:
        post(url, data("meter-5", reading=5))
        answer = page.goto(url + "/ui/devices/meter-5")
        assert answer is not None and answer.status == 401
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.context.add_cookies([{"name": "iotpush_console", "value": "1.forged.mac",
                                   "url": url + "/ui/"}])  # fmt: skip
        page.reload()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("meter-5")
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.goto(url + "/ui/devices/meter-5")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
