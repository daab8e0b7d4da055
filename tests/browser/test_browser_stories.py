"""The web pages in a real browser (Debian Chromium via Playwright), one story per role, each
in its own browser context, against really served servers (see browser_live.py).

Nothing here sleeps: every wait is one of Playwright's auto-waiting ``expect`` assertions
(generous timeouts) or a condition polled until a deadline.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from browser_live import browser, live  # noqa: F401 (fixtures used by name)
from browser_live import TIMEOUT, expect, new_context, screenshot, sign_in
from conftest import RS_CLIENT_ID
from idp_bridge.devidp import DEMO_USERS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "10042"
CODE_RE = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}$")


def wait_until(condition, what: str, timeout: float = TIMEOUT / 1000):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_story_code_join_live_refresh_remove_and_permanent_advisor(browser, live):
    check = expect()
    anna_context, bob_context, sam_context, carol_context = (
        new_context(browser) for _ in range(4))
    try:
        # anna (tenant admin) sees the code on the help page.
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        code_box = anna.locator("#access-code")
        check(code_box).to_have_text(CODE_RE)
        first_code = code_box.inner_text()
        check(anna.locator("#tenant-number")).to_have_text(TENANT)
        check(anna.locator("#countdown")).to_have_text(re.compile(r"^\d+:\d\d(:\d\d)?$"))
        check(anna.locator("button[data-copy]")).to_be_visible()  # shown by the script
        check(anna.locator("#temporary-advisors")).to_contain_text("No advisor has temporary access")
        screenshot(anna, "help-page-en")

        # bob (advisor) signs in and redeems the code with a reason.
        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        bob.get_by_label("Tenant number").fill(TENANT)
        bob.get_by_label("Access code").fill(first_code.lower().replace("-", ""))
        bob.get_by_label("Reason or ticket").fill("Ticket 4711: onboarding")
        bob.get_by_role("button", name="Join tenant").click()
        check(bob.get_by_role("status")).to_contain_text(f"You now have access to tenant {TENANT}")
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row).to_contain_text("temporary")
        screenshot(bob, "advisor-page-en", commit=True)

        # anna's page shows bob without a reload, and the code has changed (single use).
        temporary = anna.locator("#temporary-advisors")
        check(temporary).to_contain_text("Bob Advisor")
        check(temporary).to_contain_text("Ticket 4711: onboarding")
        check(code_box).not_to_have_text(first_code)
        check(code_box).to_have_text(CODE_RE)
        screenshot(anna, "help-page-with-advisor-en", commit=True)

        # bob opens the tenant: the application (the example resource server's page) receives
        # tenant-scoped tokens and shows what they may read, with the data.
        row.get_by_role("button", name=re.compile("Open")).click()
        check(bob.locator("#status")).to_contain_text("temporary access")
        check(bob.locator("#scope")).to_contain_text("payments:read")
        check(bob.locator("#areas")).to_contain_text("ISO 20022 and SEPA payments")
        check(bob.locator("section#payments tbody tr")).to_have_count(3)
        screenshot(bob, "application-opened")
        token = live.handed_over[-1]["access_token"]
        assert live.handed_over[-1]["tenant"] == TENANT
        # The application's way back (going back in history would land on the hand-over
        # page, a POST answer that is never cached).
        bob.get_by_role("link", name=re.compile("Back to my tenants")).click()
        check(bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_be_visible()

        # anna removes bob after confirming.
        anna.get_by_role("link", name="Remove from tenant (Bob Advisor)").click()
        check(anna.get_by_role("heading", level=1)).to_have_text(
            f"Remove Bob Advisor from tenant {TENANT}?")
        screenshot(anna, "remove-confirmation-en", commit=True)
        anna.get_by_role("button", name="Remove from tenant").click()
        check(anna.get_by_role("status")).to_contain_text(
            f"Bob Advisor was removed from tenant {TENANT}")
        check(anna.locator("#temporary-advisors")).not_to_contain_text("Bob")

        # bob's tenant list no longer has it, and his token is rejected everywhere.
        bob.goto(f"{live.url}/advisor")
        check(bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_have_count(0)
        check(bob.get_by_text("You have no access to any tenant at the moment.")).to_be_visible()
        introspection = requests.post(f"{live.url}/introspect", data={"token": token},
                                      auth=(RS_CLIENT_ID, live.app.config["TEST_RS_SECRET"]),
                                      timeout=10)
        assert introspection.json() == {"active": False}
        wait_until(lambda: requests.get(
            f"{live.rs_url}/tenants/{TENANT}/payments", timeout=10,
            headers={"Authorization": f"Bearer {token}"}).status_code == 401,
            "the resource server rejects the removed advisor's token")

        # sam (support admin) assigns a permanent advisor; anna sees it in the lower part.
        # carol has signed in here once: without a directory of the identity provider, the
        # bridge knows the people who signed in. sam finds her by typing "car".
        sign_in(carol_context, live.url, "carol", "/advisor")
        sam = sign_in(sam_context, live.url, "sam", "/support")
        check(sam.locator("#directory-source")).to_contain_text("signed in to this service before")
        sam.get_by_label("Find the advisor").press_sequentially("car", delay=50)
        choices = sam.locator("#advisor-choices")
        check(choices.get_by_role("radio")).to_have_count(1)  # as typed, no page load
        check(choices).to_contain_text("Carol Advisor · carol@advisors.example")
        check(choices.get_by_role("radio", name=re.compile("Carol Advisor"))).to_be_checked()
        check(choices).not_to_contain_text("Bob")  # bob matches no "car"
        assert DEMO_USERS["carol"]["sub"] not in sam.locator("main").inner_text()
        sam.get_by_label("Tenant number", exact=True).first.fill(TENANT)
        screenshot(sam, "support-assign-search-en", commit=True)
        sam.get_by_role("button", name="Assign").click()
        check(sam.get_by_role("status")).to_contain_text(
            f"Carol Advisor is now a permanent advisor of tenant {TENANT}")
        check(sam.locator("#assignments")).to_contain_text("Carol Advisor")
        screenshot(sam, "support-page-en", commit=True)
        permanent = anna.locator("#permanent-advisors")
        check(permanent).to_contain_text("Carol Advisor")
        check(permanent.get_by_role("link", name="Remove from tenant (Carol Advisor)")).to_be_visible()
        screenshot(anna, "help-page-permanent-en")

        # The user list marks advisors; the access log tells the story and downloads as CSV.
        anna.get_by_role("link", name="User list").click()
        check(anna.locator("main")).to_contain_text("Carol Advisor")
        check(anna.locator("main")).to_contain_text("Tenant administrator")
        screenshot(anna, "user-list-en", commit=True)
        anna.get_by_role("link", name="Access log").click()
        log = anna.locator("main table")
        check(log).to_contain_text("Bob Advisor joined with the access code (temporary access). "
                                   "Reason: Ticket 4711: onboarding")
        check(log).to_contain_text("Bob Advisor was removed from the tenant.")
        check(log).to_contain_text("Carol Advisor was assigned as a permanent advisor.")
        check(log).to_contain_text("Sam Support (support admin)")
        assert DEMO_USERS["sam"]["sub"][:8] not in log.inner_text()
        screenshot(anna, "access-log-events-en")  # the README's: the access story below
        with anna.expect_download() as download_info:
            anna.get_by_role("link", name="Download as CSV").click()
        download = download_info.value
        assert download.suggested_filename.startswith(f"access-log-{TENANT}-")
        text = open(download.path(), encoding="utf-8-sig").read()
        assert "Bob Advisor was removed from the tenant." in text
    finally:
        for context in (anna_context, bob_context, sam_context, carol_context):
            context.close()


#: A group's times: "9:58 AM", "09:58" or a span of two (the page's language formats them).
TIME_SPAN = r"\d{1,2}:\d\d(\s[AP]M)?(–\d{1,2}:\d\d(\s[AP]M)?)?$"
#: What the access-transparency story reads on the pages, per language.
TRANSPARENCY_TEXTS = {
    "en": {
        "locale": "en-GB", "tenant_number": "Tenant number", "access_code": "Access code",
        "reason": "Reason or ticket", "join": "Join tenant", "open": "Open",
        "nobody_active": "No advisor has used their access in the last 5 minutes.",
        "active": "active now", "areas": "Areas: EBICS, ISO 20022 and SEPA payments",
        "requests": "4 requests", "ended": "access ended",
        "ebics_group": r"^Bob Advisor read EBICS — 3 requests, .+, " + TIME_SPAN,
        "payments_group": r"^Bob Advisor read ISO 20022 and SEPA payments — 1 request, ",
        "show_requests": "Show the requests", "access_log": "Access log",
        "requests_heading": "Requests", "drill_note": "Advisor: Bob Advisor.",
        "end_now": "End access now (Bob Advisor)", "remove_link": "Remove from tenant (Bob Advisor)",
        "remove": "Remove from tenant", "removed": f"Bob Advisor was removed from tenant {TENANT}",
        "receipts_link": "Which resource servers confirmed it",
        "removed_event": "Bob Advisor was removed from the tenant.",
        "confirmed": "Confirmed by 1 of 1 resource server within",
        "row_confirmed": r"Confirmed .+, after \d", "state": "Ended ",
    },
    "de": {
        "locale": "de-DE", "tenant_number": "Mandantennummer", "access_code": "Zugangscode",
        "reason": "Grund oder Ticket", "join": "Mandant beitreten", "open": "Öffnen",
        "nobody_active": "Kein Kundenberater hat seinen Zugriff in den letzten 5 Minuten genutzt.",
        "active": "gerade aktiv", "areas": "Bereiche: EBICS, ISO 20022- und SEPA-Zahlungen",
        "requests": "4 Anfragen", "ended": "Zugriff beendet",
        "ebics_group": r"^Bob Advisor hat EBICS gelesen — 3 Anfragen, .+, " + TIME_SPAN,
        "payments_group": r"^Bob Advisor hat ISO 20022- und SEPA-Zahlungen gelesen — 1 Anfrage, ",
        "show_requests": "Anfragen anzeigen", "access_log": "Zugriffsprotokoll",
        "requests_heading": "Anfragen", "drill_note": "Kundenberater: Bob Advisor.",
        "end_now": "Zugriff jetzt beenden (Bob Advisor)",
        "remove_link": "Aus Mandant entfernen (Bob Advisor)",
        "remove": "Aus Mandant entfernen",
        "removed": f"Bob Advisor wurde aus Mandant {TENANT} entfernt",
        "receipts_link": "Welche Ressourcenserver es bestätigt haben",
        "removed_event": "Bob Advisor wurde aus dem Mandanten entfernt.",
        "confirmed": "Bestätigt von 1 von 1 Ressourcenserver innerhalb von",
        "row_confirmed": r"Bestätigt um .+, nach \d", "state": "Beendet am ",
    },
}


def reload_until(page, condition, what: str):
    """Reload a page that does not refresh itself until ``condition()`` holds."""
    def reloaded():
        page.reload()
        return condition()

    wait_until(reloaded, what)


@pytest.mark.parametrize("lang", ["en", "de"])
def test_story_anna_sees_what_bob_read_ends_it_and_sees_who_confirmed(browser, live, lang):
    """Access transparency (issue 14): bob joins and the application reads EBICS (three
    times) and payments with his token at the example resource server, which records the
    requests and ships them to the bridge; anna's help page shows him *active now* without a
    reload; her access log groups what he read, with the single requests behind a group;
    she ends his access (in English with *end access now* on the help page, in German by
    removing him from the list) and the membership's page shows that the example resource
    server confirmed the revocation."""
    check, t = expect(), TRANSPARENCY_TEXTS[lang]
    anna_context, bob_context = (new_context(browser, locale=t["locale"]) for _ in range(2))
    try:
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        active = anna.locator("#active-now")
        check(active).to_contain_text(t["nobody_active"])
        code = anna.locator("#access-code").inner_text()

        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        bob.get_by_label(t["tenant_number"]).fill(TENANT)
        bob.get_by_label(t["access_code"]).fill(code)
        bob.get_by_label(t["reason"]).fill("Ticket 4711: EBICS-Zugang prüfen")
        bob.get_by_role("button", name=t["join"]).click()
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        row.get_by_role("button", name=re.compile(t["open"])).click()
        check(bob.locator("#areas")).to_contain_text("EBICS")
        token = live.handed_over[-1]["access_token"]
        # The application reads with the tokens it received: EBICS three times, payments once.
        for area in ("ebics", "ebics", "payments", "ebics"):
            answer = requests.get(f"{live.rs_url}/tenants/{TENANT}/{area}", timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text

        # anna's help page shows bob active now, without a reload (the records are shipped
        # in batches, the page polls).
        entry = active.locator("li", has_text="Bob Advisor")
        check(entry).to_contain_text(t["active"])
        check(entry).to_contain_text(t["areas"])
        check(entry).to_contain_text(t["requests"])
        check(entry.get_by_role("link", name=t["end_now"])).to_be_visible()
        assert DEMO_USERS["bob"]["sub"] not in active.inner_text()
        anna.set_viewport_size({"width": 1280, "height": 900})  # the page's upper part
        screenshot(anna, f"help-page-active-now-{lang}", commit=lang == "en", full_page=False)
        anna.set_viewport_size({"width": 1280, "height": 720})

        # The access log: what bob read, grouped, with the single requests behind a group.
        anna.get_by_role("link", name=t["access_log"], exact=True).click()
        groups = anna.locator("#read-groups tbody tr")
        check(groups).to_have_count(2)
        ebics = anna.locator("#read-groups tr[data-area='ebics']")
        check(ebics.locator("td").first).to_have_text(re.compile(t["ebics_group"]))
        check(ebics).to_contain_text("200 ×3")
        check(anna.locator("#read-groups tr[data-area='payments'] td").first).to_have_text(
            re.compile(t["payments_group"]))
        log_text = anna.locator("main").inner_text()
        assert DEMO_USERS["bob"]["sub"] not in log_text and token[:20] not in log_text
        if lang == "en":
            screenshot(anna, "access-log-en", commit=True)
        with anna.expect_download() as download_info:
            anna.locator("#csv-requests-download").click()
        rows = open(download_info.value.path(), encoding="utf-8-sig").read().splitlines()
        assert len(rows) == 1 + 4, rows  # the header and bob's four requests
        assert sum("/tenants/<tenant>/ebics" in line for line in rows) == 3, rows

        ebics.get_by_role("link", name=re.compile(t["show_requests"])).click()
        check(anna.get_by_role("heading", level=1)).to_contain_text(t["requests_heading"])
        check(anna.locator("main")).to_contain_text(t["drill_note"])
        single = anna.locator("#requests tbody tr")
        check(single).to_have_count(3)
        for i in range(3):
            check(single.nth(i)).to_contain_text("GET /tenants/<tenant>/ebics")
            check(single.nth(i)).to_contain_text("200")
            # The resource server by its client's name, as on the receipts.
            check(single.nth(i).locator("td").last).to_have_text("Example resource server")
        check(anna.locator("#requests")).not_to_contain_text(RS_CLIENT_ID)
        screenshot(anna, f"access-log-requests-{lang}", commit=lang == "en")

        # anna ends bob's access; the confirmation's link leads to the membership's page.
        anna.goto(f"{live.url}/tenants/{TENANT}/help")
        if lang == "en":
            active.get_by_role("link", name=t["end_now"]).click()
        else:
            anna.locator("#temporary-advisors").get_by_role("link", name=t["remove_link"]).click()
        anna.get_by_role("button", name=t["remove"]).click()
        status = anna.get_by_role("status").filter(has_text=t["removed"])
        check(status).to_be_visible()
        # The help page keeps him in "active now", ended, without the button.
        check(active.locator("li", has_text="Bob Advisor")).to_contain_text(t["ended"])
        check(active.get_by_role("link", name=t["end_now"])).to_have_count(0)
        wait_until(lambda: requests.get(
            f"{live.rs_url}/tenants/{TENANT}/ebics", timeout=10,
            headers={"Authorization": f"Bearer {token}"}).status_code == 401,
            "the resource server rejects bob's token")
        if lang == "en":
            status.get_by_role("link", name=t["receipts_link"]).click()
        else:  # the same page from the access log's event
            anna.get_by_role("link", name=t["access_log"], exact=True).click()
            check(anna.locator("main")).to_contain_text(t["removed_event"])
            screenshot(anna, "access-log-de", commit=True)
            # The date fields take the page's language: typed as a German reads a date.
            since = anna.get_by_label("Von", exact=True)
            assert since.evaluate("e => e.closest('[lang]').lang") == "de"
            since.focus()
            anna.keyboard.type("03122026")
            check(since).to_have_value("2026-12-03")
            anna.get_by_role("link", name=t["removed_event"]).click()
        check(anna.locator("#membership-state")).to_contain_text(t["state"])
        receipt = anna.locator("article.receipts")
        reload_until(anna, lambda: receipt.count() == 1 and
                     receipt.get_attribute("data-confirmed") == "1",
                     "the example resource server's confirmation on the membership's page")
        check(receipt).to_have_attribute("data-due", "1")
        check(receipt.locator(".summary")).to_contain_text(t["confirmed"])
        confirmed_row = receipt.locator("tbody tr[data-confirmed='yes']")
        check(confirmed_row).to_contain_text("Example resource server")
        check(confirmed_row).to_contain_text(re.compile(t["row_confirmed"]))
        page_text = anna.locator("main").inner_text()
        # People and servers by name: no subject, and the only stream of its client unnamed.
        assert DEMO_USERS["bob"]["sub"] not in page_text
        assert confirmed_row.get_attribute("data-stream")[:8] not in page_text
        screenshot(anna, f"membership-receipts-{lang}", commit=lang == "en")
    finally:
        anna_context.close()
        bob_context.close()


def test_story_guest_user_with_a_user_group(browser, live):
    """anna makes a user group and invites bob as a guest; bob accepts on his page; anna's
    help page shows him as a guest without reload; the application sees the group's rights."""
    check = expect()
    anna_context, bob_context = new_context(browser), new_context(browser)
    try:
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        anna.get_by_role("link", name="User groups", exact=True).click()
        check(anna.get_by_role("heading", level=1)).to_contain_text("User groups and guests")
        anna.get_by_role("link", name="Create user group").click()
        anna.get_by_label("Name of the user group").fill("Berater Zahlungsverkehr")
        anna.get_by_label("ISO 20022 and SEPA payments: Read", exact=True).check()
        anna.get_by_label("Bank accounts: Change", exact=True).check()
        screenshot(anna, "user-group-form-en")
        anna.get_by_role("button", name="Create user group").click()
        check(anna.get_by_role("status")).to_contain_text(
            "User group Berater Zahlungsverkehr was created.")
        check(anna.locator("#groups")).to_contain_text("Bank accounts: read and change")

        # bob signed in here before; anna finds him by name (here without a script: the
        # search button) and invites him.
        bob_subject = DEMO_USERS["bob"]["sub"]
        earlier = new_context(browser)
        sign_in(earlier, live.url, "bob", "/advisor")
        earlier.close()
        anna.get_by_label("Find the advisor").fill("Bob")
        anna.locator("#invitations").get_by_role("button", name="Search").click()
        anna.locator("#invite-choices").get_by_role(
            "radio", name=re.compile("Bob Advisor")).check()
        anna.get_by_label("User group", exact=True).select_option(label="Berater Zahlungsverkehr")
        anna.get_by_role("button", name="Invite", exact=True).click()
        check(anna.get_by_role("status")).to_contain_text("Bob Advisor is invited as a guest user")
        check(anna.locator("#open-invitations")).to_contain_text("Bob Advisor")
        assert bob_subject not in anna.locator("main").inner_text()
        screenshot(anna, "user-groups-en")
        anna.get_by_role("link", name="Help page", exact=True).click()
        check(anna.locator("#guest-users")).to_contain_text("No advisor is a guest user")

        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        invitation = bob.locator("#my-invitations tbody tr")
        check(invitation).to_contain_text("Berater Zahlungsverkehr")
        invitation.get_by_role("button", name=re.compile("Accept")).click()
        check(bob.get_by_role("status")).to_contain_text(
            f"You are now a guest user of tenant {TENANT}")
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row).to_contain_text("guest")
        check(row).to_contain_text("User group: Berater Zahlungsverkehr")
        check(bob.locator("#my-invitations")).to_have_count(0)

        # anna's help page lists bob as a guest with his group, without a reload.
        guests = anna.locator("#guest-users")
        check(guests).to_contain_text("Bob Advisor")
        check(guests).to_contain_text("Berater Zahlungsverkehr")
        check(guests.get_by_role("link", name="Remove from tenant (Bob Advisor)")).to_be_visible()

        # The application sees exactly the group's rights.
        row.get_by_role("button", name=re.compile("Open")).click()
        check(bob.locator("#status")).to_contain_text("guest access")
        areas = bob.locator("#areas")
        check(areas).to_contain_text("ISO 20022 and SEPA payments")
        check(areas).to_contain_text("Bank accounts")
        check(areas).not_to_contain_text("EBICS")
        assert live.handed_over[-1]["scope"].split() == [
            "bank-accounts:read", "bank-accounts:write", "payments:read"]
    finally:
        anna_context.close()
        bob_context.close()


