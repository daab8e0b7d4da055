"""Errors beyond Authlib's RFC 6749 set, and the guard on every error description.

RFC 6749 section 5.2 limits ``error_description`` to ``%x20-21 / %x23-5B / %x5D-7E``
(printable ASCII without ``"`` and ``\\``). Authlib enforces that by raising ``ValueError``
while the error is being *constructed*, so a description carrying a quote, a backslash, a
control character or any non-ASCII letter turned a clean 400 into a 500 with a traceback.
Descriptions are written never to echo request input (they name the parameter, not its
value); :func:`safe_description` is the safety net behind that rule: every
``OAuth2Error`` (ours, Authlib's, raised anywhere) gets its description cleaned before
Authlib checks it, so no description can ever make an error answer fail.
"""

from __future__ import annotations

from authlib.oauth2.base import OAuth2Error as _AuthlibOAuth2Error
from authlib.oauth2.rfc6749.errors import OAuth2Error

#: Longest description sent; longer ones are cut (a description is a hint, not a log).
MAX_DESCRIPTION = 300


def _allowed(ch: str) -> bool:
    code = ord(ch)
    return 0x20 <= code <= 0x7E and ch not in '"\\'


def safe_description(text) -> str | None:
    """``text`` with every character outside the RFC 6749 set replaced by ``?`` (so a
    description can also never break the ``WWW-Authenticate`` header Authlib builds from
    it), cut to :data:`MAX_DESCRIPTION` characters."""
    if text is None:
        return None
    text = str(text)[:MAX_DESCRIPTION]
    return "".join(ch if _allowed(ch) else "?" for ch in text)


def _install_guard() -> None:
    init = _AuthlibOAuth2Error.__init__
    if getattr(init, "_idp_bridge_guard", False):
        return

    def guarded_init(self, description=None, *args, **kwargs):
        init(self, safe_description(description), *args, **kwargs)

    guarded_init._idp_bridge_guard = True
    _AuthlibOAuth2Error.__init__ = guarded_init


_install_guard()


class InvalidTargetError(OAuth2Error):
    """RFC 8693 section 2.2.2 / RFC 8707 section 2: unknown or unacceptable audience/resource."""

    error = "invalid_target"


class TemporarilyUnavailableError(OAuth2Error):
    """Storage or the upstream provider is unreachable: refuse, never grant (fail closed)."""

    error = "temporarily_unavailable"
    status_code = 503


class UnsupportedTokenTypeError(OAuth2Error):
    """RFC 7009 section 2.2.1: a ``token_type_hint`` we do not know. Answered 400 as RFC 6749
    section 5.2 requires; Authlib's own class answers 401, which claims the (successful) client
    authentication failed."""

    error = "unsupported_token_type"


class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 section 5 (and 12.2): the ``DPoP`` proof is missing where required, malformed,
    or does not hold (wrong ``htm``/``htu``, too old, replayed, of another key than the
    refresh token's)."""

    error = "invalid_dpop_proof"


class UseDPoPNonceError(OAuth2Error):
    """RFC 9449 section 8: the proof must carry the server's nonce; the one to use is sent in
    the ``DPoP-Nonce`` header of this answer."""

    error = "use_dpop_nonce"

    def __init__(self, description=None, *, nonce: str, **kwargs):
        super().__init__(description, **kwargs)
        self.nonce = nonce

    def get_headers(self):
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]
