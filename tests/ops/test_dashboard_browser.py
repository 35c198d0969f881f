"""The dashboard in a real browser (issue 10): Playwright for Python driving Debian's Chromium.

A bridge runs keyed jobs that wait on a gate, ``serve_ops()`` serves the page,
and the test clicks what an operator would: Cancel on one job, Cancel kind,
Cancel all, each confirmed in the page's own dialog. The bridge is the
judge: the job ends CANCELLED there, then the page moves it to the history.

Playwright's own browser download does not work here: the browser is
``/usr/bin/chromium`` (Debian's ``chromium`` package, which ``.ci/run``
installs). Without it the module is skipped, unless ``BRIDGE_REQUIRE_BROWSER=1``
(as in CI), when that is a failure. Waits are Playwright's auto-retrying
expectations and the bridge's own futures, never sleeps. The page's
Content-Security-Policy forbids string evaluation, so the test reads the page
through locators (``wait_for_function`` would be refused).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from starlette.applications import Starlette
from starlette.routing import Mount

from bridge import Bridge, Job, JobCancelled, JobState
from bridge.ops import OpsServer, asgi_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds an expectation retries (the page refreshes every second).
WAIT_MS = 10_000

REQUIRED = os.environ.get("BRIDGE_REQUIRE_BROWSER") == "1"

if not CHROMIUM.exists() and not REQUIRED:
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _chromium() -> None:
    """With BRIDGE_REQUIRE_BROWSER=1 (CI), a missing Chromium fails every test here."""
    if not CHROMIUM.exists():
        pytest.fail(f"BRIDGE_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium")


# -- jobs that wait on a gate -------------------------------------------------------------


async def _new_gate() -> asyncio.Event:
    return asyncio.Event()


async def _open(gate: asyncio.Event) -> None:
    gate.set()


async def _held(gate: asyncio.Event) -> str:
    await gate.wait()
    return "released"


class Ops:
    """A bridge with its operations server and a gate its jobs wait on."""

    def __init__(self, b: Bridge) -> None:
        self.bridge = b
        self.gate = b.call(_new_gate)
        self.server: OpsServer = b.serve_ops()

    def hold(self, key: str, kind: str) -> Job[str]:
        return self.bridge.submit(_held, self.gate, key=key, kind=kind, timeout=None)

    def release(self) -> None:
        self.bridge.call(_open, self.gate)

    @property
    def page_url(self) -> str:
        """The dashboard's URL without the token."""
        return self.server.url.partition("?")[0]


@pytest.fixture
def ops() -> Iterator[Ops]:
    b = Bridge("dash", limits={"tts": 2}, max_pending=500).start()
    ops = Ops(b)
    yield ops
    ops.release()
    report = b.shutdown(timeout=5.0)  # stops the server too
    assert report.clean, report
    assert ops.server.closed


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; Playwright's driver and its threads end at teardown."""
    expect.set_options(timeout=WAIT_MS)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


class Watch:
    """What a page did: its requests, and its script errors (a CSP refusal included)."""

    def __init__(self, page: Page) -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def api_calls(self, method: str | None = None) -> list[str]:
        """The paths of the requests other than for the page itself."""
        return [
            r.url
            for r in self.requests
            if r.resource_type != "document" and (method is None or r.method == method)
        ]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def job_row(page: Page, job: Job[Any]) -> Any:
    return page.locator(f'#jobs tbody tr[data-job-id="{job.id}"]')


def history_row(page: Page, job: Job[Any]) -> Any:
    return page.locator(f'#history tbody tr[data-job-id="{job.id}"]')


def assert_cancelled(*jobs: Job[Any]) -> None:
    _, pending = concurrent.futures.wait(jobs, timeout=10)
    assert not pending, f"still running: {pending}"
    for job in jobs:
        assert job.state is JobState.CANCELLED, job
        with pytest.raises(JobCancelled):
            job.result()


def confirm(page: Page, title: str) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(title)
    dialog.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(dialog).to_be_hidden()


# -- the tests ------------------------------------------------------------------------------


