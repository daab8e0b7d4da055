"""Push delivery (RFC 8935) cannot reach inside the network (issue 10, item 7).

A receiver chooses its push endpoint and the Authorization header sent there. Endpoints on
loopback, private, link-local, metadata, CGNAT, multicast or reserved addresses (also in
IPv4-mapped, NAT64 and 6to4 form), with user information or a fragment, the bridge itself,
hosts outside the allow-list and, in production, plain http are refused when a stream is
created or changed, and on the resolved address when connecting.

No test touches the internet: names are answered by a fake resolver (anything else fails
to resolve), and the public addresses it hands out are never connected to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from werkzeug.serving import make_server

from conftest import RS_CLIENT_ID, TENANT, Bridge, ServerThread, build_app
from idp_bridge.settings import Settings, SettingsError
from idp_bridge.ssf.egress import PushPolicy, PushTargetRefused, is_public_address
from idp_bridge.ssf.rfc8417 import SESSION_REVOKED
from idp_bridge.storage.db import utcnow
from idp_bridge.storage.models import SsfStream

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
#: A public address (never connected to: the tests that resolve names to it only register).
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
_real_getaddrinfo = socket.getaddrinfo


class FakeResolver:
    """socket.getaddrinfo for the test: IP literals as the system answers them, names from
    ``answers`` only (a name not there does not resolve), every lookup recorded."""

    def __init__(self):
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(name)
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        except ValueError:
            pass
        self.lookups.append(name)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0)
        result = []
        for address in self.answers[name]:
            if ipaddress.ip_address(address).version == 4:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            else:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
        return result


@pytest.fixture
def resolver(monkeypatch):
    fake = FakeResolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def bridge_with(settings, upstream, **changes) -> Bridge:
    app = build_app(settings.replace(**changes))
    return Bridge(app, app.test_client(), upstream)


def create(bridge, url, **delivery):
    return bridge.client.post("/ssf/stream", auth=(RS_CLIENT_ID, bridge.rs_secret), json={
        "delivery": {"method": PUSH, "endpoint_url": url, **delivery}})


def stream_count(bridge) -> int:
    with bridge.services.db.read() as session:
        return session.execute(select(func.count()).select_from(SsfStream)).scalar_one()


def revoke_one(bridge) -> None:
    bridge.join("bob")
    mid = bridge.membership_id("bob")
    assert bridge.api("delete", f"/api/tenants/{TENANT}/memberships/{mid}").status_code == 204


def pending(bridge, stream_id) -> dict:
    sets, _ = bridge.services.transmitter.pending(stream_id, RS_CLIENT_ID, 10, utcnow(),
                                                  touch=False)
    return sets


class PushReceiver:
    def __init__(self, status=202, headers=()):
        self.received, self.status, self.extra = [], status, list(headers)

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.received.append(environ["wsgi.input"].read(length).decode())
        start_response(f"{self.status} X", [("Content-Length", "0"), *self.extra])
        return [b""]


# --- registration: a table of endpoints that are refused ---

BAD_ENDPOINTS = [
    # loopback, in every spelling
    "http://127.0.0.1:9/events", "http://127.9.9.9/", "http://[::1]/events",
    "http://localhost/events", "http://LOCALHOST./events", "http://2130706433/",
    "http://0x7f000001/", "http://0x7f.1/", "http://127.1/", "http://017700000001/",
    # private (RFC 1918), unique local (RFC 4193), CGNAT, link-local and metadata
    "http://10.0.0.5/", "http://172.16.3.4/", "http://192.168.1.10/", "http://[fd00::5]/",
    "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
    # multicast, unspecified, broadcast, reserved, documentation, benchmarking
    "http://224.0.0.1/", "http://[ff02::1]/", "http://0.0.0.0/", "http://[::]/",
    "http://255.255.255.255/", "http://240.0.0.1/", "http://192.0.2.10/",
    "http://198.18.0.1/", "http://[2001:db8::1]/", "http://[fec0::1]/",
    # IPv4-mapped, NAT64, 6to4 and IPv4-compatible forms of internal addresses
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a00:5]/",
    "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://[2002:c0a8:10a::1]/",
    "http://[::127.0.0.1]/", "http://[64:ff9b:1::a00:5]/",
    # names resolving to internal addresses, partly internal, or not at all
    "http://internal.example/events", "http://mixed.example/events",
    "http://metadata.example/", "http://no-such-host.example/events",
    # user information, fragments, odd syntax, other schemes, this bridge
    f"http://user:pw@{PUBLIC_V4}/events", f"http://user@{PUBLIC_V4}/events",
    f"http://{PUBLIC_V4}/events#frag", f"http://{PUBLIC_V4}/events#",
    f"http://public.example\\@{PUBLIC_V4}/", f"http://public.example /x",
    "http://%31%32%37.0.0.1/", "http://[fe80::1%25eth0]/", "http://b\u00fccher.example/",
    f"http://{PUBLIC_V4}:0/", f"http://{PUBLIC_V4}:99999/", "ftp://public.example/",
    "https:///events", "//public.example/events", "http://public.example/" + "a" * 2000,
    "javascript:alert(1)", "http://127.0.0.1:8000/ssf/stream",
]


@pytest.mark.db_independent
@pytest.mark.parametrize("url", BAD_ENDPOINTS)
def test_internal_and_malformed_push_endpoints_are_refused(bridge, resolver, url):
    resolver.answers.update({"internal.example": ["10.1.2.3"],
                             "mixed.example": [PUBLIC_V4, "127.0.0.1"],
                             "metadata.example": ["169.254.169.254"],
                             "public.example": [PUBLIC_V4]})
    response = create(bridge, url, authorization_header="Bearer receiver-chosen")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert response.json["error_description"].startswith("endpoint_url")
    assert url not in response.json["error_description"]
    assert stream_count(bridge) == 0
    assert bridge.services.pusher.deliver_once() is None  # nothing that could be pushed to


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/events", "http://internal.example/",
                                 "http://[::ffff:10.0.0.1]/"])
def test_changing_a_stream_to_an_internal_endpoint_is_refused(bridge, resolver, url):
    resolver.answers["internal.example"] = ["192.168.7.7"]
    auth = (RS_CLIENT_ID, bridge.rs_secret)
    stream_id = bridge.client.post("/ssf/stream", auth=auth,
                                   json={"delivery": {"method": POLL}}).json["stream_id"]
    before = bridge.client.get(f"/ssf/stream?stream_id={stream_id}", auth=auth).json
    response = bridge.client.patch("/ssf/stream", auth=auth, json={
        "stream_id": stream_id, "delivery": {"method": PUSH, "endpoint_url": url}})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert bridge.client.get(f"/ssf/stream?stream_id={stream_id}", auth=auth).json == before


@pytest.mark.db_independent
@pytest.mark.parametrize("header", ["Bearer a\r\nX-Injected: 1", "Bearer a\nb", "\u00e4bc",
                                    " Bearer leading-space", "Bearer x\x00", "x" * 4001])
def test_authorization_headers_must_be_header_values(bridge, resolver, header):
    resolver.answers["public.example"] = [PUBLIC_V4]
    response = create(bridge, "http://public.example/events", authorization_header=header)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert stream_count(bridge) == 0


@pytest.mark.parametrize("url", ["http://public.example/events", f"https://{PUBLIC_V4}:8443/e",
                                 f"https://[{PUBLIC_V6}]/events", "https://v6.example/events?x=1"])
def test_public_endpoints_are_accepted(bridge, resolver, url):
    resolver.answers.update({"public.example": [PUBLIC_V4], "v6.example": [PUBLIC_V6]})
    response = create(bridge, url)
    assert response.status_code == 201
    assert response.json["delivery"] == {"method": PUSH, "endpoint_url": url}
    assert stream_count(bridge) == 1


# --- production mode ---

@pytest.fixture
def production_bridge(settings, upstream, resolver):
    resolver.answers.update({"receiver.example": [PUBLIC_V4], "bridge.example": [PUBLIC_V4]})
    return bridge_with(settings, upstream, mode="production", issuer="https://bridge.example",
                       upstream_issuer="https://idp.example/realms/advisors")


@pytest.mark.parametrize("url,problem", [
    ("http://receiver.example/events", "https"),
    (f"http://{PUBLIC_V4}/events", "https"),
    ("https://bridge.example/ssf/stream", "this bridge"),
    ("https://BRIDGE.example.:8443/other-port", "this bridge"),
    ("https://localhost/events", "public"),
    ("https://127.0.0.1/events", "public"),
])
def test_production_needs_https_and_not_the_bridge(production_bridge, url, problem):
    response = create(production_bridge, url)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert problem in response.json["error_description"]
    assert stream_count(production_bridge) == 0


def test_production_accepts_a_public_https_endpoint(production_bridge):
    response = create(production_bridge, "https://receiver.example/events")
    assert response.status_code == 201
    assert stream_count(production_bridge) == 1


def test_loopback_opt_in_is_refused_in_production(settings):
    environ = {"IDP_BRIDGE_SSF_PUSH_ALLOW_LOOPBACK": "true"}
    values = {"mode": "production", "issuer": "https://bridge.example",
              "upstream_issuer": "https://idp.example/realms/advisors",
              "secret_key": secrets.token_urlsafe(32),
              "key_encryption_key": Fernet.generate_key().decode(),
              "database_url": settings.database_url}
    with pytest.raises(SettingsError) as exc:
        Settings.load(values, environ=environ)
    assert exc.value.key == "ssf_push_allow_loopback"
    assert "IDP_BRIDGE_SSF_PUSH_ALLOW_LOOPBACK" in str(exc.value)
    assert Settings.load({**values, "mode": "test"}, environ=environ).ssf_push_allow_loopback


def test_allowed_hosts_setting(settings):
    environ = {"IDP_BRIDGE_SSF_PUSH_ALLOWED_HOSTS": "events.example, *.receivers.example"}
    loaded = Settings.load({"mode": "test", "issuer": settings.issuer,
                            "upstream_issuer": settings.upstream_issuer,
                            "secret_key": settings.secret_key,
                            "key_encryption_key": settings.key_encryption_key}, environ=environ)
    assert loaded.ssf_push_allowed_hosts == ("events.example", "*.receivers.example")
    for bad in ("http://events.example", "*", "*.", "ev ents.example", "a.*.example"):
        with pytest.raises(SettingsError) as exc:
            settings.replace(ssf_push_allowed_hosts=(bad,))
        assert exc.value.key == "ssf_push_allowed_hosts"


# --- delivery: the resolved address is checked when connecting ---

@pytest.fixture
def loopback_listener():
    """A listening socket on loopback that nothing should ever connect to."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield listener
    listener.close()


