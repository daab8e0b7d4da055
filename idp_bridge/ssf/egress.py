"""Where push delivery (RFC 8935) may connect: receivers on public addresses only.

A receiver names its push endpoint and the Authorization header sent with every SET, so an
unchecked endpoint makes the bridge a blind SSRF client into its own network (and a port-scan
oracle). :class:`PushPolicy` decides which endpoints are acceptable:

- the URL: ``https`` (``http`` too outside production mode), a DNS name or an IP literal,
  no user information, no fragment, printable ASCII, not the bridge's own host, and among
  ``ssf_push_allowed_hosts`` when that allow-list is set;
- the addresses: *every* address the host resolves to must be public (not loopback,
  private, unique-local, link-local including the 169.254.169.254 metadata service, shared
  CGNAT, multicast, unspecified, documentation, benchmarking or reserved, nor an
  IPv4-mapped, NAT64 or 6to4 form of one). Only ``ssf_push_allow_loopback`` (tests and the
  demo; refused in production) admits loopback.

The endpoint is checked when a stream is created or changed, and again on every new
connection by :meth:`PushPolicy.session`'s connection class: it resolves the host once,
checks every address, connects to a checked address itself (no second resolution, so DNS
rebinding between the check and the connection cannot bypass it), checks the socket's peer
address and verifies TLS against the original host name. That session ignores proxy and
credential settings of the environment, and every request must be answered within
``request_deadline`` of connecting (the socket is shut down then); the pusher never follows
redirects and never reads a response body (and so never reuses a connection).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
#: Of the (all checked) addresses of a host, this many are tried when connecting.
MAX_ADDRESSES_TRIED = 3
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Never a push destination, whatever Python's ``is_global`` says in its version.
BLOCKED_IPV4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",        # "this network", unspecified
    "10.0.0.0/8",       # RFC 1918
    "100.64.0.0/10",    # shared address space (CGNAT), RFC 6598
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, cloud metadata services (169.254.169.254)
    "172.16.0.0/12",    # RFC 1918
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # TEST-NET-1
    "192.88.99.0/24",   # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",   # RFC 1918
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",   # TEST-NET-3
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, broadcast
))
BLOCKED_IPV6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",            # unspecified, loopback, IPv4-compatible (deprecated)
    "64:ff9b:1::/48",   # local-use NAT64
    "100::/64",         # discard-only
    "2001::/23",        # IETF protocol assignments (Teredo, ORCHID, ...)
    "2001:db8::/32",    # documentation
    "3fff::/20",        # documentation
    "fc00::/7",         # unique local addresses, RFC 4193
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated)
    "ff00::/8",         # multicast
))
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOOPBACK_HOSTS = frozenset({"localhost", "localhost.localdomain"})

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_URL_CHARACTERS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


class PushTargetRefused(ValueError):
    """The endpoint may not receive pushes; the message never repeats the endpoint."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address stands for."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def is_public_address(address, *, allow_loopback: bool = False) -> bool:
    """Whether pushes may go to ``address`` (an ipaddress object or text)."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
    if address.version == 6:
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public_address(inner, allow_loopback=allow_loopback)
    if allow_loopback and address.is_loopback:
        return True
    blocked = BLOCKED_IPV4 if address.version == 4 else BLOCKED_IPV6
    if any(address in network for network in blocked):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_reserved
        or address.is_loopback or address.is_link_local or address.is_unspecified)


def normalize_host(host: str) -> str:
    """Lower-case host without a trailing dot; IP literals in their canonical form."""
    host = host.strip("[]").lower()
    if host.endswith("."):
        host = host[:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def host_pattern_is_valid(pattern: str) -> bool:
    """An ``ssf_push_allowed_hosts`` entry: a host name, ``*.`` + a domain, or an IP."""
    name = pattern[2:] if pattern.startswith("*.") else pattern
    try:
        ipaddress.ip_address(name.strip("[]"))
        return not pattern.startswith("*.")
    except ValueError:
        return bool(_HOSTNAME.match(name.lower())) and len(name) <= 253


@dataclass(frozen=True)
class PushPolicy:
    #: Production mode: https only.
    https_only: bool = True
    #: Tests and the demo: loopback receivers are allowed.
    allow_loopback: bool = False
    #: When set, only these hosts ("name" or "*.domain" for its subdomains).
    allowed_hosts: tuple[str, ...] = ()
    #: The bridge's own public URL (its issuer): never a push target.
    own_url: str = ""
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    #: From connected to answered: a receiver trickling its answer byte by byte cannot
    #: hold the pusher (shared by every push stream) longer than this.
    request_deadline: float = 10.0

    # --- the URL ---
    def check_url(self, url) -> tuple[str, str, int]:
        """(scheme, host, port) of an acceptable endpoint URL, else PushTargetRefused.
        Checks everything but the addresses."""
        if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or \
                not _URL_CHARACTERS.match(url):
            raise PushTargetRefused(
                f"endpoint_url must be an absolute URL of at most {MAX_URL_LENGTH} printable "
                "ASCII characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise PushTargetRefused("endpoint_url is not a valid URL") from None
        schemes = ("https",) if self.https_only else ("https", "http")
        if parts.scheme not in schemes:
            raise PushTargetRefused("endpoint_url must be an https URL" if self.https_only
                                    else "endpoint_url must be an http(s) URL")
        if "@" in parts.netloc:
            raise PushTargetRefused("endpoint_url must not contain user information")
        if "#" in url:
            raise PushTargetRefused("endpoint_url must not contain a fragment")
        if not parts.hostname or port == 0:
            raise PushTargetRefused("endpoint_url must name a host")
        host = self._check_host_syntax(parts.hostname)
        port = port or DEFAULT_PORTS[parts.scheme]
        self.check_host(host, port)
        return parts.scheme, host, port

    @staticmethod
    def _check_host_syntax(hostname: str) -> str:
        if "%" in hostname:  # percent-encoded names, IPv6 zone identifiers
            raise PushTargetRefused("endpoint_url must name a DNS host or an IP address")
        host = normalize_host(hostname)
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        last = host.rsplit(".", 1)[-1]
        if not _HOSTNAME.match(host) or len(host) > 253 or last.isdigit() or \
                last.startswith("0x"):
            # A numeric last label is an IPv4 address in another notation (0x7f.1, 2130706433).
            raise PushTargetRefused("endpoint_url must name a DNS host or an IP address")
        return host

    def check_host(self, host: str, port: int) -> None:
        """The bridge itself and hosts outside the allow-list are refused."""
        host = normalize_host(host)
        own = urlsplit(self.own_url) if self.own_url else None
        if own is not None and own.hostname and normalize_host(own.hostname) == host:
            own_port = own.port or DEFAULT_PORTS.get(own.scheme)
            # With loopback allowed (tests, demo) other ports of a loopback bridge remain
            # usable; otherwise the bridge's host is refused on every port.
            if not self.allow_loopback or own_port == port:
                raise PushTargetRefused("endpoint_url must not name this bridge")
        if self.allowed_hosts and not any(_matches(host, p) for p in self.allowed_hosts):
            raise PushTargetRefused("endpoint_url's host is not among the allowed push hosts")

    # --- the addresses ---
    def resolve(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """Every (family, socket address) of host, all of them public; else refused."""
        host = normalize_host(host)
        if host in LOOPBACK_HOSTS and not self.allow_loopback:
            raise PushTargetRefused(NOT_PUBLIC)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            # Same answer as for an internal address: no oracle on internal DNS names.
            raise PushTargetRefused(NOT_PUBLIC) from None
        addresses = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6) or \
                    not self.address_allowed(sockaddr[0]):
                raise PushTargetRefused(NOT_PUBLIC)
            if (family, sockaddr) not in addresses:
                addresses.append((family, sockaddr))
        if not addresses:
            raise PushTargetRefused(NOT_PUBLIC)
        return addresses

    def address_allowed(self, address) -> bool:
        return is_public_address(address, allow_loopback=self.allow_loopback)

    def check_endpoint(self, url) -> None:
        """Registration: the URL and the addresses its host resolves to now."""
        _, host, port = self.check_url(url)
        self.resolve(host, port)

    # --- delivery ---
    def session(self) -> requests.Session:
        """An HTTP session connecting only to addresses this policy allows."""
        session = requests.Session()
        session.trust_env = False  # no proxies nor .netrc credentials from the environment
        session.max_redirects = 0
        adapter = _GuardedAdapter(self)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


NOT_PUBLIC = "endpoint_url must name a host whose addresses are all public"


def _matches(host: str, pattern: str) -> bool:
    pattern = normalize_host(pattern) if not pattern.startswith("*.") else pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _connect(connection, policy: PushPolicy, scheme: str) -> socket.socket:
    """Resolve once, check every address, connect to a checked one, check the peer."""
    host = normalize_host(connection.host)
    try:
        if scheme == "http" and policy.https_only:
            raise PushTargetRefused("endpoint_url must be an https URL")
        policy.check_host(host, connection.port)
        addresses = policy.resolve(host, connection.port)
    except PushTargetRefused as exc:
        log.warning("push delivery to %s refused: %s", host, exc)
        raise NewConnectionError(connection, f"refused by the push policy: {exc}") from None
    timeout = connection.timeout
    error: OSError | None = None
    for family, sockaddr in addresses[:MAX_ADDRESSES_TRIED]:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if timeout is None or isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            sock.connect(sockaddr)
            if not policy.address_allowed(sock.getpeername()[0]):
                raise OSError("the peer address is not allowed")
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise NewConnectionError(connection, f"cannot connect to the push endpoint: {error}")


class _Deadline:
    """Shuts a connection's socket down after ``seconds`` (a blocked read then returns)."""

    def __init__(self, sock: socket.socket, seconds: float):
        self._timer = threading.Timer(seconds, self._expire, args=(sock,))
        self._timer.daemon = True
        self._timer.start()

    @staticmethod
    def _expire(sock: socket.socket) -> None:
        try:
            # The plain socket call also for TLS sockets: no TLS state is touched from here.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already

    def cancel(self) -> None:
        self._timer.cancel()


class _DeadlineMixin:
    policy: PushPolicy
    _deadline: _Deadline | None = None

    def connect(self) -> None:
        super().connect()  # for https: the TLS socket, verified for the endpoint's name
        self._deadline = _Deadline(self.sock, self.policy.request_deadline)

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().close()


class _GuardedHTTPConnection(_DeadlineMixin, HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect(self, self.policy, "http")


class _GuardedHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        # HTTPSConnection.connect wraps this socket with SNI and certificate verification
        # for self.host, the endpoint's name, not the address connected to.
        return _connect(self, self.policy, "https")


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: PushPolicy):
        conn = type("PushHTTPConnection", (_GuardedHTTPConnection,), {"policy": policy})
        conns = type("PushHTTPSConnection", (_GuardedHTTPSConnection,), {"policy": policy})
        self._pools = {
            "http": type("PushHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": conn}),
            "https": type("PushHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": conns}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise requests.exceptions.InvalidProxyURL("push delivery never uses a proxy")


__all__ = ["PushPolicy", "PushTargetRefused", "is_public_address"]