def test_german_and_english_rendering_and_the_switch(browser, live):
    check = expect()
    context = new_context(browser, locale="de-DE")
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        check(anna.locator("html")).to_have_attribute("lang", "de")
        check(anna.get_by_role("heading", level=1)).to_contain_text("Hilfeseite")
        check(anna.locator("main")).to_contain_text("Zugangscode für Kundenberater")
        check(anna.locator("main")).to_contain_text("Mandantennummer")
        check(anna.locator("main")).to_contain_text("Permanente Kundenberater")
        check(anna.locator("main")).to_contain_text("Funktionsbereich")
        check(anna.locator("main")).to_contain_text("ISO 20022- und SEPA-Zahlungen")
        check(anna.locator("main")).to_contain_text("Voller Zugriff")
        check(anna.get_by_role("button", name="Code kopieren")).to_be_visible()
        screenshot(anna, "help-page-de", commit=True)

        anna.get_by_role("button", name="English").click()
        check(anna.locator("html")).to_have_attribute("lang", "en")
        check(anna.get_by_role("heading", level=1)).to_contain_text("Help page")
        check(anna.locator("main")).to_contain_text("ISO 20022 and SEPA payments")
        anna.get_by_role("button", name="Deutsch").click()
        check(anna.get_by_role("heading", level=1)).to_contain_text("Hilfeseite")

        # An error page in German: a tenant that is not anna's.
        anna.goto(f"{live.url}/tenants/20077/help")
        check(anna.get_by_role("heading", level=1)).to_contain_text("Zugriff verweigert")
        check(anna.get_by_role("alert")).to_contain_text("Mandant 20077")
        screenshot(anna, "error-page-de")
    finally:
        context.close()