def test_the_page_lists_live_jobs_and_keeps_the_token_out_of_the_url(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    hostile = '<img src=x onerror="document.title=1">&amp;'
    jobs = [ops.hold("call:1", "call"), ops.hold(hostile, "<b>kind</b>"), ops.hold("tts:1", "tts")]

    page.goto(ops.server.url)

    for job in jobs:
        expect(job_row(page, job)).to_contain_text(job.kind)
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    expect(job_row(page, jobs[0])).to_contain_text("call:1")
    expect(job_row(page, jobs[1]).locator("td").nth(1)).to_have_text(hostile)  # as text
    expect(page.locator("#kinds tbody tr[data-kind='<b>kind</b>']")).to_have_count(1)
    assert page.locator("img, b").count() == 0  # no markup came from the data
    expect(page.locator("#bridge-name")).to_have_text("dash")
    expect(page.locator("#bridge-state")).to_have_text("running")
    assert page.url == ops.page_url  # the token left the address bar ...
    stored = page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [ops.server.url.partition("?token=")[2]]  # ... for this tab's storage

    page.reload()  # the token survives a reload, from sessionStorage
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    assert all("token=" not in url for url in watch.api_calls())
    assert watch.errors == []


def test_cancelling_one_job_asks_first_then_moves_it_to_the_history(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    target, other = ops.hold("call:1", "call"), ops.hold("call:2", "call")
    page.goto(ops.server.url)
    row = job_row(page, target)
    expect(row).to_contain_text("running")

    row.get_by_role("button", name="Cancel").click()  # asked, then kept
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("call:1")
    dialog.get_by_role("button", name="Keep running").click()
    expect(dialog).to_be_hidden()

    row.get_by_role("button", name="Cancel").click()  # asked, then confirmed
    confirm(page, "call:1")

    assert_cancelled(target)
    expect(row).to_have_count(0)
    expect(history_row(page, target)).to_contain_text("cancelled")
    expect(history_row(page, target)).to_contain_text("call:1")
    expect(job_row(page, other)).to_contain_text("running")
    assert other.state is JobState.RUNNING
    posts = watch.api_calls("POST")
    assert [p.partition("/jobs/")[2] for p in posts] == [f"id/{target.id}/cancel"]  # one
    assert watch.errors == []


def test_cancel_kind_cancels_that_kind_only(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    tts = [ops.hold(f"tts:{n}", "tts") for n in range(3)]  # two run, one waits (limit 2)
    calls = [ops.hold(f"call:{n}", "call") for n in range(2)]
    page.goto(ops.server.url)
    kind_row = page.locator("#kinds tbody tr[data-kind='tts']")
    expect(kind_row).to_contain_text("2/2")
    expect(page.locator("#jobs tbody tr.state-pending")).to_have_count(1)

    kind_row.get_by_role("button", name="Cancel kind").click()
    confirm(page, "tts")

    assert_cancelled(*tts)
    for job in tts:
        expect(history_row(page, job)).to_contain_text("cancelled")
        expect(job_row(page, job)).to_have_count(0)
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    assert all(job.state is JobState.RUNNING for job in calls)
    expect(kind_row.get_by_role("button", name="Cancel kind")).to_be_disabled()
    assert [p.partition("/kinds/")[2] for p in watch.api_calls("POST")] == ["tts/cancel"]
    assert watch.errors == []


def test_cancel_all_cancels_every_job(ops: Ops, page: Page) -> None:
    jobs = [ops.hold(f"call:{n}", "call") for n in range(3)] + [ops.hold("tts:0", "tts")]
    page.goto(ops.server.url)
    expect(page.locator("#jobs tbody tr")).to_have_count(4)

    page.locator("#cancel-all").click()
    confirm(page, "Cancel all")

    assert_cancelled(*jobs)
    expect(page.locator("#jobs tbody tr")).to_have_count(0)
    expect(page.locator("#history tbody tr.outcome-cancelled")).to_have_count(4)
    expect(page.locator("#c-cancelled")).to_have_text("4")
    expect(page.locator("#cancel-all")).to_be_disabled()


def test_without_the_token_the_page_says_so_and_fetches_nothing(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    ops.hold("call:secret", "call")

    page.goto(ops.page_url)

    expect(page.locator("#token-required")).to_be_visible()
    expect(page.locator("#token-required")).to_contain_text("Token required")
    expect(page.locator("#app")).to_be_hidden()
    assert page.locator("#jobs tbody tr").count() == 0
    assert "call:secret" not in page.content()
    assert [r.url for r in watch.requests] == [ops.page_url]  # the page, nothing else
    assert watch.errors == []


def test_a_refused_token_stops_the_page(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    ops.hold("call:secret", "call")

    page.goto(ops.page_url + "?token=wrong")

    expect(page.locator("#token-required")).to_contain_text("refused")
    expect(page.locator("#app")).to_be_hidden()
    assert page.url == ops.page_url
    assert page.evaluate("() => sessionStorage.length") == 0  # the wrong token is forgotten
    assert "call:secret" not in page.content()
    assert all(url.startswith(ops.page_url) for url in watch.api_calls())


def test_two_hundred_live_jobs_render_quickly(ops: Ops, page: Page) -> None:
    jobs = [ops.hold(f"call:{n}", "call" if n % 2 else "ring") for n in range(200)]
    page.goto(ops.server.url)
    expect(page.locator("#jobs tbody tr")).to_have_count(200)
    expect(page.locator("#live-count")).to_have_text("(200)")

    body = page.locator("body")
    timings = []
    for _ in range(3):  # three refreshes with every row present: updates in place
        before = body.get_attribute("data-render-ms")
        expect(body).not_to_have_attribute("data-render-ms", before or "")
        expect(page.locator("#status")).to_contain_text("200 live")
        timings.append(float(body.get_attribute("data-render-ms") or "nan"))
    assert max(timings) < 100, timings  # milliseconds of script per refresh

    ops.bridge.cancel(jobs[0].key or "")
    assert_cancelled(jobs[0])
    expect(page.locator("#jobs tbody tr")).to_have_count(199)
    expect(page.locator("#jobs tbody tr").first).to_have_attribute("data-job-id", str(jobs[1].id))


def test_the_page_shows_when_its_figures_are_stale(ops: Ops, page: Page) -> None:
    job = ops.hold("call:1", "call")
    page.goto(ops.server.url)
    expect(job_row(page, job)).to_be_visible()

    ops.server.close()  # the operator's view of a process that went away

    expect(page.locator("#status")).to_contain_text("not updated: the server does not answer")
    expect(page.locator("#app")).to_have_class(re.compile(r"\bstale\b"))
    expect(job_row(page, job)).to_be_visible()  # the last figures stay, dimmed


@pytest.fixture
def mounted(ops: Ops) -> Iterator[str]:
    """``asgi_app(token=None)`` mounted at /bridge in a host app on uvicorn: the page's URL."""
    host = Starlette(routes=[Mount("/bridge", app=asgi_app(ops.bridge, token=None))])
    config = uvicorn.Config(host, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    with socket.create_server(("127.0.0.1", 0)) as sock:  # listening: no wait for the start
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="host-app")
        thread.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/bridge/"
        finally:
            server.should_exit = True
            thread.join(10)
    assert not thread.is_alive()


def test_mounted_without_a_token_of_its_own_the_page_sends_none(
    ops: Ops, mounted: str, page: Page
) -> None:
    watch = Watch(page)
    job = ops.hold("call:1", "call")

    page.goto(mounted)  # the host application authenticates; no ?token=

    expect(job_row(page, job)).to_contain_text("call:1")
    job_row(page, job).get_by_role("button", name="Cancel").click()
    confirm(page, "call:1")
    assert_cancelled(job)
    expect(history_row(page, job)).to_contain_text("cancelled")
    assert watch.api_calls()
    assert all(url.startswith(mounted) for url in watch.api_calls())  # under the mount point
    assert all("authorization" not in r.headers for r in watch.requests)
    assert watch.errors == []
