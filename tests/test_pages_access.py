"""The access log's part "what advisors did at the resource servers" (issue 14 item 2: groups,
drill-down, filters, CSV, API, both languages) and "who is in my tenant now" (item 4: active
now in status.json, last activity, the first-access notification)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from html import unescape
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

from conftest import RS_CLIENT_ID, TENANT, verify_access_token
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Client, NotificationItem, Tenant
from test_pages_helpers import DE, EN, post_form_page, signed_in, text_of


def _at(when) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{when.microsecond // 1000:03d}Z"


def record(claims, *, area="ebics", action="read", route="/tenants/<tenant>/ebics",
           status=200, at=None, method="GET") -> dict:
    return {"id": str(uuid.uuid4()), "tenant": claims["tenant"], "grant_id": claims["grant_id"],
            "sid": claims["sid"], "sub": claims["sub"], "area": area, "action": action,
            "method": method, "route": route, "status": status, "at": _at(at or utcnow())}


def send(bridge, records):
    response = bridge.client.post("/access-records", json={"records": records},
                                  auth=(RS_CLIENT_ID, bridge.rs_secret))
    assert response.status_code == 200 and not response.json["refused"], response.json
    return response


def claims_of(bridge, user="bob") -> dict:
    return verify_access_token(bridge, bridge.join(user)["access_token"])[1]


@pytest.fixture
def anna(app):
    return signed_in(app, "anna")


@pytest.fixture
def bob_read(bridge):
    """bob read EBICS three times (one 404) and changed Evaluation once."""
    bob = claims_of(bridge)
    now = utcnow()
    send(bridge, [record(bob, at=now - timedelta(seconds=s)) for s in (120, 60)]
         + [record(bob, status=404, at=now - timedelta(seconds=30))]
         + [record(bob, area="evaluation", action="write", method="POST",
                   route="/tenants/<tenant>/evaluation", status=201)])
    return bob


def test_the_log_groups_what_bob_read(anna, bob_read):
    page = anna.get(f"/tenants/{TENANT}/log", headers=EN)
    assert page.status_code == 200
    text = text_of(page)
    assert "What advisors did at the resource servers" in text and "Access and changes" in text
    assert "Bob Advisor read EBICS — 3 requests," in text
    assert "Bob Advisor changed Evaluation — 1 request," in text
    assert "200 ×2, 404 ×1" in text
    # The existing audit part stays.
    assert "Bob Advisor joined with the access code (temporary access)." in text


def test_the_log_in_german(anna, bob_read):
    text = text_of(anna.get(f"/tenants/{TENANT}/log", headers=DE))
    assert "Was Kundenberater bei den Anwendungen getan haben" in text
    assert "Bob Advisor hat EBICS gelesen — 3 Anfragen," in text
    assert "Bob Advisor hat Auswertung geändert — 1 Anfrage," in text


@pytest.mark.parametrize("query,present,absent", [
    ("area=ebics", ["read EBICS"], ["changed Evaluation"]),
    ("area=evaluation", ["changed Evaluation"], ["read EBICS"]),
    ("advisor=carol", ["No requests of advisors match."], ["read EBICS"]),
    ("advisor=bob", ["read EBICS", "changed Evaluation"], []),
    ("until=2000-01-01", ["No requests of advisors match."], ["read EBICS"]),
])
def test_the_log_filters_the_requests(anna, bob_read, query, present, absent):
    text = text_of(anna.get(f"/tenants/{TENANT}/log?{query}", headers=EN))
    for item in present:
        assert item in text
    for item in absent:
        assert item not in text


def test_an_unknown_area_is_400(anna, bob_read):
    response = anna.get(f"/tenants/{TENANT}/log?area=secrets", headers=EN)
    assert response.status_code == 400
    assert "Unknown functional area." in text_of(response)


def test_drill_down_to_the_single_requests(anna, bridge, bob_read):
    page = anna.get(f"/tenants/{TENANT}/log?area=ebics", headers=EN)
    link = page.text.split('class="actions"><a href="')[1].split('"')[0].replace("&amp;", "&")
    assert f"membership={bridge.membership_id('bob')}" in link and "action=read" in link
    requests = anna.get(link, headers=EN)
    assert requests.status_code == 200
    text = text_of(requests)
    assert text.count("GET /tenants/<tenant>/ebics") == 3
    assert "POST" not in text.split("Requests", 2)[-1]
    assert RS_CLIENT_ID in text and "404" in text
    assert anna.get(f"/tenants/{TENANT}/log/requests?action=delete",
                    headers=EN).status_code == 400


def _name_the_receiver(bridge, name: str) -> None:
    with bridge.services.db.transaction() as session:
        session.get(Client, RS_CLIENT_ID).name = name


def _application_cells(response) -> list[str]:
    """The requests table's "Application" column, as the page shows it."""
    return [unescape(cell).strip() for cell in re.findall(
        r'<td data-label="(?:Application|Anwendung)">(.*?)</td>', response.text, flags=re.S)]


