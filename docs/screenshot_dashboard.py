"""Take the dashboard screenshot of the docs (docs/reference/ops.md) from a real run of the example.

    .venv/bin/python docs/screenshot_dashboard.py [docs/img/dashboard.png]

Runs ``python -m examples.telephony_flow simulate ... --ops 127.0.0.1:0 --hold``,
opens the printed URL in Debian's Chromium (``/usr/bin/chromium``) through
Playwright at 1280x800, waits until calls are up and some have ended, saves
the screenshot, and ends the run with Ctrl+C (SIGINT).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
RUN = [
    *("simulate", "--calls", "400", "--concurrency", "60", "--seed", "7"),
    *("--dtmf-timeout", "6", "--resident-timeout", "6", "--ops", "127.0.0.1:0", "--hold"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def main(target: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "examples.telephony_flow", *RUN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            url = _dashboard_url(proc.stdout)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(url)
                rows = page.locator("#jobs tbody tr")
                expect(rows.nth(40)).to_be_attached(timeout=30_000)  # calls are up
                cancelled = page.locator("#history tbody tr.outcome-cancelled")
                expect(cancelled.first).to_be_attached(timeout=30_000)  # a visitor left
                waiting = page.locator("#kinds tbody tr[data-kind='tts'] td").nth(2)
                expect(waiting).not_to_have_text("0", timeout=30_000)  # prompts queue for TTS
                page.screenshot(path=str(target))
                browser.close()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)


def _dashboard_url(stdout: Iterable[str]) -> str:
    for line in stdout:
        match = re.match(r"dashboard: (\S+)", line)
        if match:
            return match.group(1)
    raise SystemExit("the example printed no dashboard URL")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "dashboard.png")
