"""Who is calling the management API: the bearer token, an upstream access token, validated
(signature, issuer, audience, lifetime) and checked against the upstream sessions that
were logged out (back-channel logout): such a token speaks for nobody any more, though its
signature stays valid until it expires."""

from __future__ import annotations

from ..storage.db import utcnow
from ..upstream.oidc import ACCESS_TOKEN, SubjectTokenError


class Callers:
    def __init__(self, *, db, validator, session_has_ended, sign_ins=None):
        self.db = db
        #: Records callers for the directory (at most hourly per person and process).
        self.sign_ins = sign_ins
        self.validator = validator
        #: ``session_has_ended(session, identity)`` -> True after an upstream logout.
        self.session_has_ended = session_has_ended

    def from_bearer_token(self, token: str):
        """The :class:`~idp_bridge.upstream.identity.UpstreamIdentity` of ``token``; raises
        :class:`~idp_bridge.upstream.oidc.SubjectTokenError` (not a valid token of a live
        session) or :class:`~idp_bridge.upstream.oidc.UpstreamUnavailable` (its keys cannot
        be fetched: fail closed)."""
        identity = self.validator.validate(token, ACCESS_TOKEN)
        with self.db.read() as session:
            ended = self.session_has_ended(session, identity)
        if ended:
            raise SubjectTokenError("the upstream session of this token has ended")
        if self.sign_ins is not None and self.sign_ins.needs_recording(identity):
            with self.db.transaction() as session:
                self.sign_ins.seen(session, identity, utcnow())
        return identity
