"""RFC 9728 (OAuth 2.0 Protected Resource Metadata): what a resource server tells clients.

:class:`ResourceMetadata` holds the metadata of one resource server (section 2) under its
*resource identifier*: an ``https`` URL without fragment (section 1.2), such as
``https://api.konfipay.example``. It builds

- the document (section 2, 3.2): ``resource``, ``authorization_servers`` (the bridge's issuer),
  ``scopes_supported`` (the catalog's scopes), ``bearer_methods_supported`` (``["header"]``:
  the guard reads only the ``Authorization`` header), ``dpop_bound_access_tokens_required``
  and, when given, ``dpop_signing_alg_values_supported``,
  ``resource_signing_alg_values_supported``, ``resource_name`` and
  ``resource_documentation``; parameters without values are omitted (section 3.2);
- the URL it is published at (section 3.1): ``/.well-known/oauth-protected-resource`` inserted
  between the host and the path (``https://h/api`` ->
  ``https://h/.well-known/oauth-protected-resource/api``);
- the challenge's ``resource_metadata`` parameter (section 5.1), through
  :meth:`TokenGuard.challenge <scopes.guard.TokenGuard.challenge>` when the guard has
  ``resource_metadata`` (:meth:`ResourceMetadata.for_guard` takes the authorization server
  and the DPoP settings from the guard, so that the document says what the guard does).

Section 3.3 makes a client drop a document whose ``resource`` is not *identical* to the URL it
requested when a challenge sent it there. So a challenge names the metadata of the URL the
client used (:meth:`ResourceMetadata.resource_for` of the request path), and a URL under the
resource identifier has its own document (same content, its own ``resource``):
``https://h/api/tenants/1/payments`` -> ``https://h/.well-known/oauth-protected-resource/api/
tenants/1/payments``. :meth:`ResourceMetadata.resource_at` maps a request to such a
well-known path back to the resource it describes. The Flask adapter publishes both
(:func:`scopes.guard.flask_adapter.publish_resource_metadata`).

Choices: ``http`` is accepted only for loopback hosts (development and tests; section 1.2
requires ``https``); a resource identifier with a query component is refused (section 1.2:
SHOULD NOT), so a request's resource identifier is its URL without the query - the example's
routes take none. Signed metadata (section 2.2) is not produced.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

from ..catalog import ALL_SCOPES, validate_scopes

__all__ = ["BEARER_METHODS", "WELL_KNOWN_PATH", "ResourceMetadata", "metadata_url"]

WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"  # RFC 9728 section 3
BEARER_METHODS = ("header", "body", "query")  # RFC 9728 section 2, RFC 6750 section 2
#: Characters left as they are when a request path becomes part of a URL (RFC 3986 pchar).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def check_resource_identifier(resource) -> str:
    """``resource`` if it is a resource identifier (section 1.2), else ValueError: an absolute
    ``https`` URL (``http`` only on a loopback host) without userinfo, query or fragment."""
    if not isinstance(resource, str) or not resource.isascii() or not resource.isprintable() \
            or " " in resource:
        raise ValueError("a resource identifier must be an ASCII URL without spaces")
    parts = urlsplit(resource)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("a resource identifier must be an absolute https URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError("a resource identifier must use https (http only on loopback)")
    if "@" in parts.netloc or parts.query or parts.fragment or "?" in resource \
            or "#" in resource:
        raise ValueError("a resource identifier has no userinfo, query or fragment")
    if any(c in resource for c in '"\\<>^`{|}'):
        raise ValueError("a resource identifier must not contain quotes or brackets")
    if parts.path not in ("", "/") and parts.path.endswith("/"):
        # Its URLs are its path + "/<route>"; "https://h/api/" would make "/api//<route>".
        raise ValueError("a resource identifier's path must not end with '/'")
    return resource


def metadata_url(resource: str) -> str:
    """The URL of ``resource``'s metadata (section 3.1): the well-known path inserted between
    the host and the path; a terminating ``/`` after the host is removed first."""
    parts = urlsplit(resource)
    path = "" if parts.path == "/" else parts.path
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_PATH}{path}"


class ResourceMetadata:
    """The RFC 9728 metadata of the resource identified by ``resource`` and of every URL
    under it. Checked when made (a ValueError names the parameter)."""

    def __init__(self, resource: str, *, authorization_servers: Iterable[str],
                 scopes_supported: Iterable[str] | None = None,
                 bearer_methods_supported: Iterable[str] = ("header",),
                 dpop_bound_access_tokens_required: bool = False,
                 dpop_signing_alg_values_supported: Iterable[str] = (),
                 resource_signing_alg_values_supported: Iterable[str] = (),
                 resource_name: str | None = None, resource_documentation: str | None = None,
                 max_age: int = 300):
        self.resource = check_resource_identifier(resource)
        parts = urlsplit(self.resource)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        #: The resource identifier's path without a terminating "/" ("" for the host alone).
        self.path = parts.path.rstrip("/")
        servers = _strings(authorization_servers, "authorization_servers")
        for server in servers:
            issuer = urlsplit(server)
            if issuer.scheme not in ("https", "http") or not issuer.hostname \
                    or issuer.query or issuer.fragment:
                raise ValueError("authorization_servers must be issuer identifiers (URLs "
                                 "without query or fragment, RFC 8414 section 2)")
        if not servers:
            raise ValueError("authorization_servers must name at least one issuer")
        scopes = ALL_SCOPES if scopes_supported is None else tuple(
            validate_scopes(_strings(scopes_supported, "scopes_supported")))
        methods = _strings(bearer_methods_supported, "bearer_methods_supported")
        if not set(methods) <= set(BEARER_METHODS):
            raise ValueError(f"bearer_methods_supported must be a subset of {BEARER_METHODS}")
        if type(dpop_bound_access_tokens_required) is not bool:
            raise ValueError("dpop_bound_access_tokens_required must be a bool")
        dpop_algs = _strings(dpop_signing_alg_values_supported,
                             "dpop_signing_alg_values_supported")
        signing_algs = _strings(resource_signing_alg_values_supported,
                                "resource_signing_alg_values_supported")
        for name, algs in (("dpop_signing_alg_values_supported", dpop_algs),
                           ("resource_signing_alg_values_supported", signing_algs)):
            if any(alg.lower() == "none" or alg.startswith("HS") for alg in algs):
                raise ValueError(f"{name} must not contain none or HMAC algorithms")
        if dpop_bound_access_tokens_required and not dpop_algs:
            raise ValueError("dpop_bound_access_tokens_required needs "
                             "dpop_signing_alg_values_supported")
        if resource_name is not None and (not isinstance(resource_name, str)
                                          or not resource_name.strip()):
            raise ValueError("resource_name must be a non-empty string")
        if resource_documentation is not None:
            check_resource_identifier(resource_documentation)  # an https URL, same rules
        if type(max_age) is not int or max_age < 0:
            raise ValueError("max_age must be a non-negative integer (seconds)")
        #: Cache-Control max-age of the published documents (section 7.10).
        self.max_age = max_age
        self.authorization_servers = servers
        self.dpop_signing_alg_values_supported = dpop_algs
        self.dpop_bound_access_tokens_required = dpop_bound_access_tokens_required

        document = {"resource": self.resource, "authorization_servers": list(servers)}
        if scopes:
            document["scopes_supported"] = list(scopes)
        if methods:
            document["bearer_methods_supported"] = list(methods)
        if signing_algs:
            document["resource_signing_alg_values_supported"] = list(signing_algs)
        if resource_name is not None:
            document["resource_name"] = resource_name
        if resource_documentation is not None:
            document["resource_documentation"] = resource_documentation
        if dpop_algs:
            document["dpop_signing_alg_values_supported"] = list(dpop_algs)
        document["dpop_bound_access_tokens_required"] = dpop_bound_access_tokens_required
        self._document = document

    @classmethod
    def for_guard(cls, guard, resource: str, **kwargs) -> ResourceMetadata:
        """The metadata of ``guard``'s resource server at ``resource``, consistent with the
        guard: its issuer as the authorization server, its DPoP proof algorithms when it
        accepts DPoP (RFC 9449) and whether it requires DPoP-bound tokens; ``kwargs`` as for
        the constructor (they win). Assign it to ``guard.resource_metadata``."""
        accepts_dpop = getattr(guard, "_dpop", None) is not None
        defaults = {
            "authorization_servers": [guard.issuer],
            "dpop_signing_alg_values_supported": guard.dpop_algorithms if accepts_dpop else (),
            "dpop_bound_access_tokens_required": guard.dpop_required,
        }
        return cls(resource, **{**defaults, **kwargs})

    def __repr__(self) -> str:
        return f"ResourceMetadata({self.resource!r})"

    # --- resources ---
    def resource_for(self, path: str) -> str:
        """The resource identifier of the request path ``path`` (as the application sees it,
        below the resource identifier's path): ``https://h/api`` + ``/tenants/1`` ->
        ``https://h/api/tenants/1``; ``/`` or ``""`` is the resource identifier itself."""
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise ValueError("path must be empty or start with '/'")
        if path in ("", "/"):
            return self.resource
        return f"{self._origin}{self.path}{quote(path, safe=_PATH_SAFE)}"

    def resource_at(self, metadata_path: str) -> str | None:
        """The resource whose metadata is at ``metadata_path`` (the path of a GET to a
        well-known URL), or None when that is not this resource or a URL under it. Returns
        ``resource`` itself or a resource identifier from :meth:`resource_for`; the caller
        decides whether such a resource exists (it should answer 404 otherwise)."""
        prefix = WELL_KNOWN_PATH + self.path
        if metadata_path == prefix:
            return self.resource
        if not metadata_path.startswith(prefix + "/"):
            return None
        return self.resource_for(metadata_path[len(prefix):])

    def covers(self, resource: str) -> bool:
        """Whether ``resource`` is the resource identifier or a URL under it."""
        return resource == self.resource or resource.startswith(
            f"{self._origin}{self.path}/")

    # --- the document and its URL ---
    def document(self, resource: str | None = None) -> dict:
        """The metadata document of ``resource`` (default: the resource identifier), a URL
        that :meth:`covers`; ``resource`` is its ``resource`` value (section 3.3)."""
        resource = self.resource if resource is None else resource
        if not self.covers(resource):
            raise ValueError("resource is not under this resource identifier")
        return {**self._document, "resource": resource}

    def url(self, resource: str | None = None) -> str:
        """Where the metadata of ``resource`` (default: the resource identifier) is
        published (section 3.1); the value of a challenge's ``resource_metadata``."""
        resource = self.resource if resource is None else resource
        if not self.covers(resource):
            raise ValueError("resource is not under this resource identifier")
        return metadata_url(resource)


def _strings(values, name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of strings, not one string")
    result = tuple(values)
    if not all(isinstance(v, str) and v and v.isascii() and v.isprintable() and " " not in v
               for v in result):
        raise ValueError(f"{name} must contain non-empty ASCII strings without spaces")
    if len(set(result)) != len(result):
        raise ValueError(f"{name} must not repeat a value")
    return result


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
