"""The demo in real browsers: headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (see ``tests/browser.py``):
without them these tests skip saying what to install, except under
``CI=true``, where a missing browser fails them. Screenshots go to
``test-artifacts/``; with ``UPDATE_SCREENSHOTS=1`` the two room screenshots,
side by side (Pillow), replace ``docs/img/demo-room.png`` and the admin
presence page ``docs/img/demo-presence-admin.png`` (the README's).

The presence tests use a room each, so members left over from another test
(a page still closing) cannot satisfy or spoil them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser import (  # noqa: F401 (a fixture)
    ARTIFACTS,
    README_ADMIN_SCREENSHOT,
    README_SCREENSHOT,
    browser_factory_fixture,
    open_room,
    side_by_side,
    sign_in,
    text_in,
    update_screenshots,
    wait_connected,
    wait_until,
)
from tests.demo import Demo


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
