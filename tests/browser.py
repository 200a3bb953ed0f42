"""Headless Chromium for the browser tests, and helpers to drive the demo.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; or set ``CHROMIUM_BINARY`` and ``CHROMEDRIVER``).
Without them the ``browser_factory`` fixture skips saying what to install,
except under ``CI=true``, where a missing browser fails the test. A test
module uses it by importing it: ``from tests.browser import
browser_factory_fixture`` (the fixture is named ``browser_factory``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.demo import ROOT

ARTIFACTS = ROOT / "test-artifacts"
README_SCREENSHOT = ROOT / "docs" / "img" / "demo-room.png"
README_ADMIN_SCREENSHOT = ROOT / "docs" / "img" / "demo-presence-admin.png"
INSTALL_HINT = (
    "install Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver), or set CHROMIUM_BINARY and "
    "CHROMEDRIVER to a Chromium and its matching chromedriver"
)
WAIT = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(message)


def _find(env_var: str, *names: str) -> str | None:
    configured = os.environ.get(env_var)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module", name="browser_factory")
def browser_factory_fixture() -> Iterator[Callable[[], Any]]:
    """Make headless Chromium sessions; all are quit at the end of the module."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed: pip install selenium (in [test])")
    chromium = _find("CHROMIUM_BINARY", "chromium", "chromium-browser")
    driver = _find("CHROMEDRIVER", "chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(
            what
            for what, path in (("chromium", chromium), ("chromedriver", driver))
            if path is None
        )
        _unavailable(f"{missing} not found: {INSTALL_HINT}")
    ARTIFACTS.mkdir(exist_ok=True)
    made: list[Any] = []

    def make(width: int = 900, height: int = 860) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(arg)
        browser = webdriver.Chrome(options=options, service=Service(driver))
        browser.implicitly_wait(0)
        made.append(browser)
        return browser

    yield make
    for browser in made:
        with contextlib.suppress(Exception):  # a test may have quit it already
            browser.quit()


def wait_until(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        shot = ARTIFACTS / f"timeout-{uuid.uuid4().hex[:6]}.png"
        browser.save_screenshot(str(shot))
        raise AssertionError(
            f"{what} not seen within {WAIT}s at {browser.current_url} "
            f"(screenshot {shot})"
        ) from None


def text_in(css: str, text: str) -> Callable[[Any], bool]:
    from selenium.webdriver.common.by import By

    def check(browser: Any) -> bool:
        return any(
            text in el.text for el in browser.find_elements(By.CSS_SELECTOR, css)
        )

    return check


def sign_in(browser: Any, base_url: str, user: str, password: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/accounts/login/?next={path}")
    browser.find_element(By.ID, "id_username").send_keys(user)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.ID, "login-submit").click()
    wait_until(browser, text_in("#current-user", user), f"signed in as {user}")


def open_room(browser: Any, base_url: str, user: str, room: str = "general") -> None:
    sign_in(browser, base_url, user, "demo", f"/rooms/{room}/")
    wait_connected(browser, user)


def wait_connected(browser: Any, user: str) -> None:
    wait_until(
        browser,
        text_in("#ws-status", "connected"),
        f"{user}'s WebSocket connected",
    )


def side_by_side(shots: list[Path], out: Path) -> bool:
    """Compose screenshots left to right into ``out``; False without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return False
    images = [Image.open(shot) for shot in shots]
    gap = 16
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), (205, 210, 220))
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    canvas.save(out, optimize=True)
    return True


def update_screenshots() -> bool:
    return os.environ.get("UPDATE_SCREENSHOTS") == "1"
