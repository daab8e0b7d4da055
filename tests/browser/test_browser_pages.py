"""The pages where they still surprised (issue 12, part B), in a real browser (Debian Chromium
via Playwright) against really served servers (browser_live.py):

5. a live rotation updates the code's "(until HH:MM)"; removing an advisor updates the
   advisor page without a reload, and a stale "Open" leads back to it with a message;
7. the rights table is collapsed; confirmations that can only fail offer no button;
8. guests show how their access ends; the rights heading in both languages;
9. the application's Open page looks like the product and leads back.

Nothing here sleeps: every wait is one of Playwright's auto-waiting ``expect`` assertions.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from browser_live import browser, live  # noqa: F401 (fixtures used by name)
from browser_live import expect, new_context, screenshot, sign_in
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import AccessCodeState

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "10042"
CODE_RE = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}$")
TIME_RE = re.compile(r"^\d{1,2}:\d\d(\s?[AP]M)?$")
#: The product's brand colour (app.css --brand), as the browser computes it.
BRAND = "rgb(11, 79, 138)"


def join(live, page, user="bob"):
    """``user`` redeems the tenant's current code on its page (signed in as ``page``)."""
    with live.services.db.read() as session:
        code = live.services.codes.current(session, TENANT, utcnow()).display
    page.get_by_label("Tenant number").fill(TENANT)
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Join tenant").click()
    expect()(page.get_by_role("status")).to_contain_text(f"You now have access to tenant {TENANT}")


def make_guest(live, user="bob", group_name="Berater Zahlungsverkehr") -> tuple[str, str]:
    s = live.services
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, TENANT)
        group = s.guests.create_group(session, TENANT, group_name, ["payments:read"],
                                      by="anna", now=utcnow())
        member = s.memberships.create(
            session, tenant, subject=DEMO_USERS[user]["sub"], name=user, kind="guest",
            created_by=DEMO_USERS[user]["sub"], actor_role="advisor", now=utcnow(),
            group_id=group.id)
        return group.id, member.id


def membership_id(live, user="bob") -> str:
    s = live.services
    with s.db.read() as session:
        return s.memberships.active(session, TENANT, DEMO_USERS[user]["sub"]).id


def page_height(page) -> int:
    return page.evaluate("document.documentElement.scrollHeight")


def test_a_live_rotation_updates_the_until_time(browser, live):
    check = expect()
    context = new_context(browser)
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        code_box, until = anna.locator("#access-code"), anna.locator("#code-until")
        check(code_box).to_have_text(CODE_RE)
        ttl = live.services.codes.ttl
        with live.services.db.transaction() as session:  # the code ends 4 s from now
            session.get(AccessCodeState, TENANT).issued_at = utcnow() - ttl + timedelta(seconds=4)
        anna.reload()
        before_code, before_until = code_box.inner_text(), until.inner_text()
        assert TIME_RE.match(before_until), before_until
        check(code_box).not_to_have_text(before_code)  # rotated without a reload ...
        check(until).not_to_have_text(before_until)    # ... and so did its until time
        with live.services.db.read() as session:
            current = live.services.codes.current(session, TENANT, utcnow())
        status = anna.request.get(f"{live.url}/tenants/{TENANT}/status.json").json()
        assert status["code"] == current.display == code_box.inner_text()
        check(until).to_have_text(status["expires_at_text"])
        check(anna.locator("#countdown")).to_have_text(re.compile(r"^(59|60|1):\d\d"))
        screenshot(anna, "help-page-rotated-en")
    finally:
        context.close()