def test_german_advisor_joins_with_the_keyboard_only(browser, live):
    check = expect()
    admin_context, context = new_context(browser, locale="de-DE"), new_context(browser, locale="de-DE")
    try:
        anna = sign_in(admin_context, live.url, "anna", f"/tenants/{TENANT}/help")
        code = anna.locator("#access-code").inner_text()
        bob = sign_in(context, live.url, "bob", "/advisor")
        bob.get_by_label("Mandantennummer").focus()
        bob.keyboard.type(TENANT)
        bob.keyboard.press("Tab")
        bob.keyboard.type(code)
        bob.keyboard.press("Tab")
        check(bob.get_by_label("Grund oder Ticket")).to_be_focused()
        bob.keyboard.type("Rückruf wegen EBICS")
        bob.keyboard.press("Enter")
        check(bob.get_by_role("status")).to_contain_text(f"Sie haben jetzt Zugriff auf Mandant {TENANT}")
        check(bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_contain_text("temporär")
        screenshot(bob, "advisor-page-de", commit=True)
        check(anna.locator("#temporary-advisors")).to_contain_text("Rückruf wegen EBICS")
        check(anna.get_by_role("link", name="Aus Mandant entfernen (Bob Advisor)")).to_be_visible()

        # A wrong code: a clear message in German, nothing joined.
        bob.get_by_label("Mandantennummer").fill("20077")
        bob.get_by_label("Zugangscode").fill("AAAA-AAAA")
        bob.get_by_role("button", name="Mandant beitreten").click()
        check(bob.get_by_role("alert")).to_contain_text("Zugangscode ist falsch")
        check(bob.locator("#my-tenants tr[data-tenant='20077']")).to_have_count(0)
    finally:
        admin_context.close()
        context.close()


def test_phone_width_layout(browser, live):
    check = expect()
    context = new_context(browser, locale="de-DE", viewport={"width": 390, "height": 844},
                          is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        check(anna.locator("#access-code")).to_have_text(CODE_RE)
        assert anna.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        screenshot(anna, "help-page-phone-de", commit=True, full_page=False)
        screenshot(anna, "help-page-phone-de-full")
    finally:
        context.close()


def test_form_posts_without_csrf_token_are_rejected_and_change_nothing(browser, live):
    context = new_context(browser)
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        before = anna.locator("#max-age").input_value()
        response = anna.request.post(f"{live.url}/tenants/{TENANT}/settings/max-age",
                                     form={"temporary_max_age_days": "3"})
        assert response.status == 400
        assert "The form has expired" in response.text()
        anna.reload()
        assert anna.locator("#max-age").input_value() == before
    finally:
        context.close()


def test_code_rotates_on_time_and_on_redemption_not_on_others_guesses_without_reload(browser, live, upstream):
    from datetime import timedelta

    from conftest import ACCESS_TOKEN_TYPE, CLIENT_ID, TOKEN_EXCHANGE, wrong_code
    from idp_bridge.storage.db import utcnow
    from idp_bridge.storage.models import AccessCodeState

    check = expect()
    context = new_context(browser)
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        code_box = anna.locator("#access-code")
        check(code_box).to_have_text(CODE_RE)
        # Let the current code's 60 minutes end a few seconds from now.
        ttl = live.services.codes.ttl
        with live.services.db.transaction() as session:
            state = session.get(AccessCodeState, TENANT)
            state.issued_at = utcnow() - ttl + timedelta(seconds=4)
        anna.reload()
        before_expiry = code_box.inner_text()
        check(anna.locator("#countdown")).to_have_text(re.compile(r"^0:0\d$"))
        check(code_box).not_to_have_text(before_expiry)  # the countdown ran out: a new code
        check(code_box).to_have_text(CODE_RE)
        check(anna.locator("#countdown")).to_have_text(re.compile(r"^(59|60|1):\d\d"))

        # Others' wrong guesses never rotate it (nor lock the tenant): the advisor holding the
        # code still redeems it after them, and the redemption rotates it.
        after_expiry = code_box.inner_text()
        auth = (CLIENT_ID, live.app.config["TEST_CLIENT_SECRET"])
        carol = upstream.issue_tokens("carol")["access_token"]
        for _ in range(live.services.settings.code_max_failures):
            response = requests.post(f"{live.url}/token", timeout=10, auth=auth, data={
                "grant_type": TOKEN_EXCHANGE, "subject_token": carol,
                "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT,
                "access_code": wrong_code(after_expiry)})
            assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
        response = requests.post(f"{live.url}/token", timeout=10, auth=auth, data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": upstream.issue_tokens("bob")["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE, "tenant": TENANT,
            "access_code": after_expiry})
        assert response.status_code == 200, response.text
        check(code_box).not_to_have_text(after_expiry)
        screenshot(anna, "help-page-new-code-en")
    finally:
        context.close()
