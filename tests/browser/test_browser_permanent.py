"""Permanent advisors with the tenant's consent in a real browser (issue 15 items 2, 3, 5, 6):
anna makes her tenant accept its permanent advisors itself, under four eyes; sam (support)
proposes carol with a reason; the proposal appears on anna's open help page without a
reload; anna's acceptance is held until dora (a second admin, German) accepts too; carol has
the tenant as a permanent advisor; months later the re-confirmation is due, anna re-confirms
it; the access log names both acceptors, and the membership's evidence pack tells the whole
story on a printable page. Served for real (tests/browser/browser_live.py); every wait is an
auto-waiting ``expect`` or a deadline."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from browser_live import browser, live  # noqa: F401 (fixtures used by name)
from browser_live import expect, new_context, screenshot, sign_in
from idp_bridge.storage.models import Membership

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "10042"
REASON = "Onboarding 2027: standing EBICS support"


def test_story_permanent_advisor_proposed_accepted_by_two_and_re_confirmed(browser, live):
    check = expect()
    contexts = [new_context(browser), new_context(browser), new_context(browser),
                new_context(browser, "de-DE")]
    anna_context, sam_context, carol_context, dora_context = contexts
    try:
        # anna: permanent advisors only with the tenant's acceptance, and four eyes.
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        anna.get_by_label("Support proposes them, an administrator of the tenant accepts").check()
        anna.get_by_label("Four eyes").check()
        anna.get_by_role("button", name="Save ways in").click()
        check(anna.get_by_role("status")).to_contain_text("four eyes on.")
        check(anna.locator("main")).to_contain_text(
            "This tenant accepts its permanent advisors itself")

        # sam proposes carol (she has signed in here once, so the bridge knows her).
        carol = sign_in(carol_context, live.url, "carol", "/advisor")
        sam = sign_in(sam_context, live.url, "sam", "/support")
        sam.get_by_label("Find the advisor").press_sequentially("car", delay=50)
        choices = sam.locator("#advisor-choices")
        check(choices.get_by_role("radio", name=re.compile("Carol Advisor"))).to_be_checked()
        sam.get_by_label("Tenant number", exact=True).first.fill(TENANT)
        sam.get_by_label("Reason for the tenant").fill(REASON)
        sam.get_by_role("button", name="Propose to the tenant").click()
        check(sam.get_by_role("status")).to_contain_text(
            f"Carol Advisor is proposed to tenant {TENANT}; an administrator of the tenant "
            "decides.")
        check(sam.locator("#proposals")).to_contain_text("expires unanswered")

        # anna's open help page shows the proposal without a reload; nothing is live yet.
        permanent = anna.locator("#permanent-advisors")
        check(permanent).to_contain_text("Carol Advisor")
        check(permanent).to_contain_text("is proposed as a permanent advisor by Sam Support.")
        check(permanent).to_contain_text(REASON)
        check(permanent).to_contain_text("Answer by")
        screenshot(anna, "permanent-proposal-en", commit=True)
        permanent.get_by_role("button", name="Accept (Carol Advisor)").click()
        check(anna.get_by_role("status")).to_contain_text(
            "Your acceptance of Carol Advisor is recorded. Four eyes: it takes effect when "
            "another administrator of the tenant accepts too.")
        check(anna.locator("#permanent-advisors")).to_contain_text("You have accepted.")
        check(anna.locator("#permanent-advisors").get_by_role(
            "button", name=re.compile("Accept"))).to_have_count(0)
        carol.reload()
        check(carol.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_have_count(0)

        # dora (German) sees the first acceptance and completes it.
        dora = sign_in(dora_context, live.url, "dora", f"/tenants/{TENANT}/help")
        box = dora.locator("#permanent-advisors")
        check(box).to_contain_text("1 von 2 Genehmigungen")
        check(box).to_contain_text("Anna Admin")
        screenshot(dora, "permanent-accept-de", commit=True)
        box.get_by_role("button", name="Annehmen (Carol Advisor)").click()
        check(dora.get_by_role("status")).to_contain_text("Carol Advisor")
        confirmed = dora.locator("#permanent-advisors tr", has_text="Carol Advisor")
        check(confirmed.locator(".confirmed-until")).not_to_have_text("–")

        # carol has the tenant now, as a permanent advisor.
        carol.reload()
        row = carol.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row).to_contain_text("permanent")

        # Months later the re-confirmation is due (the clock moved: the confirmation is
        # backdated): anna's page says so and she re-confirms.
        settings = live.services.settings
        with live.services.db.transaction() as session:
            membership = session.query(Membership).filter_by(
                tenant_id=TENANT, ended_at=None, kind="permanent").one()
            membership_id = membership.id
            membership.confirmed_at -= timedelta(days=settings.permanent_reconfirm_days + 1)
        anna.reload()
        carol_row = anna.locator("#permanent-advisors tr", has_text="Carol Advisor")
        check(carol_row).to_contain_text("Overdue: the access ends on")
        screenshot(anna, "permanent-reconfirm-due-en", commit=True)
        carol_row.get_by_role("button", name="Re-confirm (Carol Advisor)").click()
        check(anna.get_by_role("status")).to_contain_text("Carol Advisor is re-confirmed until")
        check(anna.locator("#permanent-advisors tr", has_text="Carol Advisor")).not_to_contain_text(
            "Overdue")

        # The access log names both acceptors; the evidence pack tells the whole story.
        anna.goto(f"{live.url}/tenants/{TENANT}/log?category=permanent")
        log = anna.locator("main")
        check(log).to_contain_text("Support proposed Carol Advisor as a permanent advisor.")
        check(log).to_contain_text(
            "Carol Advisor was accepted as a permanent advisor by Anna Admin, Dora Admin.")
        check(log).to_contain_text("Carol Advisor was re-confirmed as a permanent advisor.")
        anna.goto(f"{live.url}/tenants/{TENANT}/memberships/{membership_id}")
        anna.locator("#evidence-page").click()
        pack = anna.locator("main")
        check(pack).to_contain_text("Carol Advisor")
        check(pack).to_contain_text(REASON)
        check(pack).to_contain_text("Anna Admin")
        check(pack).to_contain_text("Dora Admin")
        screenshot(anna, "evidence-pack-en", commit=True)
    finally:
        for context in contexts:
            context.close()
