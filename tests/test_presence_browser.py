"""The presence admin page in a real browser, served by a WSGI live server.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, or
``CHROMIUM_BINARY`` / ``CHROMEDRIVER``) driven by Selenium, from the demo
browser tests' ``browser_factory``: without them the test skips saying what
to install, except under ``CI=true``. The page's
screenshot goes to ``test-artifacts/``; with ``UPDATE_SCREENSHOTS=1`` it also
replaces ``docs/img/presence-admin.png`` (the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.browser import (  # noqa: F401 (a fixture)
    ARTIFACTS,
    browser_factory_fixture,
    wait_until,
)
from tests.demo import ROOT
from tests.peers import SyncPeer
from tests.servers import NatsServer
from tests.test_presence_django import SCRIPT, _close_default_layer, layer_settings

README_SCREENSHOT = ROOT / "docs" / "img" / "presence-admin.png"


@pytest.fixture
def browser(browser_factory: Callable[..., Any]) -> Any:
    return browser_factory(1200, 1000)


@pytest.mark.django_db(transaction=True)
def test_admin_page_updates_live_without_reload(
    settings: Any, live_server: Any, browser: Any, nats_server: NatsServer, prefix: str
) -> None:
    from selenium.webdriver.common.by import By

    settings.CHANNEL_LAYERS = layer_settings(nats_server.url, prefix)
    peers = [SyncPeer(layer_settings(nats_server.url, prefix), script=SCRIPT)]
    peers.append(SyncPeer(layer_settings(nats_server.url, prefix), script=SCRIPT))
    try:
        a, b = peers
        a.call(
            "presence_join",
            room="lobby",
            session="specific.a!1",
            user="ann",
            meta={"status": "online", "name": "Ann"},
        )
        a.call(
            "presence_join",
            room="lobby",
            session="specific.a!2",
            user="ann",
            meta={"status": "away"},
        )
        b.call(
            "presence_join",
            room="lobby",
            session="specific.b!1",
            user="bob",
            meta={"status": "online"},
        )
        b.call("presence_join", room="support", session="specific.b!2", user="cy")
        User.objects.create_superuser("root", password="pw")
        browser.get(live_server.url + "/admin/login/?next=/admin/nats_presence/roster/")
        browser.find_element(By.NAME, "username").send_keys("root")
        browser.find_element(By.NAME, "password").send_keys("pw")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

        def members_text(drv: Any) -> str:
            return str(drv.find_element(By.ID, "members").text)

        wait_until(browser, lambda d: "bob" in members_text(d), "bob listed")
        page = browser.page_source
        assert "lobby" in page and "support" in page
        loaded = browser.execute_script("return performance.timeOrigin")

        # A join in another process appears without a reload.
        a.call("presence_join", room="support", session="specific.a!3", user="dee")
        wait_until(browser, lambda d: "dee" in members_text(d), "dee listed")
        assert browser.execute_script("return performance.timeOrigin") == loaded
        nodes = browser.find_element(By.ID, "nodes").text
        assert nodes.count("alive") == 2 and "this process" in nodes
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "presence-admin.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, README_SCREENSHOT)

        # When the data cannot be refreshed, the page says so.
        b.stop()
        a.stop()
        _close_default_layer()
        settings.CHANNEL_LAYERS = {}
        wait_until(
            browser,
            lambda d: "Cannot refresh" in d.find_element(By.ID, "stale").text,
            "the stale banner",
        )
    finally:
        for peer in peers:
            peer.stop()
        _close_default_layer()
