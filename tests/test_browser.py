"""The demo in real browsers: headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; or set ``CHROMIUM_BINARY`` and ``CHROMEDRIVER``).
Without them these tests skip saying what to install, except under
``CI=true``, where a missing browser fails them. Screenshots go to
``test-artifacts/``; with ``UPDATE_SCREENSHOTS=1`` the two room screenshots,
side by side (Pillow), replace ``docs/img/demo-room.png`` and the admin
presence page ``docs/img/demo-presence-admin.png`` (the README's).

The presence tests use a room each, so members left over from another test
(a page still closing) cannot satisfy or spoil them.
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

from tests.demo import ROOT, Demo

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


@pytest.fixture(scope="module")
def two_browsers(browser_factory: Callable[[], Any]) -> tuple[Any, Any]:
    return browser_factory(), browser_factory()


@pytest.fixture
def browsers(two_browsers: tuple[Any, Any]) -> tuple[Any, Any]:
    """Two browsers, each signed out (cookies are per browser) and out of any
    room a previous test left it in."""
    for browser in two_browsers:
        browser.get("about:blank")
        # Every host's cookies (delete_all_cookies only clears the page's).
        browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
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


def open_room(browser: Any, base_url: str, user: str, room: str = "general") -> None:
    sign_in(browser, base_url, user, "demo", f"/rooms/{room}/")
    wait_connected(browser, user)


def wait_connected(browser: Any, user: str) -> None:
    wait_until(
        browser,
        text_in("#ws-status", "connected"),
        f"{user}'s WebSocket connected",
    )


def who_is_here(browser: Any) -> dict[str, tuple[int, str]]:
    """The room page's presence list: ``{user: (open tabs, status)}``."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#presence .member'))"
        ".map(li => [li.dataset.user, li.querySelector('.tabs').dataset.tabs,"
        " li.dataset.status]);"
    )
    return {user: (int(tabs), status) for user, tabs, status in rows}


def presence_shows(
    user: str, tabs: int, status: str = "online"
) -> Callable[[Any], bool]:
    return lambda browser: who_is_here(browser).get(user) == (tabs, status)


def presence_lacks(user: str) -> Callable[[Any], bool]:
    return lambda browser: user not in who_is_here(browser)


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
    # Both lists hold both users (the picture in the README shows them).
    wait_until(bob, presence_shows("alice", 1, "away"), "alice away at bob")
    wait_until(alice, presence_shows("bob", 1), "bob at alice")
    shots = [ARTIFACTS / "room-alice-daphne1.png", ARTIFACTS / "room-bob-daphne2.png"]
    alice.save_screenshot(str(shots[0]))
    bob.save_screenshot(str(shots[1]))
    composed = ARTIFACTS / "room-two-browsers.png"
    if not side_by_side(shots, composed):
        if update_screenshots():
            pytest.fail("UPDATE_SCREENSHOTS=1 needs Pillow: pip install pillow")
        return
    if update_screenshots():
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(composed, README_SCREENSHOT)


