"""The authorization server: Authlib's Flask server wired to our storage and domain.

Only this class turns errors into HTTP answers: grants and endpoints raise Authlib's
``OAuth2Error`` subclasses, and the refusals of the use cases
(:class:`~idp_bridge.domain.errors.DomainError`) are mapped by their ``kind`` in
:meth:`run_domain` — the one mapping of the token endpoint; storage or upstream outages
become ``503 temporarily_unavailable`` (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc.jwk import KeySet
from werkzeug.wrappers import Request

from ..domain.errors import DomainError
from ..storage.db import StorageUnavailable, utcnow
from ..upstream.oidc import SubjectTokenError, UpstreamUnavailable
from .errors import InvalidTargetError, TemporarilyUnavailableError
from .models import OAuthClient
from .rfc9449 import TokenEndpointDPoP

NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


#: ``profile = "fapi2"`` (FAPI 2.0 Security Profile 5.3.2.1, 5.4): the only client
#: authentication at the token and revocation endpoints, and the only JWS algorithms accepted
#: for client assertions and DPoP proofs.
FAPI2_AUTH_METHODS = ("private_key_jwt",)
FAPI2_ALGORITHMS = ("ES256", "PS256")
#: FAPI 2.0 5.3.2.1: JWTs with ``iat``/``nbf`` up to 10 s ahead are accepted (at most 60 s).
FAPI2_LEEWAY = 10


class BridgeAuthorizationServer(AuthorizationServer):
    """``dpop`` holds the token endpoint's RFC 9449 checks (default: proofs accepted, none
    required, no nonces); ``fapi2`` restricts client authentication at the token and
    revocation endpoints to ``private_key_jwt`` with ES256/PS256 assertions and a 10 s
    leeway (the DPoP requirement of the profile is ``dpop``'s ``required_for_all``)."""

    def __init__(self, *, tokens, validator, issuer: str, audiences, default_audience: str,
                 resources: dict[str, str], dpop: TokenEndpointDPoP | None = None,
                 fapi2: bool = False):
        super().__init__()
        #: The token use cases (:class:`idp_bridge.services.tokens.TokenService`).
        self.tokens = tokens
        self.validator = validator
        self.audiences = frozenset(audiences)
        self.default_audience = default_audience
        self.resources = dict(resources)
        self.fapi2 = fapi2
        self.dpop = dpop or TokenEndpointDPoP(
            issuer=issuer, tokens=tokens, algorithms=("ES256", "ES384", "PS256", "RS256", "EdDSA"),
            nonce_secret=None, nonce_required=False, required_for_all=False)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(
            self, issuer, algorithms=FAPI2_ALGORITHMS if fapi2 else None,
            leeway=FAPI2_LEEWAY if fapi2 else 30))
        self._clients: dict = {}

    # --- storage hooks Authlib calls ---
    #: Clients are cached this long per process: a lookup per token request would cost as
    #: much as the exchange's own transaction. Disabling a client takes effect within it.
    CLIENT_CACHE_SECONDS = 5.0

    def query_client(self, client_id):
        if not isinstance(client_id, str) or len(client_id) > 100:
            return None
        cached = self._clients.get(client_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.CLIENT_CACHE_SECONDS:
            return cached[1]
        client = self._load_client(client_id)
        if len(self._clients) > 1000:
            self._clients.clear()
        self._clients[client_id] = (now, client)
        return client

    def _load_client(self, client_id):
        try:
            row = self.tokens.find_client(client_id)
        except StorageUnavailable:
            raise TemporarilyUnavailableError(description="the database is unreachable") from None
        return None if row is None else OAuthClient(row)

    def authenticate_client(self, request, methods, endpoint="token"):
        """Authlib's client authentication, behind RFC 6749 sections 2.3 and 2.3.1: one
        method per request, credentials in the body or the Authorization header only, and
        a ``client_id`` parameter naming the client that authenticated. Used by the token
        endpoint (both grants), introspection and revocation alike."""
        claimed = check_one_client_authentication(request)
        if self.fapi2 and endpoint in ("token", "revocation"):
            methods = [m for m in methods if m in FAPI2_AUTH_METHODS]
            if request.headers.get("Authorization") is not None:
                # Credentials in the Authorization header (Basic): 401 (RFC 6749 5.2).
                raise _client_auth_error("profile fapi2 accepts only private_key_jwt")
        client = super().authenticate_client(request, methods, endpoint)
        if claimed is not None and client.get_client_id() != claimed:
            raise _client_auth_error("client_id does not name the authenticated client")
        return client

    def create_oauth2_request(self, request):
        """A Werkzeug request given by the lean token endpoint (:mod:`.lean`, no Flask
        context), else Flask's current request."""
        if isinstance(request, Request):
            return FlaskOAuth2Request(request)
        return super().create_oauth2_request(request)

    def save_token(self, token, request):  # tokens are stored by the domain layer
        raise NotImplementedError

    def handle_response(self, status_code, payload, headers):
        return super().handle_response(status_code, payload, list(headers) + NO_STORE)

    # --- request helpers used by the grants ---
    def resolve_audience(self, audiences: list[str], resources: list[str]) -> str:
        """One audience from ``audience`` (RFC 8693) and ``resource`` (RFC 8707)."""
        wanted = set()
        for value in audiences:
            if value not in self.audiences:
                raise InvalidTargetError(description="unknown audience")  # never echo input
            wanted.add(value)
        for value in resources:
            audience = self.resources.get(value)
            if audience is None:
                raise InvalidTargetError(description="unknown resource")
            wanted.add(audience)
        if len(wanted) > 1:
            raise InvalidTargetError(description="a token serves exactly one audience")
        return wanted.pop() if wanted else self.default_audience

    def validate_subject_token(self, token: str, token_type: str):
        try:
            return self.validator.validate(token, token_type)
        except SubjectTokenError as exc:
            raise InvalidRequestError(description=str(exc)) from None
        except UpstreamUnavailable as exc:
            raise TemporarilyUnavailableError(description=str(exc)) from None

    def run_domain(self, func, *args, **kwargs):
        """Call a use case; its refusals become the RFC 6749 error of their ``kind``."""
        try:
            return func(*args, **kwargs)
        except DomainError as exc:
            raise _ERROR_BY_KIND[exc.kind](description=exc.description) from None
        except StorageUnavailable as exc:
            raise TemporarilyUnavailableError(description=str(exc)) from None


#: The token endpoint's answer to each kind of refusal (RFC 6749 5.2, RFC 8693 2.2.2).
_ERROR_BY_KIND = {
    "invalid": InvalidRequestError,
    "not_found": InvalidRequestError,
    "forbidden": InvalidGrantError,
    "refused": InvalidGrantError,
    "conflict": InvalidGrantError,   # e.g. two concurrent first redemptions: retry
    "scope": InvalidScopeError,
    "target": InvalidTargetError,
    "unavailable": TemporarilyUnavailableError,
}


#: Body parameters that carry client credentials (RFC 6749 2.3.1, RFC 7521 4.2).
_SECRET_PARAMETERS = ("client_secret",)
_ASSERTION_PARAMETERS = ("client_assertion", "client_assertion_type")
_CREDENTIAL_PARAMETERS = ("client_id", *_SECRET_PARAMETERS, *_ASSERTION_PARAMETERS)


def _client_auth_error(description: str) -> InvalidClientError:
    # 401 with a WWW-Authenticate challenge (section 5.2), whichever method was tried.
    return InvalidClientError(status_code=401, description=description)


def check_one_client_authentication(request) -> str | None:
    """Refuse a request presenting more than one client authentication method (Basic, a
    body ``client_secret``, a ``client_assertion``), repeating a credential parameter,
    putting one in the URI, or naming in ``client_id`` another client than the one its
    credentials name. Runs before any credential is checked, so a refused request changes
    nothing (not even the remembered assertion ids). Returns the client id the request
    claims, if it says."""
    form = request.form
    args = request.args
    if any(name in args for name in _CREDENTIAL_PARAMETERS if name != "client_id"):
        raise _client_auth_error("client credentials must not be sent in the request URI")
    if any(len(form.getlist(name)) > 1 for name in _CREDENTIAL_PARAMETERS) \
            or len(args.getlist("client_id")) > 1:
        raise _client_auth_error("a client credential parameter is repeated")
    header = request.headers.get("Authorization")
    methods = [
        header is not None,
        any(name in form for name in _SECRET_PARAMETERS),
        any(name in form for name in _ASSERTION_PARAMETERS),
    ]
    if sum(methods) > 1:
        raise _client_auth_error("a request must use exactly one client authentication method")
    named = {value for value in (form.get("client_id"), args.get("client_id")) if value is not None}
    if methods[0]:
        basic_id = _basic_client_id(header)
        if basic_id is not None:
            named.add(basic_id)
    elif methods[2]:
        subject = _unverified_assertion_subject(form.get("client_assertion"))
        if subject is not None:
            named.add(subject)
    if len(named) > 1:
        raise _client_auth_error("client_id does not name the authenticated client")
    return named.pop() if named else None


def _basic_client_id(header: str) -> str | None:
    """The client id of HTTP Basic credentials (RFC 6749 2.3.1: form-encoded id and secret,
    RFC 7617: base64 of UTF-8 ``id:secret``); None for another scheme. Credentials that are
    not base64, not UTF-8 or lack the colon are a failed authentication, never an error."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise _client_auth_error("the Basic credentials are malformed") from None
    client_id, colon, _secret = decoded.partition(":")
    if not colon or not client_id:
        raise _client_auth_error("the Basic credentials are malformed")
    return unquote(client_id)


def _unverified_assertion_subject(assertion) -> str | None:
    """The ``sub`` a client assertion claims (RFC 7523 3: the client's id), unverified: only
    to compare it with ``client_id`` before the assertion is checked and its jti recorded."""
    if not isinstance(assertion, str) or assertion.count(".") != 2 or len(assertion) > 8192:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(
            assertion.split(".")[1] + "=" * (-len(assertion.split(".")[1]) % 4)))
    except (ValueError, TypeError):
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) else None


#: Client assertions may live at most this long (RFC 7523 asks for short-lived assertions).
MAX_ASSERTION_SECONDS = 3600


class PrivateKeyJWT(JWTBearerClientAssertion):
    """RFC 7523 client authentication with keys registered for the client."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: BridgeAuthorizationServer, issuer: str, *,
                 algorithms=None, leeway: int = 30):
        super().__init__(validate_jti=True, leeway=leeway)
        self.server = server
        self.issuer = issuer.rstrip("/")
        #: Accepted assertion algorithms (None: joserfc's recommended asymmetric ones).
        self.algorithms = tuple(algorithms) if algorithms else None

    def extract_assertion(self, assertion: str):
        headers, claims = super().extract_assertion(assertion)
        if self.algorithms is not None and headers.get("alg") not in self.algorithms:
            raise InvalidClientError(description="the client assertion must be signed with "
                                     + " or ".join(self.algorithms))
        return headers, claims

    def process_assertion_claims(self, assertion, resolve_key):
        if self.algorithms is None:
            return super().process_assertion_claims(assertion, resolve_key)
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(self.algorithms))
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from None
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self):
        return [self.issuer, self.issuer + "/", self.issuer + "/token"]

    def resolve_client_public_key(self, client):
        # An assertion naming a client without registered keys (a secret client) is a
        # failed client authentication, not a server error.
        if client.auth_method != self.CLIENT_AUTH_METHOD or not (client.jwks or {}).get("keys"):
            raise InvalidClientError(description="the client does not use private_key_jwt")
        return KeySet.import_key_set(client.jwks)

    def validate_jti(self, claims, jti):
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            return False  # RFC 7519 4.1.7: a case-sensitive string
        # Structured, never joined: the pair (client, jti) as a JSON array.
        key = hashlib.sha256(json.dumps(["client-assertion", claims["sub"], jti]).encode()
                             ).hexdigest()
        now = utcnow()
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp > now.timestamp() + MAX_ASSERTION_SECONDS:
            # A long-lived assertion would have to be remembered as long; refuse it instead.
            return False
        # Remember the jti for as long as the assertion could be presented again.
        remember_until = max(now + timedelta(minutes=10),
                             datetime.fromtimestamp(exp, timezone.utc) + timedelta(seconds=self.leeway))
        return self.server.tokens.remember_assertion(key, remember_until)
