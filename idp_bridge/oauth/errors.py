"""Errors beyond Authlib's RFC 6749 set."""

from authlib.oauth2.rfc6749.errors import OAuth2Error


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


def check_token_type_hint(request, supported) -> None:
    hint = request.form.get("token_type_hint")
    if hint and hint not in supported:
        raise UnsupportedTokenTypeError(
            description=f"token_type_hint must be one of {', '.join(supported)}")
