"""Access requests with four eyes in a real browser (issue 15 items 1, 3, 6): bob asks for
access with a ticket on his page, anna sees the request appear on her open help page without
a reload and approves it for a shorter time, four eyes holds it until dora (a second admin,
German) approves too, and bob opens the tenant in the application without ever having had a
code. Served for real (tests/browser/browser_live.py); every wait is an auto-waiting
``expect`` or a deadline."""

from __future__ import annotations

import re

import pytest

from browser_live import browser, live  # noqa: F401 (fixtures used by name)
from browser_live import expect, new_context, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "10042"


def test_story_request_four_eyes_and_open_without_a_code(browser, live):
    check = expect()
    contexts = [new_context(browser), new_context(browser), new_context(browser, "de-DE")]
    anna_context, bob_context, dora_context = contexts
    try:
        # anna turns four eyes on in the help page's settings.
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        check(anna.locator("#access-requests")).to_contain_text("No open access requests.")
        anna.get_by_label("Four eyes").check()
        anna.get_by_role("button", name="Save ways in").click()
        check(anna.get_by_role("status")).to_contain_text(
            "Saved: Access code and access request; four eyes on.")
        check(anna.locator("#requests")).to_contain_text("Four eyes is on")

        # bob asks for access with a ticket, for a working day.
        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        check(bob.locator("#my-tenants")).to_have_count(0)
        bob.get_by_label("Tenant to ask").fill(TENANT)
        bob.get_by_label("Ticket or reason").fill("Ticket 4711: EBICS keys do not verify")
        bob.get_by_label("Duration", exact=True).select_option(label="8 hours")
        bob.get_by_role("button", name="Send request").click()
        check(bob.get_by_role("status")).to_contain_text(
            f"Your request for tenant {TENANT} (Muster GmbH) is sent.")
        mine = bob.locator("#my-requests")
        check(mine).to_contain_text("waiting for an answer")
        check(mine).to_contain_text("Ticket 4711: EBICS keys do not verify")

        # anna's open help page shows it without a reload.
        requests_box = anna.locator("#access-requests")
        check(requests_box).to_contain_text("Bob Advisor")
        check(requests_box).to_contain_text("asks for 8 hours of temporary access.")
        check(requests_box).to_contain_text("Ticket 4711: EBICS keys do not verify")
        screenshot(anna, "request-pending-en", commit=True)

        # anna approves it for 4 hours: four eyes holds it for a second admin.
        requests_box.get_by_label("Duration").select_option(label="4 hours")
        requests_box.get_by_role("button", name="Approve (Bob Advisor)").click()
        check(anna.get_by_role("status")).to_contain_text(
            "Four eyes: it takes effect when another administrator of the tenant approves it "
            "too.")
        check(requests_box).to_contain_text("You have approved this request.")
        check(requests_box.get_by_role("button", name=re.compile("Approve"))).to_have_count(0)
        check(bob.locator("#my-tenants")).to_have_count(0)  # nothing granted yet

        # dora, the second admin (German), sees the first approval and completes it.
        dora = sign_in(dora_context, live.url, "dora", f"/tenants/{TENANT}/help")
        box = dora.locator("#access-requests")
        check(box).to_contain_text("1 von 2 Genehmigungen")
        check(box).to_contain_text("Genehmigt von Anna Admin")
        check(box).to_contain_text("für 4 Stunden")
        screenshot(dora, "request-approve-de", commit=True)
        box.get_by_role("button", name="Genehmigen (Bob Advisor)").click()
        check(dora.get_by_role("status")).to_contain_text("Bob Advisor hat jetzt temporären Zugriff")
        check(dora.locator("#access-requests")).to_contain_text("Keine offenen Zugriffsanfragen.")
        # anna's page follows without a reload.
        check(anna.locator("#access-requests")).to_contain_text("No open access requests.")
        check(anna.locator("#temporary-advisors")).to_contain_text("Bob Advisor")

        # bob's page notices the answer; after a reload he has the tenant and opens it in
        # the application without a code.
        check(bob.locator("#advisor-changed")).to_be_visible()
        bob.reload()
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row).to_contain_text("temporary")
        check(bob.locator("#my-requests")).to_contain_text("approved")
        check(bob.locator("#my-requests")).to_contain_text("by Anna Admin, Dora Admin")
        screenshot(bob, "request-approved-advisor-en", commit=True)
        row.get_by_role("button", name=re.compile("Open")).click()
        check(bob.locator("#status")).to_contain_text("temporary access")
        check(bob.locator("#scope")).to_contain_text("payments:read")
        assert live.handed_over[-1]["tenant"] == TENANT

        # The access log tells who approved.
        anna.goto(f"{live.url}/tenants/{TENANT}/log?category=requests")
        check(anna.locator("main")).to_contain_text(
            "approved for 4 hours by Anna Admin, Dora Admin")
        screenshot(anna, "request-access-log-en")
    finally:
        for context in contexts:
            context.close()
