"""A person in a browser: demo page → hosted page → sandbox sign-in and consent → connected → disconnect."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import ARTIFACTS, browser_page
from tests.e2e.stack import RunningStack

pytestmark = pytest.mark.e2e


def test_connect_reconnect_disconnect_in_a_browser(stack: RunningStack) -> None:
    with browser_page() as page:
        page.goto(f"{stack.broker_url}/demo")
        assert page.inner_text("#connection-status") == "not connected"

        page.click("#connect")
        page.wait_for_url(f"{stack.broker_url}/connect/*")
        assert "Connect third-party add-ons" in page.inner_text("main")
        assert page.evaluate("document.referrer") == ""
        page.screenshot(path=str(ARTIFACTS / "hosted-connect-page.png"))
        page.click("#connect-to-xero")

        page.wait_for_url(f"{stack.sandbox_url}/**")
        page.select_option("select[name=user]", "alice@sandbox.example")
        page.click("text=Log in")
        page.check("input[name=tenant_id] >> nth=0")
        page.screenshot(path=str(ARTIFACTS / "sandbox-consent.png"))
        page.click("text=Allow access")

        page.wait_for_url(f"{stack.broker_url}/demo?status=connected*")
        assert "Connected to Xero Practice Manager" in page.inner_text("#banner")
        assert page.inner_text("#connection-status") == "active"
        assert page.inner_text("#practice-name").startswith("Bloggs")
        # The broker's signed webhook reaches the demo vendor's receiver; the page lists it live.
        expect(webhook(page, "connection.created")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "demo-connected.png"))

        # Typeahead from the third letter, then a client's detail.
        page.fill("#client-search", "Bl")
        page.wait_for_timeout(400)
        assert page.locator("a.suggestion").count() == 0
        page.fill("#client-search", "Blogg")
        page.wait_for_selector("a.suggestion")
        page.locator("a.suggestion", has_text="Bloggs Electrical").first.click()
        page.wait_for_url(f"{stack.broker_url}/demo/clients/*")
        assert "Bloggs Electrical" in page.inner_text("#client-name")
        assert page.locator("#relationships li").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "demo-client.png"))
        page.goto(f"{stack.broker_url}/demo")

        # Push a new company with two directors; the pump runs the job like SQS + Lambda would.
        page.fill("input[name=company]", "Browser Push Pty Ltd")
        page.fill("input[name=d1_first]", "Dana")
        page.fill("input[name=d1_last]", "Director")
        page.fill("input[name=d2_first]", "Dev")
        page.fill("input[name=d2_last]", "Director")
        page.click("#push")
        page.wait_for_url(f"{stack.broker_url}/demo/pushes/*")
        expect(page.locator("#push-status")).to_have_text("completed", timeout=60_000)
        assert page.locator("#push-records tr").count() == 3
        page.screenshot(path=str(ARTIFACTS / "demo-push.png"))
        page.goto(f"{stack.broker_url}/demo")
        expect(webhook(page, "push.completed")).to_be_visible(timeout=60_000)

        page.click("#reconnect")
        page.wait_for_url(f"{stack.broker_url}/connect/*")
        page.click("#connect-to-xero")
        page.select_option("select[name=user]", "alice@sandbox.example")
        page.click("text=Log in")
        page.click("text=Allow access")
        page.wait_for_url(f"{stack.broker_url}/demo?status=connected*")
        assert page.inner_text("#connection-status") == "active"

        page.click("#disconnect")
        page.wait_for_url(f"{stack.broker_url}/demo")
        assert page.inner_text("#connection-status") == "revoked"
        expect(webhook(page, "connection.revoked")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "demo-disconnected.png"))


def webhook(page: Any, event_type: str) -> Any:
    """The demo page's entry for a received (and verified) webhook of ``event_type``."""
    return page.locator(f'#webhooks li.webhook[data-type="{event_type}"]').first


def test_staff_without_permission_see_what_to_ask_for(stack: RunningStack) -> None:
    with browser_page() as page:
        page.goto(f"{stack.broker_url}/demo")
        page.click("#connect")
        page.click("#connect-to-xero")
        page.select_option("select[name=user]", "bob@sandbox.example")
        page.click("text=Log in")
        assert "don't have access to connect any Xero Practice Manager accounts" in page.inner_text("body")
        page.click("text=Allow access")
        page.wait_for_url(f"{stack.broker_url}/demo?status=error*")
        banner = page.inner_text("#banner")
        assert "Connect third-party add-ons" in banner
        assert "Settings" in banner
        page.screenshot(path=str(ARTIFACTS / "demo-no-permission.png"))
