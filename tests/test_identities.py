"""No identity is built by joining strings (issue 10 item 1).

A membership was found by the key ``f"{tenant}|{subject}"``, so subject ``bob2`` asking for
tenant ``30005|partner`` received the tokens of subject ``partner|bob2`` in tenant ``30005``.
Memberships and user groups are now unique and looked up by their columns, and the tenant
is validated against the tenants table first: at the exchange, leave (API and page), "Open",
guests, the Keycloak mirror. Subjects and tenants here contain ``|``, ``/``, ``%``, ``:``
and spaces.
"""

from __future__ import annotations

import copy
import uuid
from urllib.parse import quote

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from conftest import TENANT, active_memberships
from idp_bridge.services.operator import add_tenant
from idp_bridge.domain.errors import Conflict, NotFound
from idp_bridge.domain.guests import name_key
from idp_bridge.storage.db import Database, utcnow
from idp_bridge.storage.models import (AuditEvent, Base, Membership, RefreshToken, Tenant,
                                       TokenFamily, UserGroup)
from idp_bridge.upstream.keycloak import KeycloakAdmin, KeycloakMirror, UnmirrorableTenant
from test_pages_helpers import EN, post_form_page, signed_in

PARTNER_TENANT = "30005"
SEPARATORS = ["|", "/", "%", ":", " "]
APP_URL = "https://app.konfipay.example/tenants/{tenant}/open"


@pytest.fixture
def odd_users(upstream):
    """Advisors ``bob2`` and ``partner<sep>bob2`` (one per separator) at the upstream."""
    saved = copy.deepcopy(upstream.users)
    upstream.users["bob2"] = {"sub": "bob2", "name": "Bob Two", "email": "bob2@advisors.example",
                              "realm_roles": ["advisor"], "groups": []}
    for i, sep in enumerate(SEPARATORS):
        upstream.users[f"partner{i}"] = {
            "sub": f"partner{sep}bob2", "name": f"Partner {i}",
            "email": f"partner{i}@advisors.example", "realm_roles": ["advisor"], "groups": []}
    yield
    upstream.users.clear()
    upstream.users.update(saved)


def partner_user(sep: str) -> str:
    return f"partner{SEPARATORS.index(sep)}"


def counts(bridge) -> dict:
    with bridge.services.db.read() as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Membership, TokenFamily, RefreshToken, AuditEvent)}


def membership_row(bridge, membership_id):
    with bridge.services.db.read() as session:
        m = session.get(Membership, membership_id)
        return (m.tenant_id, m.advisor_subject, m.kind, m.grant_id, m.ended_at)


def add_raw_tenant(bridge, tenant_id: str, name: str = "Odd") -> None:
    """A tenant row written around add_tenant's id rule: the lookups must hold regardless."""
    with bridge.services.db.transaction() as session:
        session.add(Tenant(id=tenant_id, name=name, created_at=utcnow()))


@pytest.fixture
def partner(bridge, odd_users):
    """Per separator: ``partner<sep>bob2`` holds a membership of tenant 30005."""
    add_tenant(bridge.services.db, PARTNER_TENANT, "Partner GmbH")

    def make(sep: str) -> str:
        code = bridge._code_direct(PARTNER_TENANT)
        response = bridge.exchange(partner_user(sep), tenant=PARTNER_TENANT, code=code)
        assert response.status_code == 200, response.json
        (m,) = [m for m in active_memberships(bridge, PARTNER_TENANT)
                if m.advisor_subject == f"partner{sep}bob2"]
        return m.id

    return make


# --- the exchange -------------------------------------------------------------------------

@pytest.mark.parametrize("sep", SEPARATORS)
def test_a_tenant_joined_with_a_subject_part_is_an_unknown_tenant(bridge, partner, sep):
    """The reported attack: bob2 asks for tenant ``30005|partner`` without a code."""
    mine = partner(sep)
    before, row = counts(bridge), membership_row(bridge, mine)
    response = bridge.exchange("bob2", tenant=f"{PARTNER_TENANT}{sep}partner")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert response.json["error_description"] == "unknown tenant"
    assert "access_token" not in response.json and "refresh_token" not in response.json
    assert counts(bridge) == before
    assert membership_row(bridge, mine) == row


@pytest.mark.parametrize("sep", SEPARATORS)
def test_even_an_existing_odd_tenant_gives_nobody_elses_membership(bridge, partner, sep):
    mine = partner(sep)
    add_raw_tenant(bridge, f"{PARTNER_TENANT}{sep}partner")
    before, row = counts(bridge), membership_row(bridge, mine)
    response = bridge.exchange("bob2", tenant=f"{PARTNER_TENANT}{sep}partner")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert response.json["error_description"].startswith("access_code is required")
    assert counts(bridge) == before
    assert membership_row(bridge, mine) == row