def assert_never_connected(listener):
    with pytest.raises(BlockingIOError):
        connection, _ = listener.accept()
        connection.close()


@pytest.mark.parametrize("rebound", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_dns_rebinding_to_loopback_is_not_connected(bridge, resolver, loopback_listener, rebound):
    port = loopback_listener.getsockname()[1]
    resolver.answers["rebind.example"] = [PUBLIC_V4]  # public when the stream is registered
    created = create(bridge, f"http://rebind.example:{port}/events",
                     authorization_header="Bearer receiver-chosen")
    assert created.status_code == 201
    stream_id = created.json["stream_id"]
    resolver.answers["rebind.example"] = [rebound]  # ... loopback when the bridge connects
    resolver.lookups.clear()
    revoke_one(bridge)
    assert bridge.services.pusher.deliver_once() == 0
    assert resolver.lookups == ["rebind.example"]  # checked on the address it resolved to
    assert_never_connected(loopback_listener)
    assert len(pending(bridge, stream_id)) == 1  # not lost: still pending


@pytest.fixture
def loopback_bridge(settings, upstream):
    return bridge_with(settings, upstream, ssf_push_allow_loopback=True)


def test_redirects_are_not_followed(loopback_bridge, resolver):
    target = PushReceiver()
    with ServerThread(target) as inner:
        redirector = PushReceiver(status=307, headers=[
            ("Location", f"http://127.0.0.1:{inner.port}/events")])
        with ServerThread(redirector) as outer:
            created = create(loopback_bridge, f"http://127.0.0.1:{outer.port}/events")
            assert created.status_code == 201
            revoke_one(loopback_bridge)
            assert loopback_bridge.services.pusher.deliver_once() == 0
    assert len(redirector.received) == 1
    assert target.received == []
    assert len(pending(loopback_bridge, created.json["stream_id"])) == 1


def test_allow_list_is_honoured_at_registration_and_delivery(settings, upstream, resolver):
    bridge = bridge_with(settings, upstream, ssf_push_allow_loopback=True,
                         ssf_push_allowed_hosts=("events.example", "*.receivers.example"))
    for name in ("events.example", "a.receivers.example", "receivers.example", "other.example",
                 "events.example.attacker.example", "xreceivers.example"):
        resolver.answers[name] = ["127.0.0.1"]
    allowed, listed_elsewhere = PushReceiver(), PushReceiver()
    with ServerThread(allowed) as good, ServerThread(listed_elsewhere) as bad:
        for host in ("other.example", "receivers.example", "events.example.attacker.example",
                     "xreceivers.example", "127.0.0.1"):
            refused = create(bridge, f"http://{host}:{bad.port}/events")
            assert refused.status_code == 400
            assert refused.json["error"] == "invalid_request"
            assert "allowed push hosts" in refused.json["error_description"]
        assert stream_count(bridge) == 0
        assert create(bridge, f"http://a.receivers.example:{good.port}/e").status_code == 201
        assert create(bridge, f"http://events.example:{good.port}/events").status_code == 201
        # A stream stored before the allow-list was configured is not pushed to either.
        with bridge.services.db.transaction() as session:
            session.add(SsfStream(stream_id="0" * 32, client_id=RS_CLIENT_ID,
                                  delivery_method=PUSH,
                                  endpoint_url=f"http://other.example:{bad.port}/events",
                                  events_requested=[SESSION_REVOKED], start_after_id=0,
                                  created_at=utcnow(), last_seen_at=utcnow()))
        revoke_one(bridge)
        assert bridge.services.pusher.deliver_once() == 2
    assert len(allowed.received) == 2
    assert listed_elsewhere.received == []
    assert len(pending(bridge, "0" * 32)) == 1


def test_a_name_resolving_to_loopback_is_pushed_to_with_the_opt_in(loopback_bridge, resolver):
    """The control of the rebinding test: the same kind of name, resolved by the same fake
    resolver, is connected to when loopback is allowed."""
    resolver.answers["rebind.example"] = ["127.0.0.1"]
    receiver = PushReceiver()
    with ServerThread(receiver) as server:
        assert create(loopback_bridge, f"http://rebind.example:{server.port}/e").status_code == 201
        revoke_one(loopback_bridge)
        assert loopback_bridge.services.pusher.deliver_once() == 1
    assert len(receiver.received) == 1


# --- TLS is verified against the endpoint's name, not the address connected to ---

def _certificates(tmp_path, name):
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test push CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "key.pem")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@pytest.mark.parametrize("url_host,delivered", [("receiver.example", 1),
                                                ("impostor.example", 0)])