def _csv_rows(response, delimiter=","):
    return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff")),
                           delimiter=delimiter))


@pytest.mark.parametrize("headers,column", [(EN, "Application"), (DE, "Anwendung")])
def test_the_requests_name_the_resource_server_by_its_client_name(anna, bridge, bob_read,
                                                                  headers, column):
    """The resource server is shown by its client's name (as on the receipts), escaped,
    not by its client id; the same in the requests CSV."""
    _name_the_receiver(bridge, "Zahlungsserver <Muster & Co>")
    page = anna.get(f"/tenants/{TENANT}/log/requests", headers=headers)
    assert page.status_code == 200
    assert _application_cells(page) == ["Zahlungsserver <Muster & Co>"] * 4
    assert "Zahlungsserver &lt;Muster &amp; Co&gt;" in page.text  # escaped, not markup
    table = page.text.split('id="requests"', 1)[1]
    assert RS_CLIENT_ID not in table
    german = headers is DE
    rows = _csv_rows(anna.get(f"/tenants/{TENANT}/log.csv?part=requests", headers=headers),
                     ";" if german else ",")
    at = rows[0].index(column)
    assert [row[at] for row in rows[1:]] == ["Zahlungsserver <Muster & Co>"] * 4
    assert not any(RS_CLIENT_ID in cell for row in rows[1:] for cell in row)


def test_the_requests_show_the_client_id_when_the_client_has_no_name(anna, bridge, bob_read):
    _name_the_receiver(bridge, "")
    page = anna.get(f"/tenants/{TENANT}/log/requests", headers=EN)
    assert page.status_code == 200
    assert _application_cells(page) == [RS_CLIENT_ID] * 4
    rows = _csv_rows(anna.get(f"/tenants/{TENANT}/log.csv?part=requests", headers=EN))
    at = rows[0].index("Application")
    assert [row[at] for row in rows[1:]] == [RS_CLIENT_ID] * 4


def test_requests_as_csv_are_neutralised(anna, bridge):
    bob = claims_of(bridge)
    send(bridge, [record(bob, route="/tenants/<tenant>/ebics/-1")])
    response = anna.get(f"/tenants/{TENANT}/log.csv?part=requests", headers=EN)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="access-requests-10042-' in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:4] == ["Time", "Time (UTC)", "Advisor", "Functional area"]
    assert rows[1][2:7] == ["Bob Advisor", "EBICS", "read", "GET", "/tenants/<tenant>/ebics/-1"]
    assert all(not cell[:1] in '=+-@|"' for row in rows[1:] for cell in row)
    german = anna.get(f"/tenants/{TENANT}/log.csv?part=requests", headers=DE)
    rows = list(csv.reader(io.StringIO(german.get_data(as_text=True).lstrip("\ufeff")),
                           delimiter=";"))
    assert rows[0][:2] == ["Zeit", "Zeit (UTC)"] and rows[1][3] == "EBICS"
    assert anna.get(f"/tenants/{TENANT}/log.csv?part=nonsense", headers=EN).status_code == 400


def test_api_groups_and_requests(bridge, bob_read):
    response = bridge.api("get", f"/api/tenants/{TENANT}/access?area=ebics")
    assert response.status_code == 200
    (group,) = response.json["groups"]
    assert (group["advisor"], group["area"], group["action"], group["count"]) == (
        bob_read["sub"], "ebics", "read", 3)
    assert group["statuses"] == {"200": 2, "404": 1} and group["advisor_name"] == "Bob Advisor"
    page = bridge.api("get", f"/api/tenants/{TENANT}/access/requests?limit=2")
    assert page.status_code == 200 and len(page.json["requests"]) == 2
    assert page.json["next_before"] is not None
    first = page.json["requests"][0]
    assert first["resource_server"] == RS_CLIENT_ID and first["method"] in ("GET", "POST")
    since = bridge.api("get", f"/api/tenants/{TENANT}/access?since=2000-01-01T00:00:00Z")
    assert len(since.json["groups"]) == 2


@pytest.mark.parametrize("query,code", [("area=secrets", "unknown_area"),
                                        ("action=delete", "unknown_action"),
                                        ("since=yesterday", "time_filter_invalid"),
                                        ("until=2026-01-01T10:00:00", "time_filter_invalid")])
def test_api_refuses_bad_filters(bridge, query, code):
    response = bridge.api("get", f"/api/tenants/{TENANT}/access?{query}")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request" and response.json["error_code"] == code


@pytest.mark.parametrize("user", ["bob", "sam"])
def test_api_is_for_the_tenant_admins(bridge, bob_read, user):
    response = bridge.api("get", f"/api/tenants/{TENANT}/access", user=user)
    assert response.status_code == 403 and response.json["error"] == "forbidden"


