"""The notices of permanent advisors with the tenant's consent: the outbox rows an accepted
proposal writes (the tenant's admins learn the tenant accepted, the advisor that they are
in), and every new message rendered in German and English with its facts."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import TENANT
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.notifications import Notifications
from idp_bridge.storage.models import NotificationItem, Tenant
from test_permanent_consent import accept, proposed, set_mode

BOB = DEMO_USERS["bob"]["sub"]
FACTS = {"tenant": "10042", "tenant_name": "Muster GmbH", "at": "2026-12-03T10:00:00Z",
         "advisor": BOB, "advisor_name": "Bob Advisor", "actor": "a", "actor_name": "Anna Admin",
         "help_page": "https://bridge.example/tenants/10042/help",
         "advisor_page": "https://bridge.example/advisor", "reason": "Onboarding 2027",
         "note": "We have our own", "accepted_by": ["Anna Admin", "Dora Admin"],
         "due_at": "2027-06-01T10:00:00Z", "kind": "permanent", "since": None,
         "expires_at": None, "end_reason": "reconfirmation_lapsed"}


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("event, expected", [
    ("permanent_advisor.proposed", "Onboarding 2027"),
    ("permanent_advisor.accepted", "Anna Admin, Dora Admin"),
    ("permanent_advisor.declined", "We have our own"),
    ("permanent_advisor.withdrawn", "Bob Advisor"),
    ("permanent_advisor.expired", "Bob Advisor"),
    ("permanent_advisor.reconfirmation_due", "2027"),
    ("advisor.permanent_lapsed", "Bob Advisor"),
])
def test_every_message_is_written_in_both_languages(lang, event, expected):
    notifications = Notifications(db=None, issuer="https://bridge.example")
    subject, body = notifications._text(lang, {**FACTS, "type": event})
    assert "10042" in subject and "{" not in subject + body
    assert expected in body
    assert body.splitlines()[0] == ("Guten Tag," if lang == "de" else "Hello,")


def test_an_accepted_proposal_tells_both_sides(bridge_with):
    bridge = bridge_with(smtp_host="127.0.0.1", smtp_port=2525, smtp_security="none",
                         smtp_from="bridge@konfipay.example")
    with bridge.services.db.transaction() as session:
        session.get(Tenant, TENANT).notification_emails = "admins@muster-gmbh.example"
    set_mode(bridge, "accept")
    made = proposed(bridge)
    assert accept(bridge, made["id"]).status_code == 200
    with bridge.services.db.read() as session:
        items = {i.event: i.payload for i in session.scalars(select(NotificationItem))}
    assert items["permanent_advisor.proposed"]["recipients"] == ["admins@muster-gmbh.example"]
    assert items["advisor.permanent_assigned"]["via"] == "proposal"
    assert items["advisor.permanent_assigned"]["recipients"] == ["admins@muster-gmbh.example"]
    assert items["permanent_advisor.accepted"]["recipients"] == ["bob@advisors.example"]
