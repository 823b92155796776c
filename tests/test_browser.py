"""The explorer in a real browser: `streamlit run apps/explorer.py` on a free port, every page of the navigation
opened in headless Chromium (Playwright driving Debian's /usr/bin/chromium; Playwright never downloads a browser),
no page shows Streamlit's exception element, two browser contexts (two sessions) train on the toy page at once for
about half a minute, every page is checked again, and each page's screenshot is saved as docs/explorer_*.png (the
README's screenshots).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {  # url path -> (title, screenshot name)
    "": ("SiD's score identities", "identities"),
    "failure_case": ("The failure case (Proposition 4)", "failure_case"),
    "toy_distillation": ("Toy distillation, live", "toy_distillation"),
    "runs": ("Full-scale runs", "runs"),
    "choosing_alpha": ("How to choose alpha", "choosing_alpha"),
}
TRAIN_SECONDS = 30
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                 "(.ci/run installs it: apt-get install -y chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer served headless on a free loopback port; stopped (only this process) afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "apps/explorer.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def settle(page, title: str, timeout: float = 150.0) -> None:
    """Wait until the page shows its title and the script has stopped running for a moment."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=timeout * 1000)
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 3:
        if time.monotonic() > deadline:
            raise AssertionError(f"{title}: still running after {timeout:.0f} s")
        busy = page.locator("[data-testid=stStatusWidget]").count() > 0
        quiet = 0 if busy else quiet + 1
        page.wait_for_timeout(300)


def exceptions(page) -> list[str]:
    return [e.inner_text()[:500] for e in page.locator("[data-testid=stException]").all()]


def shoot(page, name: str, heading: str | None = None) -> None:
    """A viewport screenshot into docs/explorer_NAME.png, scrolled so that `heading` is at the top."""
    if heading:
        page.get_by_role("heading", name=heading).first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(600)
    page.screenshot(path=str(REPO / "docs" / f"explorer_{name}.png"))


def toy_step(page) -> int:
    """The step of the run on screen, read from the page's status bar (or -1 before the first draw)."""
    for text in page.locator("[data-testid=stProgress]").all_inner_texts():
        match = re.search(r"step (\d+) of", text)
        if match:
            return int(match.group(1))
    return -1


def test_every_page_in_chromium_and_two_sessions_training_at_once(server):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            first = browser.new_context(viewport=VIEWPORT)
            page = first.new_page()
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            for path, (title, name) in PAGES.items():
                page.goto(f"{server}/{path}")
                settle(page, title)
                assert not exceptions(page), (title, exceptions(page))
                if path == "":
                    shoot(page, name, "1. Tweedie's formula")
                elif path == "failure_case":
                    shoot(page, name)
                    shoot(page, "failure_case_lagging", "When f_psi lags behind: a two-timescale system")
                elif path == "runs":
                    shoot(page, name)
                    page.get_by_role("button", name="Generate").click()
                    page.get_by_text("speed-up of one step").wait_for(timeout=120_000)
                    settle(page, title)
                    assert not exceptions(page), exceptions(page)
                    shoot(page, "runs_compare", "The shipped MNIST models: one step against the teacher's sampler")
                elif path != "toy_distillation":
                    shoot(page, name)

            # Two sessions train on the toy page at the same time.
            second = browser.new_context(viewport=VIEWPORT)
            other = second.new_page()
            other.on("pageerror", lambda error: errors.append(f"page error (second session): {error}"))
            sessions = [page, other]
            for session in sessions:
                session.goto(f"{server}/toy_distillation")
                settle(session, "Toy distillation, live")
            for session in sessions:
                session.get_by_role("button", name="Start").click()
            started, steps = time.monotonic(), {0: [], 1: []}
            while time.monotonic() - started < TRAIN_SECONDS:
                for i, session in enumerate(sessions):
                    steps[i].append(toy_step(session))
                    assert not exceptions(session), (i, exceptions(session))
                page.wait_for_timeout(1500)
            for i, session in enumerate(sessions):
                assert steps[i][-1] >= 40 and len(set(steps[i])) >= 4, f"session {i} did not train: {steps[i]}"
                session.get_by_role("button", name="Pause").click()
            for session in sessions:
                session.get_by_text("Paused", exact=False).first.wait_for(timeout=60_000)
                settle(session, "Toy distillation, live")
                assert not exceptions(session), exceptions(session)
            shoot(page, "toy_distillation")

            # Every page again, in the second session.
            for path, (title, _) in PAGES.items():
                other.goto(f"{server}/{path}")
                settle(other, title)
                assert not exceptions(other), (title, exceptions(other))
        finally:
            browser.close()
    assert not errors, errors
