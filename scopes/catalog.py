"""Functional areas, their scopes, and the fixed advisor profile (DESIGN.md section 4).

Scope names are ``area:action`` with the actions ``read`` and ``write``; ``write`` implies
``read``. The advisor profile is a frozen value defined here and nowhere else: no setting,
file or endpoint can widen or narrow it. A request may ask for *fewer* scopes in one token,
which narrows that token, never the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

ACTIONS = ("read", "write")

PAYMENTS = "Zahlungsverkehr"
TENANT_ADMINISTRATION = "Mandantenverwaltung"


class UnknownScope(ValueError):
    """A scope that is not in the catalog."""


class ProfileChangeRefused(PermissionError):
    """An attempt to change the fixed advisor profile."""

    message = (
        "The advisor rights are fixed by the product and cannot be changed by a tenant, "
        "an advisor or a setting."
    )

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


@dataclass(frozen=True, slots=True)
class Area:
    """One functional area (Funktionsbereich)."""

    key: str
    name_de: str
    name_en: str
    group: str
    #: What ``read`` never returns in this area (secrets stay with the tenant).
    read_excludes: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, str]:
        return (f"{self.key}:read", f"{self.key}:write")


AREAS: tuple[Area, ...] = (
    Area("bank-accounts", "Bankkonten", "Bank accounts", PAYMENTS,
         ("online banking PINs", "access credentials of the bank connection")),
    Area("ebics", "EBICS", "EBICS", PAYMENTS,
         ("EBICS private keys", "key passwords", "INI/HIA letters")),
    Area("payments", "ISO 20022- und SEPA-Zahlungen", "ISO 20022 and SEPA payments", PAYMENTS,
         ("signing credentials", "release (signature) actions")),
    Area("foreign-trade-payments", "Außenwirtschaftsverkehrs-Zahlungen",
         "Foreign trade payments", PAYMENTS, ("signing credentials",)),
    Area("cash-card-files", "Geldkartendateien", "Cash card files", PAYMENTS),
    Area("account-transactions", "Kontoumsätze", "Account transactions", PAYMENTS),
    Area("paypal-accounts", "PayPal-Konten", "PayPal accounts", PAYMENTS,
         ("PayPal API credentials", "client secrets")),
    Area("paypal-transactions", "PayPal-Transaktionen", "PayPal transactions", PAYMENTS),
    Area("tenant", "Mandant", "Tenant", TENANT_ADMINISTRATION,
         ("licence keys",)),
    Area("users", "Benutzer", "Users", TENANT_ADMINISTRATION,
         ("passwords", "password reset links", "second-factor secrets")),
    Area("user-groups", "Benutzergruppen", "User groups", TENANT_ADMINISTRATION),
    Area("api", "API", "API", TENANT_ADMINISTRATION,
         ("API client secrets", "API keys")),
    Area("evaluation", "Auswertung", "Evaluation", TENANT_ADMINISTRATION),
    Area("retention-periods", "Löschfristen", "Retention periods", TENANT_ADMINISTRATION),
    Area("notifications", "Benachrichtigungen", "Notifications", TENANT_ADMINISTRATION,
         ("webhook signing secrets", "SMTP passwords")),
)

CATALOG: MappingProxyType = MappingProxyType({area.key: area for area in AREAS})

#: Every scope the catalog knows, in catalog order.
ALL_SCOPES: tuple[str, ...] = tuple(s for area in AREAS for s in area.scopes)

#: The fixed advisor profile: read everywhere, full access to evaluation (Auswertung).
ADVISOR_PROFILE: frozenset[str] = frozenset(
    [f"{area.key}:read" for area in AREAS] + ["evaluation:write"]
)


def advisor_scopes() -> tuple[str, ...]:
    """The advisor profile in catalog order (stable for display and tokens)."""
    return tuple(s for s in ALL_SCOPES if s in ADVISOR_PROFILE)


def parse_scope(value: str | None) -> list[str]:
    """Split a space-delimited scope string (RFC 6749 section 3.3), keeping order, no duplicates."""
    if not value:
        return []
    seen: dict[str, None] = {}
    for item in value.split(" "):
        if item:
            seen.setdefault(item, None)
    return list(seen)


def validate_scopes(scopes) -> list[str]:
    """Return the scopes if every one is in the catalog, else raise :class:`UnknownScope`."""
    result = list(scopes)
    unknown = [s for s in result if s not in _ALL_SCOPES_SET]
    if unknown:
        raise UnknownScope(f"unknown scope: {' '.join(sorted(unknown))}")
    return result


def implied_scopes(scopes) -> set[str]:
    """Scopes with ``write`` expanded to include ``read`` of the same area."""
    result = set(scopes)
    for scope in scopes:
        area, _, action = scope.partition(":")
        if action == "write":
            result.add(f"{area}:read")
    return result


def in_catalog_order(scopes) -> list[str]:
    wanted = set(scopes)
    return [s for s in ALL_SCOPES if s in wanted]


_ALL_SCOPES_SET = frozenset(ALL_SCOPES)
