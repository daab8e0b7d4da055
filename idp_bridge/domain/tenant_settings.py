"""A tenant's settings about advisor access, and which changes need four eyes (issue 15).

============================  ==============================  =============================
setting                       tightening (at once)            loosening
============================  ==============================  =============================
``temporary_max_age_days``    shortening                      lengthening: four eyes
``four_eyes``                 turning it on                   turning it off: four eyes
``access_modes``              either way at once (a request grants nothing until approved)
``permanent_mode``            ``accept`` (the tenant consents) back to ``direct``: four eyes
============================  ==============================  =============================

"Four eyes" means :meth:`~idp_bridge.domain.approvals.FourEyes.approve`: applied at once when
the tenant does not ask for it, else held until a second, different admin approves. Turning
four eyes off needs it too, or one admin could switch it off and then act alone. Every
change that takes effect is audited ``tenant.settings_changed`` with the old and new value
and its approvers.
"""

from __future__ import annotations

from datetime import datetime

from . import audit
from .access_requests import check_access_modes
from .approvals import Action, Outcome
from .errors import InvalidInput
from .permanent_consent import check_mode

MAX_AGE = "tenant.max_age"
FOUR_EYES_OFF = "tenant.four_eyes_off"
PERMANENT_DIRECT = "tenant.permanent_direct"


class TenantSettings:
    def __init__(self, *, memberships, four_eyes):
        self.memberships = memberships
        self.four_eyes = four_eyes
        four_eyes.register(Action(MAX_AGE, apply=self._apply_max_age))
        four_eyes.register(Action(FOUR_EYES_OFF, apply=self._apply_four_eyes_off))
        four_eyes.register(Action(PERMANENT_DIRECT, apply=self._apply_permanent_direct))

    def current_max_age_days(self, tenant) -> int:
        return tenant.temporary_max_age_days or self.memberships.default_max_age_days

    def set_max_age(self, session, tenant, days, *, by: str, now: datetime) -> Outcome:
        """Shorten at once, lengthen through four eyes; the outcome's result is how many
        temporary memberships ended because they are older than the new maximum."""
        days = self.memberships.check_max_age_days(days)
        if days > self.current_max_age_days(tenant):
            return self.four_eyes.approve(session, tenant, MAX_AGE, "temporary_max_age_days",
                                          {"days": days}, by=by, now=now)
        return Outcome(True, None, self._apply_max_age(session, tenant, "temporary_max_age_days",
                                                       {"days": days}, (by,), now), (by,))

    def set_four_eyes(self, session, tenant, enabled, *, by: str, now: datetime) -> Outcome:
        if not isinstance(enabled, bool):
            raise InvalidInput("four_eyes must be true or false", code="four_eyes_invalid")
        if enabled == bool(tenant.four_eyes):
            return Outcome(True, None, None, (by,))
        if enabled:
            tenant.four_eyes = True
            self._audit(session, tenant, "four_eyes", False, True, (by,), now)
            return Outcome(True, None, None, (by,))
        return self.four_eyes.approve(session, tenant, FOUR_EYES_OFF, "four_eyes",
                                      {"four_eyes": False}, by=by, now=now)

    def set_access_modes(self, session, tenant, modes, *, by: str, now: datetime) -> Outcome:
        modes = check_access_modes(modes)
        old = tenant.access_modes or "both"
        if modes != old:
            tenant.access_modes = modes
            self._audit(session, tenant, "access_modes", old, modes, (by,), now)
        return Outcome(True, None, None, (by,))

    def set_permanent_mode(self, session, tenant, mode, *, by: str, now: datetime) -> Outcome:
        """``accept`` (the tenant's admins accept support's proposals) at once; back to
        ``direct`` (support assigns alone) through four eyes."""
        mode = check_mode(mode)
        old = tenant.permanent_mode or "direct"
        if mode == old:
            return Outcome(True, None, None, (by,))
        if mode == "accept":
            tenant.permanent_mode = "accept"
            self._audit(session, tenant, "permanent_mode", old, mode, (by,), now)
            return Outcome(True, None, None, (by,))
        return self.four_eyes.approve(session, tenant, PERMANENT_DIRECT, "permanent_mode",
                                      {"permanent_mode": "direct"}, by=by, now=now)

    # --- what four eyes applies ---
    def _apply_permanent_direct(self, session, tenant, _target, _terms, approvers, now) -> None:
        if (tenant.permanent_mode or "direct") != "direct":
            tenant.permanent_mode = "direct"
            self._audit(session, tenant, "permanent_mode", "accept", "direct", approvers, now)

    def _apply_max_age(self, session, tenant, _target, terms, approvers, now) -> int:
        old = self.current_max_age_days(tenant)
        ended = self.memberships.set_temporary_max_age(session, tenant, terms["days"], now)
        if old != terms["days"] or ended:
            self._audit(session, tenant, "temporary_max_age_days", old, terms["days"],
                        approvers, now, memberships_ended=ended)
        return ended

    def _apply_four_eyes_off(self, session, tenant, _target, _terms, approvers, now) -> None:
        if tenant.four_eyes:
            tenant.four_eyes = False
            self._audit(session, tenant, "four_eyes", True, False, approvers, now)

    @staticmethod
    def _audit(session, tenant, setting: str, old, new, approvers, now, **detail) -> None:
        audit.record(session, "tenant.settings_changed", now, tenant_id=tenant.id,
                     actor=approvers[-1], actor_role="tenant_admin", setting=setting, old=old,
                     new=new, approved_by=list(approvers), **detail)