def test_tls_is_verified_against_the_host_name(loopback_bridge, resolver, tmp_path, url_host,
                                               delivered):
    ca_path, cert_path, key_path = _certificates(tmp_path, "receiver.example")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    receiver = PushReceiver()
    server = make_server("127.0.0.1", 0, receiver, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        resolver.answers.update({"receiver.example": ["127.0.0.1"],
                                 "impostor.example": ["127.0.0.1"]})
        pusher = loopback_bridge.services.pusher
        pusher._http.verify = str(ca_path)  # trust the test CA (instead of the system's)
        created = create(loopback_bridge, f"https://{url_host}:{server.server_port}/events")
        assert created.status_code == 201
        revoke_one(loopback_bridge)
        assert pusher.deliver_once() == delivered
    finally:
        server.shutdown()
        thread.join(5)
    assert len(receiver.received) == delivered


# --- the address rules themselves ---

@pytest.mark.parametrize("address,public", [
    (PUBLIC_V4, True), (PUBLIC_V6, True), ("1.1.1.1", True), ("2606:4700::1111", True),
    ("64:ff9b::5db8:d70e", True),  # NAT64 form of a public address
    ("2002:5db8:d70e::1", True),   # 6to4 form of a public address
    ("::ffff:93.184.215.14", True),
    ("127.0.0.1", False), ("::1", False), ("10.255.255.255", False), ("172.31.0.1", False),
    ("192.168.0.1", False), ("100.127.255.254", False), ("169.254.169.254", False),
    ("fd12:3456::1", False), ("fe80::1", False), ("ff05::2", False), ("239.255.255.250", False),
    ("0.0.0.0", False), ("::", False), ("192.0.0.9", False), ("192.88.99.1", False),
    ("2001::1", False), ("2001:db8::1", False), ("100::1", False), ("::ffff:169.254.169.254", False),
    ("64:ff9b::a9fe:a9fe", False), ("2002:a00:1::", False), ("not an address", False),
])
def test_public_address_rules(address, public):
    assert is_public_address(address) is public


def test_loopback_opt_in_admits_loopback_only():
    assert is_public_address("127.0.0.1", allow_loopback=True)
    assert is_public_address("::ffff:127.0.0.1", allow_loopback=True)
    assert is_public_address("::1", allow_loopback=True)
    for address in ("10.0.0.1", "169.254.169.254", "fd00::1", "0.0.0.0"):
        assert not is_public_address(address, allow_loopback=True)


def test_policy_refuses_without_echoing_the_url():
    policy = PushPolicy(https_only=True, own_url="https://bridge.example")
    for url in ("http://secret-name.example/x", "https://user:hunter2@public.example/x",
                "https://bridge.example/x"):
        with pytest.raises(PushTargetRefused) as exc:
            policy.check_url(url)
        assert "secret-name" not in str(exc.value) and "hunter2" not in str(exc.value)
        assert "bridge.example" not in str(exc.value)


# --- a receiver cannot hold the pusher ---

class TricklingReceiver:
    """Reads a request, then answers its status line one byte every 20 ms, never finishing
    it (a receiver that cut short after a complete "202" would have accepted the SET)."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.recv(65536)
                try:
                    connection.sendall(b"HTTP/1.1")
                    while not self.stop.wait(0.02):
                        connection.sendall(b" ")
                except OSError:
                    pass  # the bridge gave up: what this test wants

    def close(self):
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


def test_a_trickling_receiver_cannot_hold_the_pusher(loopback_bridge):
    import dataclasses

    from idp_bridge.ssf.rfc8935 import Pusher

    services = loopback_bridge.services
    policy = dataclasses.replace(services.transmitter.push_policy, read_timeout=60.0,
                                 request_deadline=0.5)
    pusher = Pusher(services.transmitter, services.notifier, policy=policy)
    receiver = TricklingReceiver()
    try:
        created = create(loopback_bridge, f"http://127.0.0.1:{receiver.port}/events")
        assert created.status_code == 201
        revoke_one(loopback_bridge)
        result = {}
        worker = threading.Thread(target=lambda: result.update(accepted=pusher.deliver_once()))
        worker.start()
        worker.join(30)  # an upper bound only: without the deadline this never returns
        assert not worker.is_alive()
    finally:
        receiver.close()
    assert result == {"accepted": 0}
    assert receiver.connections == 1
    assert len(pending(loopback_bridge, created.json["stream_id"])) == 1
