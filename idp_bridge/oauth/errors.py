"""Errors beyond Authlib's RFC 6749 set."""

from authlib.oauth2.rfc6749.errors import OAuth2Error


class InvalidTargetError(OAuth2Error):
    """RFC 8693 section 2.2.2 / RFC 8707 section 2: unknown or unacceptable audience/resource."""

    error = "invalid_target"


class TemporarilyUnavailableError(OAuth2Error):
    """Storage or the upstream provider is unreachable: refuse, never grant (fail closed)."""

    error = "temporarily_unavailable"
    status_code = 503