@pytest.mark.parametrize("sep", SEPARATORS)
def test_subjects_with_separators_get_their_own_membership_only(bridge, partner, sep):
    mine = partner(sep)
    again = bridge.exchange(partner_user(sep), tenant=PARTNER_TENANT)
    assert again.status_code == 200, again.json
    introspection = bridge.introspect(again.json["access_token"]).json
    assert introspection["sub"] == f"partner{sep}bob2"
    assert introspection["tenant"] == PARTNER_TENANT
    # bob2 has no membership of 30005 and gets none from partner<sep>bob2's.
    refused = bridge.exchange("bob2", tenant=PARTNER_TENANT)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    assert [m.id for m in active_memberships(bridge, PARTNER_TENANT)] == [mine]


def test_pairs_that_joined_keys_confused_are_two_memberships(bridge):
    """(``a|b``, ``c``) and (``a``, ``b|c``) were one key, ``a|b|c``: a unique-key clash."""
    add_raw_tenant(bridge, "a|b")
    add_raw_tenant(bridge, "a")
    s = bridge.services
    with s.db.transaction() as session:
        for tenant_id, subject in (("a|b", "c"), ("a", "b|c")):
            s.memberships.create(session, s.memberships.tenant(session, tenant_id),
                                 subject=subject, name=None, kind="temporary",
                                 created_by="test", actor_role="system", now=utcnow())
    with s.db.read() as session:
        assert s.memberships.active(session, "a|b", "c").advisor_subject == "c"
        assert s.memberships.active(session, "a", "b|c").tenant_id == "a"
        assert s.memberships.active(session, "a|b", "b|c") is None
        assert s.memberships.active(session, "a", "c") is None
        with pytest.raises(NotFound):
            s.memberships.active(session, "a|b|c", "c")


def test_one_active_membership_per_tenant_and_subject_still_holds(bridge):
    add_raw_tenant(bridge, "t:1 /%")
    s = bridge.services
    with pytest.raises(IntegrityError):
        with s.db.transaction() as session:
            tenant = s.memberships.tenant(session, "t:1 /%")
            for _ in range(2):
                s.memberships.create(session, tenant, subject="x|y", name=None,
                                     kind="temporary", created_by="test",
                                     actor_role="system", now=utcnow())
    assert active_memberships(bridge, "t:1 /%") == []


# --- leave and open on another's behalf ----------------------------------------------------

@pytest.mark.parametrize("sep", SEPARATORS)
def test_leave_through_the_api_cannot_end_anothers_membership(bridge, partner, sep):
    mine = partner(sep)
    row = membership_row(bridge, mine)
    response = bridge.api("delete", f"/api/me/memberships/{quote(f'{PARTNER_TENANT}{sep}partner', safe='')}",
                          user="bob2")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    add_raw_tenant(bridge, f"{PARTNER_TENANT}{sep}partner")
    if sep != "/":  # a tenant id with "/" cannot even be one path segment of the API
        response = bridge.api(
            "delete", f"/api/me/memberships/{quote(f'{PARTNER_TENANT}{sep}partner', safe='')}",
            user="bob2")
        assert response.status_code == 404
        assert response.json["error"] == "not_found"
    assert membership_row(bridge, mine) == row


@pytest.mark.parametrize("sep", SEPARATORS)
def test_leave_page_cannot_end_anothers_membership(app, bridge, partner, sep):
    mine = partner(sep)
    row = membership_row(bridge, mine)
    add_raw_tenant(bridge, f"{PARTNER_TENANT}{sep}partner")
    bob2 = signed_in(app, "bob2")
    path = f"/advisor/tenants/{quote(f'{PARTNER_TENANT}{sep}partner', safe='')}/leave"
    # bob2 has no access to the crafted tenant: like a stale Leave, back to his page with
    # the message, and nothing ends.
    # (A "/" in the tenant matches no route at all: 404.)
    for response in (bob2.get(path, headers=EN), post_form_page(bob2, path, headers=EN)):
        assert (response.status_code, response.headers.get("Location")) in (
            (303, "/advisor"), (404, None))
    assert membership_row(bridge, mine) == row


@pytest.mark.parametrize("sep", SEPARATORS)
def test_open_cannot_mint_from_anothers_membership(bridge_with, odd_users, sep):
    b = bridge_with(app_url=APP_URL)
    add_tenant(b.services.db, PARTNER_TENANT, "Partner GmbH")
    joined = b.exchange(partner_user(sep), tenant=PARTNER_TENANT,
                        code=b._code_direct(PARTNER_TENANT))
    assert joined.status_code == 200, joined.json
    add_raw_tenant(b, f"{PARTNER_TENANT}{sep}partner")
    before = counts(b)
    bob2 = signed_in(b.app, "bob2")
    for tenant in (f"{PARTNER_TENANT}{sep}partner", PARTNER_TENANT):
        response = post_form_page(bob2, f"/advisor/tenants/{quote(tenant, safe='')}/open",
                                  headers=EN)
        # No membership of bob2's: like a stale Open, back to his page; nothing handed over
        # (a "/" in the tenant matches no route: 404).
        assert (response.status_code, response.headers.get("Location")) in (
            (303, "/advisor"), (404, None))
        assert "handoff-form" not in response.text
    assert counts(b) == before