def test_removal_updates_the_advisor_page_and_a_stale_open_leads_back(browser, live):
    check = expect()
    anna_context, bob_context = new_context(browser), new_context(browser)
    no_script = new_context(browser, java_script_enabled=False)
    try:
        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        join(live, bob)
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row.get_by_role("button", name=re.compile("Open"))).to_be_visible()
        # The same page without JavaScript, left open: its button goes stale.
        stale = sign_in(no_script, live.url, "bob", "/advisor")
        stale_open = stale.locator(f"#my-tenants tr[data-tenant='{TENANT}']").get_by_role(
            "button", name=re.compile("Open"))
        check(stale_open).to_be_visible()

        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        anna.get_by_role("link", name=re.compile(r"Remove from tenant \(")).first.click()
        anna.get_by_role("button", name="Remove from tenant").click()
        check(anna.get_by_role("status")).to_contain_text("was removed from tenant")

        # bob's page, not reloaded: the tenant is marked ended, Open and Leave are gone.
        check(row).to_have_class(re.compile(r"\bended\b"))
        check(row.locator("td.actions")).to_have_text("Access ended")
        check(row.get_by_role("button")).to_have_count(0)
        check(row.get_by_role("link", name=re.compile("Leave"))).to_have_count(0)
        check(bob.locator("#live-note")).to_have_text(f"Your access to tenant {TENANT} has ended.")
        screenshot(bob, "advisor-page-access-ended-en", commit=True)

        # The stale button of the page without script: back to the page, with the reason.
        handed_over = len(live.handed_over)
        stale_open.click()
        stale.wait_for_url(f"{live.url}/advisor")
        check(stale.get_by_role("alert")).to_contain_text(
            f"Your access to tenant {TENANT} has ended. If you need access again, please ask "
            "the tenant.")
        check(stale.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_have_count(0)
        assert len(live.handed_over) == handed_over  # nothing reached the application
        screenshot(stale, "advisor-page-stale-open-en")

        # A new access appears as a note with a reload link, not silently.
        stale.goto(f"{live.url}/advisor")
        join(live, stale)
        check(bob.locator("#advisor-changed")).to_be_visible()
        bob.locator("#advisor-changed").get_by_role("link", name="Reload the page").click()
        check(bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_contain_text("temporary")
    finally:
        for context in (anna_context, bob_context, no_script):
            context.close()


def test_rights_collapsed_and_confirmations_that_can_only_fail(browser, live):
    check = expect()
    context = new_context(browser)
    phone = new_context(browser, locale="de-DE", viewport={"width": 390, "height": 844},
                        is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        rights = anna.locator("details#rights")
        check(rights).not_to_have_attribute("open", "")
        check(anna.locator("table.rights").first).to_be_hidden()
        check(rights.locator("summary")).to_contain_text(
            "Read access to all 15 functional areas, also changing in: Evaluation.")
        collapsed = page_height(anna)
        screenshot(anna, "help-page-rights-collapsed-en")
        anna.get_by_role("heading", name="Advisor rights (fixed)").click()
        check(anna.locator("table.rights").first).to_be_visible()
        check(rights).to_contain_text("Full access (read and change)")
        expanded = page_height(anna)
        assert collapsed < expanded - 1000, (collapsed, expanded)
        print(f"help page height: collapsed {collapsed} px, expanded {expanded} px")

        mobile = sign_in(phone, live.url, "anna", f"/tenants/{TENANT}/help")
        check(mobile.locator("details#rights summary")).to_contain_text(
            "Rechte des Kundenberaters (fest vorgegeben)")
        print(f"help page height on a phone: {page_height(mobile)} px")
        screenshot(mobile, "help-page-phone-rights-collapsed-de")

        # A group that guests still have: no delete button, the reason and the way back.
        group_id, member = make_guest(live)
        anna.goto(f"{live.url}/tenants/{TENANT}/groups/{group_id}/delete")
        check(anna.get_by_role("heading", level=1)).to_have_text(
            "User group Berater Zahlungsverkehr cannot be deleted yet")
        check(anna.locator("#cannot")).to_contain_text("Remove those guest users")
        check(anna.locator("main").get_by_role("button")).to_have_count(0)
        check(anna.locator("dl.details")).to_have_css("display", "grid")
        screenshot(anna, "group-delete-blocked-en", commit=True)
        anna.get_by_role("link", name="Back to user groups and guests").click()
        anna.wait_for_url(re.compile(rf".*/tenants/{TENANT}/groups#guests$"))

        # An access that ended meanwhile: a link of a page left open.
        remove_link = f"{live.url}/tenants/{TENANT}/advisors/{member}/remove?from=users"
        anna.goto(remove_link)
        check(anna.get_by_role("button", name="Remove from tenant")).to_be_visible()
        screenshot(anna, "remove-confirmation-guest-en")
        with live.services.db.transaction() as session:
            m = live.services.memberships.get_for_tenant(session, TENANT, member)
            live.services.memberships.end(session, m, by="anna", actor_role="tenant_admin",
                                          reason="removed_by_tenant", now=utcnow())
        anna.goto(remove_link)
        check(anna.get_by_role("heading", level=1)).to_have_text("This access has already ended")
        check(anna.locator("main").get_by_role("button")).to_have_count(0)
        screenshot(anna, "remove-confirmation-ended-en")
        anna.get_by_role("link", name="Back to the list").click()
        anna.wait_for_url(f"{live.url}/tenants/{TENANT}/users")
    finally:
        context.close()
        phone.close()


def test_guests_end_and_the_rights_heading_in_both_languages(browser, live):
    check = expect()
    anna_context = new_context(browser, locale="de-DE")
    bob_context = new_context(browser, locale="en-GB")
    try:
        make_guest(live)
        anna = sign_in(anna_context, live.url, "anna", f"/tenants/{TENANT}/help")
        guests = anna.locator("#guest-users")
        check(guests).to_contain_text("Kein Enddatum")
        check(guests).to_contain_text("bis Sie den Gastbenutzer entfernen oder er den Mandanten "
                                      "verlässt")
        check(anna.locator("#rights-heading")).to_have_text(
            "Rechte des Kundenberaters (fest vorgegeben)")
        check(anna.locator("main")).not_to_contain_text("Leserechte")
        guests.scroll_into_view_if_needed()
        screenshot(anna, "help-page-guests-de", commit=True)
        anna.get_by_role("link", name="Benutzer-Liste").click()
        check(anna.locator("main")).to_contain_text("Kein Enddatum")

        bob = sign_in(bob_context, live.url, "bob", "/advisor")
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        check(row).to_contain_text("guest")
        check(row).to_contain_text("No end date")
        check(row).to_contain_text("until the tenant removes you or you leave")
        check(bob.locator("#rights-heading")).to_have_text("My rights in a tenant")
        check(bob.locator("main")).not_to_contain_text("Read rights")
        screenshot(bob, "advisor-page-guest-en")
    finally:
        anna_context.close()
        bob_context.close()


@pytest.mark.parametrize("locale,lang", [("en-GB", "en"), ("de-DE", "de")])
def test_the_application_page_looks_like_the_product_and_leads_back(browser, live, locale,
                                                                     lang):
    check = expect()
    context = new_context(browser, locale=locale)
    try:
        bob = sign_in(context, live.url, "bob", "/advisor")
        with live.services.db.read() as session:
            code = live.services.codes.current(session, TENANT, utcnow()).display
        bob.locator("#tenant").fill(TENANT)
        bob.locator("#code").fill(code)
        bob.locator("#code").press("Enter")
        row = bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")
        row.get_by_role("button").first.click()
        bob.wait_for_url(f"{live.rs_url}/tenants/{TENANT}/open")
        # The bridge's stylesheet applies: the same header colour, cards, fonts.
        check(bob.locator("header.top")).to_have_css("background-color", BRAND)
        check(bob.locator("section.card").first).to_have_css("border-radius", "8px")
        check(bob.locator("#tenant-title")).to_contain_text("Muster GmbH")
        check(bob.locator("#advisor")).to_have_text(live.handed_over[-1]["advisor_name"])
        assert live.handed_over[-1]["lang"] == lang
        status = bob.locator("#status")
        if lang == "en":
            check(status).to_contain_text("(temporary access) until ")
            check(bob.locator("footer")).to_contain_text("Times are shown in Europe/Berlin.")
        else:
            check(status).to_contain_text("(temporärer Zugriff) bis ")
            check(status).to_contain_text(" Uhr.")
        assert re.search(r"\d\d:\d\d", status.inner_text())
        check(bob.locator("section#payments tbody tr")).to_have_count(3)
        screenshot(bob, f"application-opened-{lang}", commit=True)
        # The way back.
        bob.locator("#back").click()
        bob.wait_for_url(f"{live.url}/advisor")
        check(bob.locator(f"#my-tenants tr[data-tenant='{TENANT}']")).to_be_visible()
    finally:
        context.close()


#: Where a checkbox sits next to its label (and its hint, if it has one), in CSS pixels.
_PLACE_OF_A_CHECKBOX = """box => {
    const label = document.querySelector(`label[for="${box.id}"]`);
    const b = box.getBoundingClientRect(), l = label.getBoundingClientRect();
    const line = parseFloat(getComputedStyle(label).lineHeight);
    const hint = box.getAttribute("aria-describedby") &&
        document.getElementById(box.getAttribute("aria-describedby"));
    const h = hint && hint.getBoundingClientRect();
    return {id: box.id, width: b.width, gap: l.left - b.right,
            offset: (b.top + b.height / 2) - (l.top + line / 2),
            hint_indent: h ? h.left - l.left : null, hint_below: h ? h.top - l.bottom : null};
}"""


def assert_beside_their_labels(page, boxes) -> int:
    """Each checkbox is on the line of its label's first line, just left of the label; a
    hint starts under the label, not under the box."""
    places = [boxes.nth(i).evaluate(_PLACE_OF_A_CHECKBOX) for i in range(boxes.count())]
    for place in places:
        assert 0 <= place["gap"] <= 16, place
        assert abs(place["offset"]) <= 4, place
        assert place["width"] <= 24, place
        if place["hint_indent"] is not None:
            assert abs(place["hint_indent"]) <= 1 and place["hint_below"] >= -1, place
    return len(places)


@pytest.mark.parametrize("locale,phone", [("en-GB", False), ("de-DE", True)])
def test_checkboxes_sit_on_the_line_of_their_labels(browser, live, locale, phone):
    """The help page's settings of one checkbox (the first-access notification) and the
    user group form's permissions: box and label on one line like a form control, also at
    phone width; clicking the label ticks the box."""
    check = expect()
    size = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
            "device_scale_factor": 2} if phone else {}
    context = new_context(browser, locale=locale, **size)
    lang = locale[:2]
    try:
        anna = sign_in(context, live.url, "anna", f"/tenants/{TENANT}/help")
        setting = anna.locator("#notify-first-access")
        check(setting).not_to_be_checked()
        assert assert_beside_their_labels(anna, anna.locator("main input[type=checkbox]")) >= 1
        anna.locator("label[for=notify-first-access]").click()
        check(setting).to_be_checked()
        anna.locator("#first-access-form").scroll_into_view_if_needed()
        screenshot(anna, f"help-page-settings-{lang}{'-phone' if phone else ''}")

        anna.goto(f"{live.url}/tenants/{TENANT}/groups/new")
        boxes = anna.locator("table.permissions input[type=checkbox]")
        assert assert_beside_their_labels(anna, boxes) >= 2 * 15  # read and change per area
        screenshot(anna, f"user-group-form-{lang}{'-phone' if phone else ''}")
    finally:
        context.close()
