"""The fixed advisor rights as the pages show them: one row per functional area (Funktionsbereich),
grouped as in the catalog, in the reader's language (DESIGN.md section 4). Read-only: the
profile is fixed in ``scopes.catalog`` and nothing here can change it."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from scopes.catalog import AREAS, PAYMENTS, TENANT_ADMINISTRATION, advisor_scopes

from .i18n import current_language

GROUP_NAMES = {PAYMENTS: _l("Payment transactions"),
               TENANT_ADMINISTRATION: _l("Tenant administration")}

#: What ``read`` excludes per area (``Area.read_excludes``), translated. A catalog entry
#: missing here fails ``tests/test_pages_i18n.py``.
EXCLUSIONS = {
    "online banking PINs": _l("online banking PINs"),
    "access credentials of the bank connection": _l("access credentials of the bank connection"),
    "EBICS private keys": _l("EBICS private keys"),
    "key passwords": _l("key passwords"),
    "INI/HIA letters": _l("INI/HIA letters"),
    "signing credentials": _l("signing credentials"),
    "release (signature) actions": _l("release (signature) actions"),
    "PayPal API credentials": _l("PayPal API credentials"),
    "client secrets": _l("client secrets"),
    "licence keys": _l("licence keys"),
    "passwords": _l("passwords"),
    "password reset links": _l("password reset links"),
    "second-factor secrets": _l("second-factor secrets"),
    "API client secrets": _l("API client secrets"),
    "API keys": _l("API keys"),
    "webhook signing secrets": _l("webhook signing secrets"),
    "SMTP passwords": _l("SMTP passwords"),
}


@dataclass(frozen=True)
class RightsRow:
    key: str
    name: str
    access: str
    scopes: tuple[str, ...]
    excludes: tuple[str, ...]
    #: Read and change (``area:write`` in the profile), not only read.
    full: bool = False


def rights_table() -> list[tuple[str, list[RightsRow]]]:
    """[(group name, rows)] in catalog order."""
    german = current_language() == "de"
    granted = set(advisor_scopes())
    groups: dict[str, list[RightsRow]] = {}
    for area in AREAS:
        scopes = tuple(s for s in area.scopes if s in granted)
        full = f"{area.key}:write" in granted
        access = _l("Full access (read and change)") if full else _l("Read")
        groups.setdefault(area.group, []).append(RightsRow(
            key=area.key, name=area.name_de if german else area.name_en, access=str(access),
            scopes=scopes,
            excludes=tuple(str(EXCLUSIONS.get(item, item)) for item in area.read_excludes),
            full=full))
    return [(str(GROUP_NAMES.get(group, group)), rows) for group, rows in groups.items()]


def rights_summary(table: list[tuple[str, list[RightsRow]]]) -> str:
    """One sentence for the collapsed rights table, from the same rows: read everywhere,
    and where the profile also changes (evaluation:write: Auswertung)."""
    rows = [row for _group, rows in table for row in rows]
    full = [row.name for row in rows if row.full]
    if full:
        return _("Read access to all %(count)s functional areas, also changing in: %(areas)s. "
                 "Secrets such as PINs, keys and passwords are never included.",
                 count=len(rows), areas=", ".join(full))
    return _("Read access to all %(count)s functional areas. Secrets such as PINs, keys and "
             "passwords are never included.", count=len(rows))
