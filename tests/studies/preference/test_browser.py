"""The voting page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): a participant
votes through a study by clicking and by keyboard, pauses and comes back; screenshots of the voting page (phone and
desktop), the admin page and the report are kept in $HUMANTUNE_TEST_ARTIFACTS (or the test's tmp_path)."""

import os
import threading
import time
from pathlib import Path

import pytest

from humantune.studies.preference.loadtest import free_port
from humantune.studies.preference.results import write_results
from humantune.studies.preference.server import create_app
from humantune.studies.preference.storage import StudyStore
from humantune.studies.preference.study import StudyConfig, create_study

from .conftest import make_generated

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = 'a <b>bold</b> man & <script>alert("x")</script> waving'


def require_chromium():
    """Playwright's sync API, once Debian's Chromium is known to be there: skipped without it on a developer's
    machine, failed in CI (CI=true), where .ci/run installs it."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it and runs this test")
    from playwright import sync_api

    return sync_api


@pytest.fixture
def artifacts(tmp_path, request):
    root = os.environ.get("HUMANTUNE_TEST_ARTIFACTS")
    path = Path(root) / request.node.name if root else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def served(tmp_path):
    """A 6-pair study served by uvicorn in a thread on 127.0.0.1."""
    import uvicorn

    prompts = [PROMPT, "a woman sitting on the grass", "a boy running on the street"]
    made = create_study({"base": make_generated(tmp_path / "base", (200, 60, 60), prompts=prompts, size=64),
                         "tuned": make_generated(tmp_path / "tuned", (60, 160, 60), prompts=prompts, size=64)},
                        tmp_path / "study", StudyConfig(participants=2, seed=1))
    app = create_app(made.path)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield made, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.store.close()


def until(condition, timeout: float = 15.0) -> None:
    """Poll ``condition`` from Python: the page's Content-Security-Policy (script-src 'self') forbids the eval that
    Playwright's wait_for_function needs, and the test keeps that policy on."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the page did not reach the expected state"
        time.sleep(0.05)


def test_vote_by_click_and_keyboard_with_pause(served, artifacts, tmp_path):
    sync_api = require_chromium()
    made, base = served
    token = made.tokens["participants"]["P1"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
        try:
            page = browser.new_page()
            page.goto(f"{base}/s/{token}")

            def wait_ready(answered: int):
                until(lambda: page.inner_text("#progress-text").startswith(f"{answered} of")
                      and page.is_enabled("#pick-left"))

            wait_ready(0)
            assert page.inner_text("#question") == "Which person looks more natural?"
            page.screenshot(path=str(artifacts / "voting_page_phone.png"), full_page=True)
            # by clicking (tap on a phone): the left image, then the tie button
            page.click("#pick-left")
            wait_ready(1)
            page.click("#pick-tie")
            wait_ready(2)
            # pause with the keyboard, reload (come back later), continue where it stopped
            page.keyboard.press("p")
            assert page.is_visible("#paused") and not page.is_visible("#voting")
            page.reload()
            wait_ready(2)
            # by keyboard: right, left, space (tie), down (tie)
            for n, key in enumerate(["ArrowRight", "ArrowLeft", " ", "ArrowDown"], start=3):
                page.keyboard.press(key)
                if n < 6:
                    wait_ready(n)
            page.wait_for_selector("#done", state="visible", timeout=15000)
            assert page.inner_text("#progress-text") == "6 of 6 answered"

            # the prompt with HTML was shown as text: no element was made from it
            other = browser.new_page()
            other.set_viewport_size({"width": 1280, "height": 800})
            other.goto(f"{base}/s/{made.tokens['participants']['P2']}")
            until(lambda: other.is_enabled("#pick-left"))
            for _ in range(6):
                if other.inner_text("#prompt") == PROMPT:
                    break
                other.keyboard.press("ArrowLeft")
                other.wait_for_timeout(300)
            assert other.inner_text("#prompt") == PROMPT
            assert other.eval_on_selector("#prompt", "e => e.children.length") == 0
            other.screenshot(path=str(artifacts / "voting_page_desktop.png"))

            admin = browser.new_page()
            admin.set_viewport_size({"width": 1280, "height": 800})
            admin.goto(f"{base}/admin/{made.tokens['admin']}")
            until(lambda: admin.locator("#participants tbody tr").count() == 2)
            admin.screenshot(path=str(artifacts / "admin_page.png"), full_page=True)

            store = StudyStore(made.path)
            votes = [v for v in store.vote_rows() if v["participant"] == "P1"]
            store.close()
            assert [v["choice"] for v in sorted(votes, key=lambda v: v["position"])] == \
                ["left", "tie", "right", "left", "tie", "tie"]

            write_results(made.path, tmp_path / "results", n_boot=100)
            report = browser.new_page()
            report.set_viewport_size({"width": 1280, "height": 900})
            report.goto((tmp_path / "results" / "report.html").as_uri())
            assert "Win rates" in report.inner_text("body")
            report.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()
    for name in ("voting_page_phone.png", "voting_page_desktop.png", "admin_page.png", "report.png"):
        assert (artifacts / name).stat().st_size > 5000, name