def test_status_shows_who_is_active_now_and_last_activity(anna, bridge):
    before = anna.get(f"/tenants/{TENANT}/status.json").json
    assert before["active"] == []
    assert "No advisor has used their access in the last 5 minutes." in before["active_html"]
    bob = claims_of(bridge)
    send(bridge, [record(bob), record(bob, area="bank-accounts",
                                      route="/tenants/<tenant>/bank-accounts")])
    after = anna.get(f"/tenants/{TENANT}/status.json", headers=EN).json
    assert after["fingerprint"] != before["fingerprint"]
    (active,) = after["active"]
    assert active["membership_id"] == bridge.membership_id("bob") and active["live"]
    assert active["areas"] == ["bank-accounts", "ebics"] and active["requests"] == 2
    assert "Bob Advisor" in after["active_html"] and "Bank accounts, EBICS" in after["active_html"]
    assert (f"/tenants/{TENANT}/advisors/{bridge.membership_id('bob')}/remove?from=help"
            in after["active_html"]) and "End access now" in after["active_html"]
    assert "request at an application" in after["temporary_html"]
    page = text_of(anna.get(f"/tenants/{TENANT}/help", headers=DE))
    assert "Gerade aktiv" in page and "Zugriff jetzt beenden" in page


def test_an_old_request_is_not_active_now(anna, bridge):
    bob = claims_of(bridge)
    send(bridge, [record(bob, at=utcnow() - timedelta(minutes=6))])
    body = anna.get(f"/tenants/{TENANT}/status.json").json
    assert body["active"] == []
    assert "request at an application" in body["temporary_html"]


def test_last_activity_falls_back_to_the_last_token(anna, bridge):
    bridge.join("bob")
    assert "token issued" in anna.get(f"/tenants/{TENANT}/status.json").json["temporary_html"]


# --- the first-access notification ---
def _outbox(bridge):
    with bridge.services.db.read() as session:
        return [(i.channel, i.event, i.payload) for i in session.scalars(
            select(NotificationItem).order_by(NotificationItem.id))]


@pytest.fixture
def hooked(bridge_with):
    bridge = bridge_with(webhook_url="http://127.0.0.1:9/hook",
                         webhook_secret="webhook-secret-for-the-tests-0123456789")
    return bridge


def test_the_setting_is_saved_from_the_help_page(hooked):
    anna = signed_in(hooked.app, "anna")
    response = post_form_page(anna, f"/tenants/{TENANT}/settings/first-access",
                              {"notify_first_access": "on"}, headers=EN)
    assert response.status_code == 303
    with hooked.services.db.read() as session:
        assert session.get(Tenant, TENANT).notify_first_access is True
    assert 'id="notify-first-access" name="notify_first_access" type="checkbox" checked' in \
        anna.get(f"/tenants/{TENANT}/help").text
    post_form_page(anna, f"/tenants/{TENANT}/settings/first-access", {}, headers=EN)
    with hooked.services.db.read() as session:
        assert session.get(Tenant, TENANT).notify_first_access is False


def test_the_first_use_of_a_new_access_is_told_once(hooked):
    with hooked.services.db.transaction() as session:
        session.get(Tenant, TENANT).notify_first_access = True
    bob = claims_of(hooked)
    joined = len(_outbox(hooked))
    first = utcnow() - timedelta(seconds=10)
    send(hooked, [record(bob, area="payments", at=first), record(bob)])
    items = _outbox(hooked)[joined:]
    assert [(c, e) for c, e, _p in items] == [("webhook", "advisor.first_access")]
    payload = items[0][2]
    assert payload["advisor_name"] == "Bob Advisor" and payload["grant_id"] == bob["grant_id"]
    assert payload["first_access"]["area"] == "payments"
    assert payload["first_access"]["resource_server"] == RS_CLIENT_ID
    send(hooked, [record(bob)])  # not the first any more
    assert len(_outbox(hooked)) == joined + 1


def test_no_first_access_notification_unless_asked(hooked):
    bob = claims_of(hooked)
    joined = len(_outbox(hooked))
    send(hooked, [record(bob)])
    assert len(_outbox(hooked)) == joined


def test_the_first_access_mail_text():
    from idp_bridge.notifications import Notifications

    n = Notifications(db=None, issuer="https://bridge.example")
    payload = {"type": "advisor.first_access", "advisor": "s", "advisor_name": "Bob Advisor",
               "tenant": TENANT, "tenant_name": "Muster GmbH", "at": "2026-12-02T09:42:00Z",
               "help_page": "https://bridge.example/tenants/10042/help",
               "first_access": {"area": "ebics", "action": "read", "method": "GET",
                                "route": "/tenants/<tenant>/ebics",
                                "resource_server": RS_CLIENT_ID}}
    subject, body = n._text("de", payload)
    assert subject == "Kundenberater Bob Advisor nutzt seinen Zugriff auf Mandant 10042"
    assert "Erster Zugriff: Lesen ebics (GET /tenants/<tenant>/ebics)" in body
    subject, body = n._text("en", payload)
    assert subject == "Advisor Bob Advisor is using their access to tenant 10042"
    assert "First access: read ebics" in body