# --- guests: user group names ------------------------------------------------------------

def test_group_names_are_unique_per_tenant_by_both_columns(bridge):
    s = bridge.services
    add_raw_tenant(bridge, "A|x")
    add_raw_tenant(bridge, "A")
    now = utcnow()
    with s.db.transaction() as session:
        # Old keys: "A|x" + "|" + "y" == "A" + "|" + "x|y": refused as a duplicate.
        first = s.guests.create_group(session, "A|x", "y", [], by="test", now=now)
        second = s.guests.create_group(session, "A", "x|y", [], by="test", now=now)
        odd = s.guests.create_group(session, "A", "a/b %c: d", [], by="test", now=now)
    assert len({first.id, second.id, odd.id}) == 3
    with s.db.read() as session:
        assert [g.name for g in s.guests.groups(session, "A|x")] == ["y"]
        assert sorted(g.name for g in s.guests.groups(session, "A")) == ["a/b %c: d", "x|y"]


@pytest.mark.parametrize("existing, clash", [
    ("Buchhaltung", "BUCHHALTUNG"),
    ("Straße", "STRASSE"),
    ("Lohn", "Ｌｏｈｎ"),  # full-width letters: NFKC
    ("a|b", "A|B"),
])
def test_group_names_differing_only_in_case_or_form_clash(bridge, existing, clash):
    s = bridge.services
    with s.db.transaction() as session:
        s.guests.create_group(session, TENANT, existing, [], by="test", now=utcnow())
    with pytest.raises(Conflict):
        with s.db.transaction() as session:
            s.guests.create_group(session, TENANT, clash, [], by="test", now=utcnow())
    with s.db.read() as session:
        assert [g.name for g in s.guests.groups(session, TENANT)] == [existing]
    assert name_key(existing) == name_key(clash)


def test_a_deleted_groups_name_is_free_again(bridge):
    s = bridge.services
    with s.db.transaction() as session:
        group = s.guests.create_group(session, TENANT, "x|y", [], by="test", now=utcnow())
    with s.db.transaction() as session:
        s.guests.delete_group(session, TENANT, group.id, by="test", now=utcnow())
    with s.db.transaction() as session:
        again = s.guests.create_group(session, TENANT, "X|Y", [], by="test", now=utcnow())
    assert again.id != group.id


def test_the_database_refuses_a_second_live_group_name(bridge):
    s = bridge.services
    with s.db.transaction() as session:
        s.guests.create_group(session, TENANT, "Team", [], by="test", now=utcnow())
    with pytest.raises(IntegrityError):
        with s.db.transaction() as session:  # around the domain's check
            now = utcnow()
            session.add(UserGroup(id=str(uuid.uuid4()), tenant_id=TENANT, name="team",
                                  name_key=name_key("team"), permissions=[], created_at=now,
                                  updated_at=now))


# --- the Keycloak mirror ----------------------------------------------------------------

class RecordingHttp:
    """A requests.Session stand-in that records the URLs the admin adapter calls."""

    def __init__(self):
        self.urls = []

    def post(self, url, **kwargs):
        return _Answer(200, {"access_token": "t", "expires_in": 300})

    def request(self, method, url, **kwargs):
        self.urls.append((method, url))
        return _Answer(204 if method in ("PUT", "DELETE") else 404, {})


class _Answer:
    def __init__(self, status_code, body):
        self.status_code, self._body = status_code, body

    def json(self):
        return self._body


@pytest.mark.parametrize("subject", ["a/b", "a%2Fb", "a|b", "a:b", "a b", "../../users"])
def test_keycloak_urls_quote_every_segment(subject):
    http = RecordingHttp()
    admin = KeycloakAdmin(base_url="http://kc.example", realm="konfipay", client_id="bridge",
                          client_secret="s" * 32, http=http)
    admin.set_group_membership(subject, "g/../1", True)
    admin.account_state(subject)
    base = "http://kc.example/admin/realms/konfipay"
    assert http.urls == [
        ("PUT", f"{base}/users/{quote(subject, safe='')}/groups/g%2F..%2F1"),
        ("GET", f"{base}/users/{quote(subject, safe='')}"),
    ]
    assert all(url.count("/") == base.count("/") + (4 if m == "PUT" else 2)
               for m, url in http.urls)