def test_presence_lists_tabs_status_and_leaves_across_the_daphnes(
    browsers: tuple[Any, Any], browser_factory: Callable[..., Any], demo: Demo
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    one, two = demo.urls
    alice = browsers[0]
    bob = browser_factory()  # this test closes it
    open_room(alice, one, "alice", "random")
    open_room(bob, two, "bob", "random")
    for viewer in (alice, bob):
        wait_until(viewer, presence_shows("alice", 1), "alice with 1 tab")
        wait_until(viewer, presence_shows("bob", 1), "bob with 1 tab")

    # Alice's second tab, on the other daphne: one user, two metas.
    first_tab = alice.current_window_handle
    alice.switch_to.new_window("tab")
    alice.get(f"{two}/rooms/random/")  # cookies are per host, not per port
    wait_connected(alice, "alice (second tab)")
    wait_until(bob, presence_shows("alice", 2), "alice with 2 tabs at bob")
    wait_until(alice, presence_shows("alice", 2), "alice with 2 tabs at alice")
    bob.save_screenshot(str(ARTIFACTS / "presence-two-tabs-bob.png"))
    alice.close()
    alice.switch_to.window(first_tab)
    wait_until(bob, presence_shows("alice", 1), "alice back to 1 tab at bob")

    # A status change is a metadata update on the open connection.
    Select(bob.find_element(By.ID, "status")).select_by_value("busy")
    wait_until(alice, presence_shows("bob", 1, "busy"), "bob busy at alice")
    joined = [
        el.text
        for el in bob.find_elements(By.CSS_SELECTOR, "#log .system")
        if el.text.startswith("Joined as")
    ]
    assert len(joined) == 1, f"bob's page reconnected: {joined}"
    alice.save_screenshot(str(ARTIFACTS / "presence-bob-busy-alice.png"))

    # Closing bob's browser closes his WebSocket: he leaves everyone's list.
    bob.quit()
    wait_until(alice, presence_lacks("bob"), "bob gone from alice's list")
    assert who_is_here(alice) == {"alice": (1, "online")}


def test_lobby_counts_members_live(browsers: tuple[Any, Any], demo: Demo) -> None:
    from selenium.webdriver.common.by import By

    one, two = demo.urls
    watcher, carol = browsers
    watcher.get(f"{one}/")  # signed out: the lobby needs no sign-in

    def count(browser: Any) -> str:
        el = browser.find_element(By.CSS_SELECTOR, '[data-presence-count="nats"]')
        return str(el.get_attribute("data-count"))

    wait_until(watcher, lambda b: count(b) == "0", "the nats room empty")
    open_room(carol, two, "carol", "nats")
    wait_until(watcher, lambda b: count(b) == "1", "carol counted in the lobby")
    watcher.save_screenshot(str(ARTIFACTS / "lobby-live-count.png"))
    carol.get("about:blank")
    wait_until(watcher, lambda b: count(b) == "0", "carol's leave in the lobby")


def test_staff_sees_both_members_on_the_admin_presence_page(
    browsers: tuple[Any, Any], browser_factory: Callable[..., Any], demo: Demo
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    one, two = demo.urls
    alice, bob = browsers
    open_room(alice, one, "alice", "nats")
    open_room(bob, two, "bob", "nats")
    Select(bob.find_element(By.ID, "status")).select_by_value("away")
    admin = browser_factory(1200, 860)
    admin.get(f"{one}/admin/login/?next=/admin/nats_presence/roster/")
    admin.find_element(By.ID, "id_username").send_keys("admin")
    admin.find_element(By.ID, "id_password").send_keys("admin")
    admin.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    def members(browser: Any) -> str:
        return str(browser.find_element(By.ID, "members").text)

    wait_until(
        admin,
        lambda b: "alice" in members(b) and '"away"' in members(b),
        "alice and bob (away) on the admin presence page",
    )
    rows = [
        row.text
        for row in admin.find_elements(By.CSS_SELECTOR, "#members tbody tr")
        if "nats" in row.text
    ]
    assert any("alice" in row and "daphne #1" in row for row in rows), rows
    assert any("bob" in row and "daphne #2" in row for row in rows), rows
    assert admin.find_element(By.ID, "nodes").text.count("alive") >= 1
    shot = ARTIFACTS / "admin-presence.png"
    admin.save_screenshot(str(shot))
    if update_screenshots():
        shutil.copyfile(shot, README_ADMIN_SCREENSHOT)
    admin.quit()


def test_non_staff_user_does_not_see_the_admin_presence_page(
    browsers: tuple[Any, Any], demo: Demo
) -> None:
    from selenium.webdriver.common.by import By

    one, two = demo.urls
    alice, carol = browsers
    open_room(alice, one, "alice", "nats")
    sign_in(carol, two, "carol", "demo", "/")
    carol.get(f"{two}/admin/nats_presence/roster/")
    wait_until(
        carol,
        text_in(".errornote", "You are authenticated as carol, but are not authorized"),
        "the admin refusing carol",
    )
    assert carol.find_elements(By.ID, "members") == []
    assert "alice" not in carol.page_source
    carol.get(f"{two}/admin/nats_presence/roster/data/")
    assert "alice" not in carol.page_source
    assert "/admin/login/" in carol.current_url
    carol.save_screenshot(str(ARTIFACTS / "admin-presence-refused-carol.png"))


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
