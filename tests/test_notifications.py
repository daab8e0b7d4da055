"""Tenant admins are told about advisors: e-mail through a real SMTP server (aiosmtpd on
127.0.0.1, started here) and a signed webhook (served here), from a durable outbox written in
the membership's transaction, delivered with retries."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from email import policy

import pytest
from flask import Flask, request
from sqlalchemy import select, update

from conftest import TENANT, ServerThread, active_memberships
from idp_bridge.devidp import DEMO_USERS
from idp_bridge.notifications import (Notifications, WebhookConfig, event_for, parse_addresses,
                                      sign_webhook)
from idp_bridge.settings import SettingsError
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import Membership, NotificationItem, Tenant

WEBHOOK_SECRET = "webhook-secret-for-the-tests-0123456789"
CAROL = DEMO_USERS["carol"]["sub"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.messages: list = []
        self.event = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        self.event.set()
        return "250 OK"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


class WebhookReceiver:
    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.requests: list = []
        app = Flask("webhook-receiver")

        @app.post("/hook")
        def hook():
            self.requests.append((dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else 204
            return "", status

        self.app = app


@pytest.fixture
def webhook():
    receivers = []

    def start(statuses=()):
        receiver = WebhookReceiver(statuses)
        server = ServerThread(receiver.app).__enter__()
        receiver.url = f"http://127.0.0.1:{server.port}/hook"
        receivers.append(server)
        return receiver

    yield start
    for server in receivers:
        server.__exit__(None, None, None)


@pytest.fixture
def notifying(bridge_with, smtp_server):
    bridge = bridge_with(smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security="none",
                         smtp_from="advisors@konfipay.example")
    with bridge.services.db.transaction() as session:
        session.get(Tenant, TENANT).notification_emails = "it@muster.example, anna@muster.example"
    return bridge


def outbox(bridge) -> list[NotificationItem]:
    with bridge.services.db.read() as session:
        return list(session.scalars(select(NotificationItem).order_by(NotificationItem.id)))


def deliver(bridge) -> int:
    return bridge.services.notifications.work_once()


def test_joining_sends_a_german_and_english_mail(notifying, smtp_server):
    notifying.join("bob", reason="Ticket 4711")
    items = outbox(notifying)
    assert [(i.channel, i.event) for i in items] == [("email", "advisor.joined")]
    assert deliver(notifying) == 1
    sender, recipients, message = smtp_server.messages[0]
    assert sender == "advisors@konfipay.example"
    assert recipients == ["it@muster.example", "anna@muster.example"]
    # The name is the directory's (here: bob's sign-in), not the username.
    assert message["Subject"] == ("Kundenberater Bob Advisor ist Mandant 10042 beigetreten / "
                                  "Advisor Bob Advisor joined tenant 10042")
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "der Kundenberater Bob Advisor ist am" in body and "Mandanten 10042 (Muster GmbH)" in body
    assert "Angegebener Grund: Ticket 4711" in body and "Reason given: Ticket 4711" in body
    assert "http://127.0.0.1:8000/tenants/10042/help" in body
    assert "-- English --" in body
    done = outbox(notifying)[0]
    assert done.done_at is not None and done.attempts == 1
    assert deliver(notifying) == 0  # delivered once


@pytest.mark.parametrize("action,event,words", [
    ("leave", "advisor.left", "hat Mandant 10042 verlassen"),
    ("remove", "advisor.removed", "aus Mandant 10042 entfernt"),
])
def test_leaving_and_removal_are_told(notifying, smtp_server, action, event, words):
    notifying.join("bob")
    deliver(notifying)
    if action == "leave":
        response = notifying.api("delete", f"/api/me/memberships/{TENANT}", user="bob")
    else:
        response = notifying.api("delete", f"/api/tenants/{TENANT}/memberships/"
                                 f"{notifying.membership_id('bob')}")
    assert response.status_code == 204
    assert outbox(notifying)[-1].event == event
    assert deliver(notifying) == 1
    assert words in smtp_server.messages[-1][2]["Subject"]


def test_permanent_assignment_is_told_once(notifying, smtp_server):
    notifying.join("carol")
    response = notifying.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                             user="sam")
    assert response.status_code == 201
    # The superseded temporary access is not reported as a removal: the assignment says it.
    assert [i.event for i in outbox(notifying)] == ["advisor.joined",
                                                    "advisor.permanent_assigned"]
    assert deliver(notifying) == 2
    subject = smtp_server.messages[-1][2]["Subject"]
    assert subject.startswith("Permanenter Kundenberater Carol Advisor für Mandant 10042")
    # The support admin is named (from the directory), in both languages.
    body = smtp_server.messages[-1][2].get_content()
    assert "Durchgeführt von: Sam Support" in body and "Done by: Sam Support" in body
    assert DEMO_USERS["sam"]["sub"] not in body


def test_a_webhook_names_advisor_and_actor_from_the_directory(bridge_with, webhook):
    receiver = webhook(statuses=[200])
    bridge = bridge_with(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET)
    assert bridge.api("put", f"/api/tenants/{TENANT}/permanent-advisors/{CAROL}",
                      user="sam").status_code == 201
    assert deliver(bridge) == 1
    data = json.loads(receiver.requests[-1][1])["data"]
    assert (data["advisor"], data["advisor_name"]) == (CAROL, "Carol Advisor")
    assert (data["actor"], data["actor_name"]) == (DEMO_USERS["sam"]["sub"], "Sam Support")


def test_expiry_found_by_the_exchange_is_told(notifying, smtp_server):
    notifying.join("bob")
    with notifying.services.db.transaction() as session:
        session.execute(update(Membership).values(expires_at=utcnow() - timedelta(seconds=1)))
    # The exchange reads the membership as a Core row and ends it as expired.
    assert notifying.exchange("bob").status_code == 400
    assert outbox(notifying)[-1].event == "advisor.expired"
    deliver(notifying)
    assert "abgelaufen" in smtp_server.messages[-1][2]["Subject"]


def test_the_outbox_is_written_in_the_membership_transaction(notifying):
    services = notifying.services
    with pytest.raises(RuntimeError):
        with services.db.transaction() as session:
            tenant = services.memberships.tenant(session, TENANT)
            services.memberships.create(session, tenant, subject=CAROL, name="carol",
                                        kind="temporary", created_by=CAROL, actor_role="advisor",
                                        now=utcnow())
            assert len(session.new) >= 1
            raise RuntimeError("the change fails")
    assert outbox(notifying) == [] and active_memberships(notifying) == []


def test_nothing_is_queued_without_channels_or_addresses(bridge, bridge_with, smtp_server):
    bridge.join("bob")
    assert outbox(bridge) == []
    no_addresses = bridge_with(smtp_host="127.0.0.1", smtp_port=smtp_server.port,
                               smtp_security="none", smtp_from="advisors@konfipay.example")
    no_addresses.join("bob")
    assert outbox(no_addresses) == []


def test_signed_webhook_with_retries(bridge_with, webhook):
    receiver = webhook(statuses=[500])
    bridge = bridge_with(webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET)
    bridge.join("bob", reason="Ticket 4711")
    assert deliver(bridge) == 0  # the receiver answered 500
    item = outbox(bridge)[0]
    assert (item.channel, item.attempts, item.done_at) == ("webhook", 1, None)
    assert item.last_error == "webhook answered 500" and item.next_attempt_at > utcnow()
    assert deliver(bridge) == 0  # not due yet
    with bridge.services.db.transaction() as session:
        session.execute(update(NotificationItem).values(next_attempt_at=utcnow()))
    assert deliver(bridge) == 1
    headers, body = receiver.requests[-1]
    assert len(receiver.requests) == 2
    # Verify as a receiver would (Standard Webhooks): HMAC-SHA256 over id.timestamp.body.
    message_id, timestamp = headers["Webhook-Id"], headers["Webhook-Timestamp"]
    expected = base64.b64encode(hmac.new(WEBHOOK_SECRET.encode(),
                                         f"{message_id}.{timestamp}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    assert headers["Webhook-Signature"] == f"v1,{expected}"
    assert abs(int(timestamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["type"] == "advisor.joined"
    data = payload["data"]
    assert data["event_id"] == message_id  # the same id on every attempt: receivers dedupe
    assert (data["tenant"], data["tenant_name"], data["advisor_name"], data["reason"]) == (
        TENANT, "Muster GmbH", "Bob Advisor", "Ticket 4711")
    assert "recipients" not in data and WEBHOOK_SECRET not in body.decode()


def test_delivery_is_given_up_after_the_last_attempt(bridge, webhook):
    receiver = webhook(statuses=[500, 500, 500])
    notifications = Notifications(db=bridge.services.db, issuer="http://127.0.0.1:8000",
                                  webhook=WebhookConfig(receiver.url, WEBHOOK_SECRET),
                                  max_attempts=2, backoff_seconds=0)
    bridge.join("bob")
    with bridge.services.db.transaction() as session:
        notifications.membership_changed(session, "created", session.get(
            Membership, bridge.membership_id("bob")), utcnow())
    assert notifications.work_once() == 0
    assert notifications.work_once() == 0
    item = outbox(bridge)[0]
    assert item.attempts == 2 and item.failed_at is not None and item.done_at is None
    assert notifications.work_once() == 0 and len(receiver.requests) == 2


def test_unreachable_smtp_server_is_retried(bridge_with):
    bridge = bridge_with(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none",
                         smtp_from="advisors@konfipay.example")
    with bridge.services.db.transaction() as session:
        session.get(Tenant, TENANT).notification_emails = "it@muster.example"
    bridge.join("bob")
    assert deliver(bridge) == 0
    item = outbox(bridge)[0]
    assert item.attempts == 1 and item.last_error.startswith("SMTP: ConnectionRefusedError")


def test_background_worker_delivers(notifying, smtp_server):
    notifying.services.start_background()
    try:
        notifying.join("bob")
        assert smtp_server.event.wait(15), "no mail within 15 s"
    finally:
        notifying.services.stop_background()
    assert outbox(notifying)[0].done_at is not None


def test_names_cannot_inject_mail_headers(notifying, smtp_server):
    payload = {"type": "advisor.joined", "at": "2026-11-26T10:00:00Z", "tenant": TENANT,
               "tenant_name": "Muster\r\nBcc: evil@example.com", "advisor": "x",
               "advisor_name": "Eve\r\nBcc: evil@example.com", "reason": "a\nb",
               "expires_at": None, "help_page": "http://h/", "recipients": ["it@muster.example"]}
    message = notifying.services.notifications.email_message(payload)
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None
    assert parsed["To"] == "it@muster.example"


@pytest.mark.parametrize("change,kind,reason,event", [
    ("created", "temporary", None, "advisor.joined"),
    ("created", "permanent", None, "advisor.permanent_assigned"),
    ("created", "guest", None, None),
    ("ended", "temporary", "left", "advisor.left"),
    ("ended", "temporary", "removed_by_tenant", "advisor.removed"),
    ("ended", "permanent", "removed_by_support", "advisor.removed"),
    ("ended", "temporary", "expired", "advisor.expired"),
    ("ended", "temporary", "upstream_account_ended", "advisor.removed"),
    ("ended", "temporary", "superseded", None),
])
def test_which_changes_are_told(change, kind, reason, event):
    membership = Membership(kind=kind, end_reason=reason)
    assert event_for(change, membership) == event


@pytest.mark.parametrize("text,addresses", [
    ("", []),
    ("a@b.example", ["a@b.example"]),
    ("a@b.example; c@d.example\nE@F.example, a@b.example", ["a@b.example", "c@d.example",
                                                             "E@F.example"]),
])
def test_address_lists(text, addresses):
    assert parse_addresses(text) == addresses


@pytest.mark.parametrize("text", ["no-at", "a@b", "@b.example", "ä@b.example", "<a@b.example>"])
def test_bad_addresses(text):
    with pytest.raises(ValueError):
        parse_addresses(text)


def test_signature_helper_matches_the_standard_webhooks_example():
    # The example of the Standard Webhooks specification (whsec_ secrets are base64).
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    headers = sign_webhook(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert WebhookConfig("https://x.example", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").key == key


@pytest.mark.parametrize("changes,key", [
    ({"smtp_host": "mail.example", "smtp_from": ""}, "smtp_from"),
    ({"smtp_host": "mail.example", "smtp_from": "x@y.example", "smtp_security": "ssl"},
     "smtp_security"),
    ({"smtp_host": "mail.example", "smtp_from": "x@y.example", "smtp_port": 0}, "smtp_port"),
    ({"smtp_host": "mail.example", "smtp_from": "x@y.example", "smtp_username": "u"},
     "smtp_password"),
    ({"webhook_url": "ftp://hooks.example/"}, "webhook_url"),
    ({"webhook_url": "https://hooks.example/", "webhook_secret": "short"}, "webhook_secret"),
    ({"web_timezone": "Mars/Olympus"}, "web_timezone"),
    ({"app_client_id": ""}, "app_client_id"),
])
def test_notification_settings_are_validated(settings, changes, key):
    with pytest.raises(SettingsError) as error:
        settings.replace(**changes)
    assert error.value.key == key


@pytest.mark.parametrize("changes,key", [
    ({"smtp_host": "mail.example", "smtp_from": "x@y.example", "smtp_security": "none"},
     "smtp_security"),
    ({"webhook_url": "http://hooks.example/", "webhook_secret": WEBHOOK_SECRET}, "webhook_url"),
])
def test_production_refuses_clear_text_notifications(settings, changes, key):
    production = {"mode": "production", "issuer": "https://bridge.example",
                  "upstream_issuer": "https://sso.example/realms/k", "secret_key": "s" * 40}
    with pytest.raises(SettingsError) as error:
        settings.replace(**production, **changes)
    assert error.value.key == key


def test_secrets_stay_out_of_reprs(settings):
    configured = settings.replace(smtp_host="mail.example", smtp_from="x@y.example",
                                  smtp_username="u", smtp_password="smtp-password-123",
                                  webhook_url="https://hooks.example/", webhook_secret=WEBHOOK_SECRET)
    assert "smtp-password-123" not in repr(configured)
    assert WEBHOOK_SECRET not in repr(configured)
