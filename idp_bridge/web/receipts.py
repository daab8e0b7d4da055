"""Revocation receipts in the reader's language: "confirmed by 3 of 3 resource servers within
41 ms", per resource server when it confirmed or why it has not yet
(:mod:`idp_bridge.services.receipts`)."""

from __future__ import annotations

from flask_babel import format_decimal, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from .i18n import when

#: What was revoked and why, by the revocation's reason.
REVOCATION_LABELS = {
    "removed_by_tenant": _l("Access ended: removed from the tenant"),
    "left": _l("Access ended: the advisor left the tenant"),
    "removed_by_support": _l("Access ended: removed by support"),
    "expired": _l("Access ended: the temporary access expired"),
    "superseded": _l("Access ended: replaced by permanent access"),
    "upstream_account_ended": _l("Access ended: the account was disabled or deleted"),
    "reconfirmation_lapsed": _l("Access ended: the permanent access was not re-confirmed in time"),
    "refresh_token_reuse": _l("Tokens revoked: a refresh token was used twice."),
    "upstream_logout": _l("Tokens revoked: the advisor signed out at the identity provider."),
    "revoked_by_client": _l("Tokens revoked by the application."),
    "permissions_narrowed": _l("Tokens revoked: the user group's permissions were narrowed."),
    "issuance_failed": _l("Tokens revoked: issuing them failed."),
}

#: Why a resource server has not confirmed (``Receipt.reason``).
REASON_LABELS = {
    "events_not_requested": _l("it does not ask for revocation events"),
    "subject_removed": _l("it left this advisor or tenant out of its stream"),
    "disabled": _l("its stream is disabled"),
    "paused": _l("its stream is paused"),
    "offline": _l("offline: it has not asked for events since %(when)s"),
    "delivered_unacknowledged": _l("the event was delivered, the confirmation is outstanding"),
    "not_yet_delivered": _l("the event is on its way"),
    "stream_deleted": _l("its stream was deleted before it confirmed"),
    "receiver_error": _l("it reported that it could not process the event"),
}


def duration(ms: int) -> str:
    """41 ms, 2.5 s (below a minute), 3 min."""
    if ms < 1000:
        return _("%(ms)s ms", ms=ms)
    if ms < 60_000:
        return _("%(s)s s", s=format_decimal(round(ms / 1000, 1)))
    return _("%(min)s min", min=format_decimal(round(ms / 60_000)))


def summary(revocation) -> str:
    """"confirmed by 3 of 3 resource servers within 41 ms"."""
    if revocation.due == 0:
        return _("No resource server was receiving revocation events at the time.")
    if revocation.confirmed == 0:
        return ngettext("Not yet confirmed by the %(num)s resource server.",
                        "Not yet confirmed by any of %(num)s resource servers.", revocation.due)
    return ngettext("Confirmed by %(confirmed)s of %(num)s resource server within %(within)s.",
                    "Confirmed by %(confirmed)s of %(num)s resource servers within %(within)s.",
                    revocation.due, confirmed=revocation.confirmed,
                    within=duration(revocation.within_ms))


def revocation_label(revocation) -> str:
    return str(REVOCATION_LABELS.get(revocation.reason, _("Tokens revoked.")))


def reason_text(receipt) -> str:
    """Why ``receipt`` is not confirmed."""
    label = REASON_LABELS.get(receipt.reason)
    if label is None:
        return _("Not yet confirmed.")
    if receipt.reason == "offline":
        return _("Not yet: %(why)s", why=_("offline: it has not asked for events since "
                                           "%(when)s", when=when(receipt.last_seen_at, "medium")))
    return _("Not yet: %(why)s", why=str(label))
