"""Browser tests: Playwright driving Debian's Chromium (headless) against pytest-django's live_server.

- Every test here is skipped, with the reason in the report, when no Chromium binary is found
  (CHROMIUM_PATH, then `chromium` / `chromium-browser` on PATH, then /usr/bin/chromium).
- `shot(page, name)` saves a full-page screenshot to test-artifacts/screenshots/<name>.png.
- A test fails when any page it opened logged a console error or threw an uncaught exception.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.factories import feedback_kinds_ensure

PROJECT_DIR = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = PROJECT_DIR / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
STAFF_PASSWORD = "correct-horse-battery"


def chromium_path() -> str | None:
    candidates = [
        os.environ.get("CHROMIUM_PATH"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and os.access(candidate, os.X_OK):
            return candidate
    return None


SKIP_REASON = "browser tests skipped: no Chromium binary found (apt-get install -y chromium, or set CHROMIUM_PATH)"


def pytest_report_header(config):
    path = chromium_path()
    return f"browser tests: Chromium at {path}" if path else f"{SKIP_REASON.upper()}"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    browser_items = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in browser_items:
        item.add_marker(pytest.mark.browser)
    if chromium_path() is None:
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in browser_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an asyncio loop in this thread; Django refuses ORM calls from a
    # thread with a running loop unless told it is deliberate (the ORM calls here are synchronous).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class ConsoleErrors(list):
    def watch(self, page) -> None:
        page.on(
            "console",
            lambda message: message.type == "error" and self.append(f"{page.url}: console error: {message.text}"),
        )
        page.on("pageerror", lambda error: self.append(f"{page.url}: uncaught exception: {error}"))


@pytest.fixture
def page(browser, live_server, request):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = ConsoleErrors()
    errors.watch(page)
    yield page
    if not page.is_closed() and page.url.startswith("http"):
        shot(page, f"{request.node.name}-last")
    context.close()
    if errors:
        pytest.fail("the page logged errors:\n" + "\n".join(errors), pytrace=False)


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and return its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def seeded(transactional_db):
    """live_server tests are transactional: the migration-seeded rows were flushed; restore them."""
    feedback_kinds_ensure()


@pytest.fixture
def staff_user(seeded):
    from tests.factories import StaffUserFactory

    return StaffUserFactory(username="staff", password=STAFF_PASSWORD)


def sign_in(page, username: str, password: str = STAFF_PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]:has-text('Sign in')")
    page.wait_for_url(lambda url: "/accounts/login" not in url)