@pytest.mark.parametrize("sep", SEPARATORS)
def test_mirror_desires_only_the_exact_pair(bridge, partner, sep):
    partner(sep)
    mirror = KeycloakMirror(db=bridge.services.db, admin=None)
    assert mirror.desired(PARTNER_TENANT, f"partner{sep}bob2") is True
    assert mirror.desired(f"{PARTNER_TENANT}{sep}partner", "bob2") is False
    assert mirror.desired(PARTNER_TENANT, "bob2") is False


@pytest.mark.parametrize("tenant_id", ["a/b", "../admins", "a~b", ""])
def test_mirror_refuses_tenant_ids_that_are_not_one_group_segment(tenant_id):
    mirror = KeycloakMirror(db=None, admin=None)
    with pytest.raises(UnmirrorableTenant):
        mirror.group_path(tenant_id)
    assert mirror.group_path("10042") == "/tenants/10042/advisors"


# --- the migration ------------------------------------------------------------------------

@pytest.fixture
def empty_database_url(backend, tmp_path, request):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'before-0007.sqlite'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"m_{uuid.uuid4().hex[:16]}")


def test_upgrade_to_0007_keeps_memberships_and_groups(empty_database_url):
    db = Database(empty_database_url)
    try:
        with db.engine.begin() as connection:
            config = db.alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0006")
        t0 = utcnow().replace(microsecond=0, tzinfo=None)
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO tenants (id, name, created_at) VALUES "
                           "('10042', 'Muster', :t), ('20077', 'Beispiel', :t)"), {"t": t0})
            c.execute(text(
                "INSERT INTO memberships (id, tenant_id, advisor_subject, kind, grant_id, "
                "created_at, created_by, ended_at, active_key) VALUES "
                "('m1', '10042', 'bob', 'temporary', 'g1', :t, 'bob', NULL, '10042|bob'), "
                "('m2', '10042', 'bob', 'temporary', 'g2', :t, 'bob', :t, NULL), "
                "('m3', '20077', 'partner|bob', 'permanent', 'g3', :t, 'sam', NULL, "
                "'20077|partner|bob')"), {"t": t0})
            c.execute(text(
                "INSERT INTO user_groups (id, tenant_id, name, permissions, created_at, "
                "updated_at, deleted_at, active_name) VALUES "
                "('u1', '10042', 'Straße', '[]', :t, :t, NULL, '10042|straße'), "
                "('u2', '10042', 'Old', '[]', :t, :t, :t, NULL), "
                "('u3', '20077', 'Old', '[]', :t, :t, NULL, '20077|old')"), {"t": t0})
        db.upgrade()
        with db.engine.connect() as c:
            members = c.execute(text("SELECT id, tenant_id, advisor_subject, ended_at IS NULL "
                                     "FROM memberships ORDER BY id")).all()
            groups = c.execute(text("SELECT id, tenant_id, name, name_key FROM user_groups "
                                    "ORDER BY id")).all()
        assert [tuple(r) for r in members] == [("m1", "10042", "bob", True),
                                               ("m2", "10042", "bob", False),
                                               ("m3", "20077", "partner|bob", True)]
        assert [tuple(r) for r in groups] == [("u1", "10042", "Straße", "strasse"),
                                              ("u2", "10042", "Old", "old"),
                                              ("u3", "20077", "Old", "old")]
        columns = {c["name"] for c in inspect(db.engine).get_columns("memberships")}
        assert "active_key" not in columns
        with pytest.raises(IntegrityError):  # the new index holds on the kept rows
            with db.engine.begin() as c:
                c.execute(text(
                    "INSERT INTO memberships (id, tenant_id, advisor_subject, kind, grant_id, "
                    "created_at, created_by) VALUES ('m4', '10042', 'bob', 'temporary', 'g4', "
                    ":t, 'bob')"), {"t": t0})
        with pytest.raises(IntegrityError):
            with db.engine.begin() as c:
                c.execute(insert(UserGroup.__table__).values(
                    id="u4", tenant_id="10042", name="STRASSE", name_key="strasse",
                    permissions=[], created_at=utcnow(), updated_at=utcnow()))
    finally:
        db.dispose()


def test_migration_schema_equals_the_models_on_every_backend(new_database_url):
    db = Database(new_database_url())
    try:
        db.upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, Base.metadata) == []
        indexes = {i["name"]: i for i in inspect(db.engine).get_indexes("memberships")}
        assert indexes["uq_memberships_active_tenant_subject"]["unique"]
        groups = {i["name"]: i for i in inspect(db.engine).get_indexes("user_groups")}
        assert groups["uq_user_groups_live_tenant_name"]["column_names"] == ["tenant_id",
                                                                             "name_key"]
    finally:
        db.dispose()
