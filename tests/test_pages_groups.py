"""The user-groups page of a tenant's admins (Benutzergruppen, issue 7): create, rename and
delete groups, set their permissions per functional area, invite an advisor as a guest user,
withdraw an invitation; guests on the help page and the user list. Rights exactly as the
API's (``/api/tenants/<t>/groups`` and ``/invitations``): admins of this tenant only."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import OTHER_TENANT, TENANT, active_memberships, audit_events
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Invitation, UserGroup
from scopes.catalog import AREAS
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of

BOB = DEMO_USERS["bob"]["sub"]
PAGE = f"/tenants/{TENANT}/groups"
NIL = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


# --- helpers: the API sets up what a test needs, the page is what is tested ---
def api_group(bridge, name="Berater Zahlungsverkehr",
              permissions=("payments:read", "payments:write")):
    response = bridge.api("post", f"/api/tenants/{TENANT}/groups",
                          json={"name": name, "permissions": list(permissions)})
    assert response.status_code == 201, response.json
    return response.json


def api_invite(bridge, group, **who):
    response = bridge.api("post", f"/api/tenants/{TENANT}/invitations",
                          json={"group": group["id"], **(who or {"subject": BOB})})
    assert response.status_code == 201, response.json
    return response.json


def api_guest(bridge, group, user="bob"):
    invitation = api_invite(bridge, group, subject=DEMO_USERS[user]["sub"])
    response = bridge.api("post", f"/api/me/invitations/{invitation['id']}/accept", user=user)
    assert response.status_code == 201, response.json
    return response.json


def stored_groups(bridge, tenant=TENANT) -> list[UserGroup]:
    with bridge.services.db.read() as session:
        return bridge.services.guests.groups(session, tenant)


def open_invitations(bridge, tenant=TENANT) -> list[Invitation]:
    with bridge.services.db.read() as session:
        return bridge.services.guests.invitations(session, tenant, utcnow())


def other_tenant_group(bridge):
    """A group (and an open invitation) of the other tenant, made directly in the domain."""
    s = bridge.services
    with s.db.transaction() as session:
        tenant = s.memberships.tenant(session, OTHER_TENANT)
        group = s.guests.create_group(session, OTHER_TENANT, "Fremde Gruppe", ["ebics:read"],
                                      by="admin-b", now=utcnow())
        invitation = s.guests.invite(session, tenant, group_id=group.id, subject=BOB,
                                     by="admin-b", now=utcnow())
        return group.id, invitation.id


def form(name, *permissions):
    return {"name": name, "permissions": list(permissions)}


# --- the overview ---
def test_overview_in_english_and_german(anna):
    page = anna.get(PAGE, headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    for words in ("User groups and guests", "You have no user groups yet.", "Create user group",
                  "Create a user group first", "No invitation is open.",
                  "No advisor is a guest user of this tenant."):
        assert words in text, words
    german = text_of(anna.get(PAGE, headers=DE))
    for words in ("Benutzergruppen und Gäste", "Sie haben noch keine Benutzergruppen.",
                  "Benutzergruppe anlegen", "Offene Einladungen", "Gastbenutzer",
                  "Kundenberater als Gastbenutzer einladen"):
        assert words in german, words
    assert "User group" not in german


def test_the_tenant_navigation_links_the_page(anna):
    for path in ("help", "users", "log", "groups"):
        page = anna.get(f"/tenants/{TENANT}/{path}", headers=DE)
        assert f'<a href="{PAGE}"' in page.text
        assert "Benutzergruppen" in text_of(page)
    assert f'<a href="{PAGE}" aria-current="page">' in anna.get(PAGE).text


def test_new_group_form_has_read_and_change_per_functional_area(anna):
    page = anna.get(f"{PAGE}/new", headers=EN)
    assert page.status_code == 200
    for area in AREAS:
        assert area.name_en in page.text
        for action in ("read", "write"):
            assert re.search(rf'<input type="checkbox" id="perm-{area.key}-{action}" '
                             rf'name="permissions" value="{area.key}:{action}">', page.text)
            assert f'<label for="perm-{area.key}-{action}">' in page.text
    assert "checked" not in page.text
    german = text_of(anna.get(f"{PAGE}/new", headers=DE))
    for words in ("Benutzergruppe anlegen", "Name der Benutzergruppe", "Berechtigungen",
                  "Funktionsbereich", "Lesen", "Ändern", "Zahlungsverkehr",
                  "Mandantenverwaltung", "ISO 20022- und SEPA-Zahlungen", "Löschfristen"):
        assert words in german, words


# --- create ---
def test_create_a_group_with_permissions(anna, bridge):
    response = post_form_page(anna, PAGE, form("Prüfer", "payments:read", "evaluation:write",
                                               "ebics:read"), headers=EN)
    assert response.status_code == 303 and response.headers["Location"] == PAGE
    [group] = stored_groups(bridge)
    assert group.name == "Prüfer"
    # catalog order; "change" includes "read"
    assert group.permissions == ["ebics:read", "payments:read", "evaluation:read",
                                 "evaluation:write"]
    page = anna.get(PAGE, headers=EN)
    text = text_of(page)
    assert "User group Prüfer was created." in text
    assert "EBICS: read" in text and "ISO 20022 and SEPA payments: read" in text
    assert "Evaluation: read and change" in text
    assert "0 guests" in text and "0 open invitations" in text
    german = text_of(anna.get(PAGE, headers=DE))
    assert "Auswertung: lesen und ändern" in german and "0 Gäste" in german
    [event] = audit_events(bridge, "group.changed")
    assert event["detail"]["change"] == "created"


@pytest.mark.parametrize("data,status,message", [
    (form("", "payments:read"), 400, "A user group needs a name of 1 to 100 characters."),
    (form("x" * 101), 400, "A user group needs a name of 1 to 100 characters."),
    (form("Tab\tname"), 400, "The entry contains characters that are not allowed"),
    (form("G", "payments:delete"), 400, "These permissions do not exist."),
    (form("G", "admin"), 400, "These permissions do not exist."),
])
def test_bad_groups_are_refused_and_the_form_keeps_the_input(anna, bridge, data, status,
                                                              message):
    response = post_form_page(anna, PAGE, data, headers=EN)
    assert response.status_code == status
    assert message in text_of(response)
    assert 'class="error-box" role="alert"' in response.text
    assert stored_groups(bridge) == []
    if "payments:read" in data["permissions"]:
        assert 'value="payments:read" checked' in response.text


def test_duplicate_group_name_is_a_clear_conflict(anna, bridge):
    api_group(bridge, name="Prüfer")
    response = post_form_page(anna, PAGE, form("prüfer"), headers=DE)
    assert response.status_code == 409
    assert "Es gibt bereits eine Benutzergruppe mit diesem Namen." in text_of(response)
    assert [g.name for g in stored_groups(bridge)] == ["Prüfer"]


# --- edit: rename and narrow ---
def test_edit_form_shows_the_group(anna, bridge):
    group = api_group(bridge, permissions=["payments:read", "evaluation:write"])
    page = anna.get(f"{PAGE}/{group['id']}", headers=EN)
    assert page.status_code == 200
    assert "Edit user group Berater Zahlungsverkehr" in text_of(page)
    assert 'value="Berater Zahlungsverkehr"' in page.text
    assert 'value="payments:read" checked' in page.text
    # "change" includes "read": shown checked even if only write was stored
    assert 'value="evaluation:read" checked' in page.text
    assert 'value="evaluation:write" checked' in page.text
    assert 'value="payments:write" checked' not in page.text
    assert "0 guest users have this user group." in text_of(page)


def test_rename_and_narrow_tells_how_many_token_families_were_narrowed(anna, bridge):
    group = api_group(bridge)
    api_guest(bridge, group)
    tokens = bridge.exchange("bob")
    assert tokens.status_code == 200, tokens.json
    assert set(tokens.json["scope"].split()) == {"payments:read", "payments:write"}
    response = post_form_page(anna, f"{PAGE}/{group['id']}",
                              form("Nur lesen", "payments:read"), headers=EN)
    assert response.status_code == 303 and response.headers["Location"] == PAGE
    [stored] = stored_groups(bridge)
    assert (stored.name, stored.permissions) == ("Nur lesen", ["payments:read"])
    text = text_of(anna.get(PAGE, headers=EN))
    assert "User group Nur lesen was saved." in text
    assert "1 token family of its guests had wider rights and was narrowed" in text
    # the wider token stops working; the refresh yields the narrower scope
    assert bridge.introspect(tokens.json["access_token"]).json == {"active": False}
    refreshed = bridge.token({"grant_type": "refresh_token",
                              "refresh_token": tokens.json["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json["scope"] == "payments:read"


def test_narrowing_message_in_german_and_saving_unchanged_narrows_nothing(anna, bridge):
    group = api_group(bridge)
    api_guest(bridge, group)
    assert bridge.exchange("bob").status_code == 200
    same = post_form_page(anna, f"{PAGE}/{group['id']}",
                          form(group["name"], "payments:read", "payments:write"), headers=DE)
    assert same.status_code == 303
    text = text_of(anna.get(PAGE, headers=DE))
    assert "Benutzergruppe Berater Zahlungsverkehr wurde gespeichert." in text
    assert "Token-Famil" not in text
    post_form_page(anna, f"{PAGE}/{group['id']}", form("Berater", "payments:read"), headers=DE)
    text = text_of(anna.get(PAGE, headers=DE))
    assert "1 Token-Familie ihrer Gäste hatte weitergehende Rechte und wurde eingeschränkt" in text


@pytest.mark.parametrize("data,status,message", [
    (form(""), 400, "A user group needs a name of 1 to 100 characters."),
    (form("Taken", "payments:read"), 409, "There already is a user group with this name."),
    (form("G", "payments:read", "nonsense:read"), 400, "These permissions do not exist."),
])
def test_bad_edits_change_nothing(anna, bridge, data, status, message):
    group = api_group(bridge)
    api_group(bridge, name="Taken", permissions=[])
    response = post_form_page(anna, f"{PAGE}/{group['id']}", data, headers=EN)
    assert response.status_code == status
    assert message in text_of(response)
    stored = next(g for g in stored_groups(bridge) if g.id == group["id"])
    assert (stored.name, stored.permissions) == (group["name"], group["permissions"])


# --- delete ---
def test_delete_asks_first_then_deletes(anna, bridge):
    group = api_group(bridge)
    confirm = anna.get(f"{PAGE}/{group['id']}/delete", headers=EN)
    assert confirm.status_code == 200
    text = text_of(confirm)
    assert "Delete user group Berater Zahlungsverkehr?" in text
    assert "The user group is deleted for good." in text
    assert "ISO 20022 and SEPA payments: read and change" in text
    assert len(stored_groups(bridge)) == 1  # asking changes nothing
    response = post_form_page(anna, f"{PAGE}/{group['id']}/delete", headers=EN)
    assert response.status_code == 303
    assert stored_groups(bridge) == []
    assert "User group Berater Zahlungsverkehr was deleted." in text_of(anna.get(PAGE))


@pytest.mark.parametrize("use", ["guest", "invitation"])
def test_deleting_a_group_in_use_is_refused_with_a_clear_message(anna, bridge, use):
    group = api_group(bridge)
    if use == "guest":
        api_guest(bridge, group)
    else:
        api_invite(bridge, group)
    page = anna.get(f"{PAGE}/{group['id']}/delete", headers=EN)
    confirm = text_of(page)
    # Deleting can only fail: no delete button, the reason and the way back (issue 12, 7).
    counts = "Guest users 1 Open invitations 0" if use == "guest" else \
        "Guest users 0 Open invitations 1"
    assert counts in confirm and "cannot be deleted yet" in confirm
    assert "Guest users still have this user group or open invitations name it." in confirm
    assert "Delete user group" not in confirm and 'method="post"' not in page.text.split(
        "<main")[1]
    response = post_form_page(anna, f"{PAGE}/{group['id']}/delete", headers=EN)
    assert response.status_code == 409
    assert "This user group cannot be deleted: guest users still have it" in text_of(response)
    assert 'id="group-error" class="error-box" role="alert"' in response.text
    assert len(stored_groups(bridge)) == 1
    german = post_form_page(anna, f"{PAGE}/{group['id']}/delete", headers=DE)
    assert "Diese Benutzergruppe kann nicht gelöscht werden" in text_of(german)


# --- invitations ---
def test_invite_by_subject_and_by_email_then_withdraw(anna, bridge):
    group = api_group(bridge)
    response = post_form_page(anna, f"/tenants/{TENANT}/invitations",
                              {"group": group["id"], "subject": BOB, "email": ""}, headers=EN)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{PAGE}#invitations"
    assert ("Bob Advisor is invited as a guest user with the user group Berater Zahlungsverkehr"
            in text_of(anna.get(PAGE, headers=EN)))
    post_form_page(anna, f"/tenants/{TENANT}/invitations",
                   {"group": group["id"], "subject": "", "email": "Carol@Advisors.example"})
    invitations = open_invitations(bridge)
    assert [(i.invitee_subject, i.invitee_email) for i in invitations] == [
        (BOB, None), (None, "carol@advisors.example")]
    assert all(i.expires_at - i.created_at == timedelta(days=7) for i in invitations)
    page = anna.get(PAGE, headers=EN)
    text = text_of(page)
    assert "carol@advisors.example is invited as a guest user" in text
    table = page.text.split('id="open-invitations"')[1].split("</table>")[0]
    assert "Bob Advisor" in table and BOB not in table and "carol@advisors.example" in table
    assert "Berater Zahlungsverkehr" in table and "in 7 days" in text_of_html(table)
    assert "0 guests" in text and "2 open invitations" in text

    first = invitations[0].id
    confirm = anna.get(f"/tenants/{TENANT}/invitations/{first}/withdraw", headers=EN)
    assert confirm.status_code == 200
    assert "Withdraw the invitation for Bob Advisor?" in text_of(confirm)
    assert len(open_invitations(bridge)) == 2  # asking changes nothing
    response = post_form_page(anna, f"/tenants/{TENANT}/invitations/{first}/withdraw",
                              headers=EN)
    assert response.status_code == 303
    assert [i.invitee_email for i in open_invitations(bridge)] == ["carol@advisors.example"]
    assert "The invitation was withdrawn." in text_of(anna.get(PAGE, headers=EN))
    again = post_form_page(anna, f"/tenants/{TENANT}/invitations/{first}/withdraw",
                           headers=EN)
    assert again.status_code == 409
    assert "This invitation is no longer open" in text_of(again)
    assert anna.get(f"/tenants/{TENANT}/invitations/{first}/withdraw").status_code == 404
    changes = [e["detail"]["change"] for e in audit_events(bridge, "invitation.changed")]
    assert sorted(changes) == ["created", "created", "withdrawn"]


def text_of_html(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))


def test_invitation_texts_in_german(anna, bridge):
    group = api_group(bridge)
    post_form_page(anna, f"/tenants/{TENANT}/invitations", {"group": group["id"],
                                                             "subject": BOB}, headers=DE)
    text = text_of(anna.get(PAGE, headers=DE))
    assert "Bob Advisor ist bis" in text and "als Gastbenutzer mit der Benutzergruppe" in text
    assert "Einladen" in text and "Gültig bis" in text and "Zurückziehen" in text
    first = open_invitations(bridge)[0].id
    confirm = text_of(anna.get(f"/tenants/{TENANT}/invitations/{first}/withdraw", headers=DE))
    assert "Einladung für Bob Advisor zurückziehen?" in confirm
    assert "Einladung zurückziehen" in confirm


@pytest.mark.parametrize("fields,status,message", [
    ({"subject": BOB, "email": "bob@advisors.example"}, 400,
     "Please choose the advisor from the matches or enter an e-mail address (one of them, "
     "not both)."),
    ({}, 400, "Please choose the advisor from the matches or enter an e-mail address"),
    ({"email": "not-an-address"}, 400, "This is not an e-mail address."),
    ({"subject": "x" * 300}, 400, "Please choose the advisor from the matches of the search."),
    ({"subject": "00000000-0000-4000-8000-00000000beef"}, 404,
     "The directory knows no such person."),
    ({"subject": DEMO_USERS["eve"]["sub"]}, 400, "This person does not hold the advisor role."),
    ({"subject": BOB, "group": NIL}, 404, "This user group does not exist (any more)."),
    ({"subject": BOB, "group": ""}, 404, "This user group does not exist (any more)."),
])
def test_bad_invitations_are_refused_and_create_nothing(anna, bridge, fields, status, message):
    group = api_group(bridge)
    response = post_form_page(anna, f"/tenants/{TENANT}/invitations",
                              {"group": group["id"], **fields}, headers=EN)
    assert response.status_code == status
    assert message in text_of(response)
    assert 'id="invite-error" class="error-box" role="alert"' in response.text
    assert open_invitations(bridge) == []
    if fields.get("email") == "not-an-address":
        assert 'value="not-an-address"' in response.text  # the form keeps the input


# --- another tenant's groups and invitations are out of reach ---
def test_groups_and_invitations_of_another_tenant_are_not_found_here(anna, bridge):
    group_id, invitation_id = other_tenant_group(bridge)
    assert anna.get(f"{PAGE}/{group_id}").status_code == 404
    for path, data in ((f"{PAGE}/{group_id}", form("Gekapert", "ebics:write")),
                       (f"{PAGE}/{group_id}/delete", {}),
                       (f"/tenants/{TENANT}/invitations/{invitation_id}/withdraw", {})):
        response = post_form_page(anna, path, data, headers=EN)
        assert response.status_code == 404, path
    invite = post_form_page(anna, f"/tenants/{TENANT}/invitations",
                            {"group": group_id, "subject": BOB}, headers=EN)
    assert invite.status_code == 404
    assert "This user group does not exist (any more)." in text_of(invite)
    assert anna.get(f"/tenants/{TENANT}/invitations/{invitation_id}/withdraw").status_code == 404
    [other] = stored_groups(bridge, OTHER_TENANT)
    assert (other.name, other.permissions) == ("Fremde Gruppe", ["ebics:read"])
    assert len(open_invitations(bridge, OTHER_TENANT)) == 1
    assert open_invitations(bridge) == [] and stored_groups(bridge) == []
    # And the other tenant's own page refuses anna.
    refused = anna.get(f"/tenants/{OTHER_TENANT}/groups", headers=EN)
    assert refused.status_code == 403
    assert f"Only administrators of tenant {OTHER_TENANT} may open this page." in text_of(refused)
    assert "Fremde Gruppe" not in refused.text


# --- rights, CSRF ---
def _targets(bridge):
    group = api_group(bridge)
    invitation = api_invite(bridge, group)
    gid, iid = group["id"], invitation["id"]
    return [
        ("post", "/tenants/{t}/groups", form("Neu", "ebics:write")),
        ("post", f"/tenants/{{t}}/groups/{gid}", form("Umbenannt", "ebics:write")),
        ("post", f"/tenants/{{t}}/groups/{gid}/delete", {}),
        ("post", "/tenants/{t}/invitations", {"group": gid, "subject": "someone"}),
        ("post", f"/tenants/{{t}}/invitations/{iid}/withdraw", {}),
    ], gid, iid


def _unchanged(bridge, group_id):
    [group] = stored_groups(bridge)
    assert (group.id, group.name, group.permissions) == (
        group_id, "Berater Zahlungsverkehr", ["payments:read", "payments:write"])
    assert [i.invitee_subject for i in open_invitations(bridge)] == [BOB]


def test_every_form_post_needs_the_csrf_token(anna, bridge):
    targets, gid, _iid = _targets(bridge)
    for _method, path, data in targets:
        response = anna.post(path.format(t=TENANT), data=data, headers=EN)
        assert response.status_code == 400, path
        assert "The form has expired or did not come from this site." in text_of(response)
        forged = anna.post(path.format(t=TENANT), data={**data, "csrf_token": "forged"})
        assert forged.status_code == 400, path
    _unchanged(bridge, gid)


@pytest.mark.parametrize("user", ["bob", "carol", "sam", "eve"])
def test_wrong_roles_are_refused_and_change_nothing(app, bridge, user):
    targets, gid, iid = _targets(bridge)
    client = signed_in(app, user)
    for path in (PAGE, f"{PAGE}/new", f"{PAGE}/{gid}", f"{PAGE}/{gid}/delete",
                 f"/tenants/{TENANT}/invitations/{iid}/withdraw"):
        response = client.get(path, headers=EN)
        assert response.status_code == 403, path
        assert f"Only administrators of tenant {TENANT} may open this page." in text_of(response)
    for _method, path, data in targets:
        response = post_form_page(client, path.format(t=TENANT), data)
        assert response.status_code == 403, path
    _unchanged(bridge, gid)


def test_a_guest_cannot_edit_its_own_group(app, bridge):
    group = api_group(bridge)
    api_guest(bridge, group)
    bob = signed_in(app, "bob")
    response = post_form_page(bob, f"{PAGE}/{group['id']}",
                              form("Meine", *[a.scopes[1] for a in AREAS]))
    assert response.status_code == 403
    assert bob.get(f"{PAGE}/{group['id']}").status_code == 403
    [stored] = stored_groups(bridge)
    assert stored.permissions == ["payments:read", "payments:write"]


def test_admin_of_the_other_tenant_path_is_refused(anna, bridge):
    targets, gid, _iid = _targets(bridge)
    for _method, path, data in targets:
        response = post_form_page(anna, path.format(t=OTHER_TENANT), data)
        assert response.status_code == 403, path
    _unchanged(bridge, gid)
    assert stored_groups(bridge, OTHER_TENANT) == []


@pytest.mark.parametrize("path", ["groups", "groups/new", f"groups/{NIL}",
                                  f"groups/{NIL}/delete", f"invitations/{NIL}/withdraw"])
def test_pages_need_sign_in(client, path):
    response = client.get(f"/tenants/{TENANT}/{path}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_csrf_token_is_on_every_form(anna, bridge):
    group = api_group(bridge)
    invitation = api_invite(bridge, group)
    for path in (PAGE, f"{PAGE}/new", f"{PAGE}/{group['id']}", f"{PAGE}/{group['id']}/delete",
                 f"/tenants/{TENANT}/invitations/{invitation['id']}/withdraw"):
        page = anna.get(path)
        forms = re.findall(r"<form[^>]*>.*?</form>", page.text, flags=re.S)
        post_forms = [f for f in forms if 'method="post"' in f]
        assert post_forms, path
        for post_form in post_forms:
            assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]{20,}">',
                             post_form), path


# --- guests on the help page, the user list and this page ---
def test_guests_are_shown_with_their_group_and_can_be_removed(anna, bridge):
    group = api_group(bridge)
    api_guest(bridge, group)
    tokens = bridge.exchange("bob").json
    help_page = anna.get(f"/tenants/{TENANT}/help", headers=EN)
    guests = help_page.text.split('id="guest-users"')[1].split("</section>")[0]
    assert "Bob Advisor" in guests and "Berater Zahlungsverkehr" in guests and "guest" in guests
    membership_id = active_memberships(bridge)[0].id
    assert f"/tenants/{TENANT}/advisors/{membership_id}/remove?from=help" in guests
    temporary = help_page.text.split('id="temporary-advisors"')[1].split("</section>")[0]
    assert "Bob" not in temporary
    german = text_of(anna.get(f"/tenants/{TENANT}/help", headers=DE))
    assert re.search(r"Gastbenutzer .* Bob Advisor Gast Berater Zahlungsverkehr", german)
    assert "Aus Mandant entfernen (Bob Advisor)" in german
    status = anna.get(f"/tenants/{TENANT}/status.json").json
    assert "Berater Zahlungsverkehr" in status["guests_html"]

    users = text_of(anna.get(f"/tenants/{TENANT}/users", headers=DE))
    assert re.search(r"Bob Advisor .* Kundenberater Gast Benutzergruppe: Berater Zahlungsverkehr",
                     users)
    assert "Aus Mandant entfernen" in users
    overview = anna.get(PAGE, headers=EN)
    listed = overview.text.split('id="guests"')[1]
    assert "Bob Advisor" in listed and "Berater Zahlungsverkehr" in listed
    assert "1 guest" in text_of(overview)

    confirm = anna.get(f"/tenants/{TENANT}/advisors/{membership_id}/remove?from=groups",
                       headers=EN)
    text = text_of(confirm)
    assert "Remove Bob Advisor from tenant" in text and "User group Berater Zahlungsverkehr" in text
    assert "the advisor needs a new invitation" in text
    removed = post_form_page(anna, f"/tenants/{TENANT}/advisors/{membership_id}/remove",
                             {"from": "groups"}, headers=EN)
    assert removed.status_code == 303 and removed.headers["Location"] == PAGE
    assert active_memberships(bridge) == []
    assert bridge.introspect(tokens["access_token"]).json == {"active": False}
    assert "No advisor is a guest user of this tenant." in text_of(anna.get(PAGE, headers=EN))
    # the group is free again: now it can be deleted
    assert post_form_page(anna, f"{PAGE}/{group['id']}/delete").status_code == 303


def test_expired_invitations_are_not_listed(anna, bridge):
    group = api_group(bridge)
    api_invite(bridge, group)
    with bridge.services.db.transaction() as session:
        session.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = anna.get(PAGE, headers=EN)
    assert "No invitation is open." in text_of(page)
    # an expired invitation does not hold the group
    assert post_form_page(anna, f"{PAGE}/{group['id']}/delete").status_code == 303
    with bridge.services.db.read() as session:
        assert session.scalars(select(UserGroup.deleted_at)).one() is not None
