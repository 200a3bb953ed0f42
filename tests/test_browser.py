"""The demo in real browsers: headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; or set ``CHROMIUM_BINARY`` and ``CHROMEDRIVER``).
Without them these tests skip saying what to install, except under
``CI=true``, where a missing browser fails them. Screenshots go to
``test-artifacts/``; with ``UPDATE_SCREENSHOTS=1`` the room screenshot also
replaces ``docs/img/demo-room.png`` (the README's).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.demo import ROOT, Demo

ARTIFACTS = ROOT / "test-artifacts"
README_SCREENSHOT = ROOT / "docs" / "img" / "demo-room.png"
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


@pytest.fixture(scope="module")
def browser_factory() -> Iterator[Callable[[], Any]]:
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

    def make() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1100,900",
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
        browser.quit()


@pytest.fixture(scope="module")
def two_browsers(browser_factory: Callable[[], Any]) -> tuple[Any, Any]:
    return browser_factory(), browser_factory()


@pytest.fixture
def browsers(two_browsers: tuple[Any, Any]) -> tuple[Any, Any]:
    """Two browsers, each signed out (cookies are per browser)."""
    for browser in two_browsers:
        browser.delete_all_cookies()
    return two_browsers


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


def open_room(browser: Any, base_url: str, user: str) -> None:
    sign_in(browser, base_url, user, "demo", "/rooms/general/")
    wait_until(
        browser,
        text_in("#ws-status", "connected"),
        f"{user}'s WebSocket connected",
    )


def test_two_browsers_on_the_two_daphnes_chat(
    browsers: tuple[Any, Any], demo: Demo
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    one, two = demo.urls
    alice, bob = browsers
    open_room(alice, one, "alice")
    open_room(bob, two, "bob")
    assert "daphne #1" in alice.find_element(By.ID, "served-by").text
    assert "daphne #2" in bob.find_element(By.ID, "served-by").text

    # Messages are not stored: each page sees only what is sent after it joined.
    hello = "Hi Bob, this went from daphne #1 through NATS"
    alice.find_element(By.ID, "message-input").send_keys(hello, Keys.ENTER)
    wait_until(bob, text_in("#log .message", hello), "alice's message at bob")
    reply = "Hi Alice, it arrived on daphne #2"
    bob.find_element(By.ID, "message-input").send_keys(reply, Keys.ENTER)
    wait_until(alice, text_in("#log .message", reply), "bob's reply at alice")

    # The sync view, through the page's notification form.
    bob.find_element(By.ID, "notify-text").send_keys("Build finished")
    bob.find_element(By.ID, "notify-send").click()
    wait_until(alice, text_in("#log .notification", "Build finished"), "notification")

    Select(alice.find_element(By.ID, "status")).select_by_value("away")
    wait_until(alice, text_in("#log .system", "Status set to away"), "status ack")

    # Bob's view: alice's message relayed by daphne #1, his own by #2.
    wait_until(bob, text_in("#log .notification", "Build finished"), "own notice")
    assert "via daphne #1" in bob.find_element(By.CSS_SELECTOR, "#log").text
    alice.save_screenshot(str(ARTIFACTS / "room-alice-daphne1.png"))
    bob.save_screenshot(str(ARTIFACTS / "room-bob-daphne2.png"))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        bob.save_screenshot(str(README_SCREENSHOT))


def test_staff_user_can_open_the_admin(browsers: tuple[Any, Any], demo: Demo) -> None:
    from selenium.webdriver.common.by import By

    browser = browsers[0]
    url = demo.urls[0]
    browser.get(f"{url}/admin/login/?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys("admin")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(browser, text_in("h1", "Site administration"), "admin index")
    browser.find_element(By.LINK_TEXT, "Rooms").click()
    wait_until(browser, text_in("#result_list", "general"), "rooms in the admin")
    browser.save_screenshot(str(ARTIFACTS / "admin-rooms.png"))


def test_non_staff_demo_user_cannot_open_the_admin(
    browsers: tuple[Any, Any], demo: Demo
) -> None:
    browser = browsers[1]
    url = demo.urls[1]
    sign_in(browser, url, "carol", "demo", "/")
    wait_until(browser, text_in("#rooms", "General"), "the lobby's rooms")
    browser.save_screenshot(str(ARTIFACTS / "lobby-carol.png"))
    browser.get(f"{url}/admin/")
    wait_until(
        browser,
        text_in(".errornote", "You are authenticated as carol, but are not authorized"),
        "the admin refusing carol",
    )
    assert "Site administration" not in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "admin-refused-carol.png"))
