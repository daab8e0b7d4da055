"""The permission catalog and the fixed advisor profile (DESIGN.md section 4)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scopes
from scopes import catalog
from scopes.catalog import (
    ADVISOR_PROFILE,
    ALL_SCOPES,
    AREAS,
    CATALOG,
    UnknownScope,
    advisor_scopes,
    implied_scopes,
    parse_scope,
    validate_scopes,
)

ROOT = Path(__file__).resolve().parent.parent

# DESIGN.md section 4, row by row: area, German name, group, what an advisor gets.
TABLE = [
    ("bank-accounts", "Bankkonten", "Zahlungsverkehr", {"bank-accounts:read"}),
    ("ebics", "EBICS", "Zahlungsverkehr", {"ebics:read"}),
    ("payments", "ISO 20022- und SEPA-Zahlungen", "Zahlungsverkehr", {"payments:read"}),
    ("foreign-trade-payments", "Außenwirtschaftsverkehrs-Zahlungen", "Zahlungsverkehr",
     {"foreign-trade-payments:read"}),
    ("cash-card-files", "Geldkartendateien", "Zahlungsverkehr", {"cash-card-files:read"}),
    ("account-transactions", "Kontoumsätze", "Zahlungsverkehr", {"account-transactions:read"}),
    ("paypal-accounts", "PayPal-Konten", "Zahlungsverkehr", {"paypal-accounts:read"}),
    ("paypal-transactions", "PayPal-Transaktionen", "Zahlungsverkehr",
     {"paypal-transactions:read"}),
    ("tenant", "Mandant", "Mandantenverwaltung", {"tenant:read"}),
    ("users", "Benutzer", "Mandantenverwaltung", {"users:read"}),
    ("user-groups", "Benutzergruppen", "Mandantenverwaltung", {"user-groups:read"}),
    ("api", "API", "Mandantenverwaltung", {"api:read"}),
    ("evaluation", "Auswertung", "Mandantenverwaltung", {"evaluation:read", "evaluation:write"}),
    ("retention-periods", "Löschfristen", "Mandantenverwaltung", {"retention-periods:read"}),
    ("notifications", "Benachrichtigungen", "Mandantenverwaltung", {"notifications:read"}),
]
EXPECTED_PROFILE = frozenset().union(*(row[3] for row in TABLE))


def test_catalog_has_exactly_the_fifteen_areas_in_order():
    assert len(AREAS) == 15
    assert [a.key for a in AREAS] == [row[0] for row in TABLE]
    assert list(CATALOG) == [row[0] for row in TABLE]


@pytest.mark.parametrize("key, name_de, group, advisor_gets", TABLE, ids=[r[0] for r in TABLE])
def test_area_matches_design_table(key, name_de, group, advisor_gets):
    area = CATALOG[key]
    assert area.key == key
    assert area.name_de == name_de
    assert area.group == group
    assert area.name_en  # every area has an English name too
    assert area.scopes == (f"{key}:read", f"{key}:write")
    assert {s for s in area.scopes if s in ADVISOR_PROFILE} == advisor_gets


def test_advisor_profile_is_exactly_the_right_hand_column():
    assert ADVISOR_PROFILE == EXPECTED_PROFILE
    assert len(ADVISOR_PROFILE) == 16
    assert ADVISOR_PROFILE == {f"{a.key}:read" for a in AREAS} | {"evaluation:write"}
    writes = {s for s in ADVISOR_PROFILE if s.endswith(":write")}
    assert writes == {"evaluation:write"}


def test_advisor_scopes_in_catalog_order():
    ordered = advisor_scopes()
    assert set(ordered) == EXPECTED_PROFILE
    assert list(ordered) == [s for s in ALL_SCOPES if s in EXPECTED_PROFILE]
    assert ordered.index("evaluation:read") + 1 == ordered.index("evaluation:write")


def test_all_scopes_is_every_area_times_read_write():
    assert len(ALL_SCOPES) == 30
    assert set(ALL_SCOPES) == {f"{r[0]}:{a}" for r in TABLE for a in ("read", "write")}


def test_advisor_profile_is_frozen():
    assert type(ADVISOR_PROFILE) is frozenset
    with pytest.raises(AttributeError):
        ADVISOR_PROFILE.add("payments:write")  # type: ignore[attr-defined]


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda c: c.__setitem__("new-area", None), id="setitem"),
    pytest.param(lambda c: c.__setitem__("payments", None), id="overwrite"),
    pytest.param(lambda c: c.__delitem__("payments"), id="delitem"),
    pytest.param(lambda c: c.pop("payments"), id="pop"),
    pytest.param(lambda c: c.update({"x": None}), id="update"),
    pytest.param(lambda c: c.clear(), id="clear"),
])
def test_catalog_is_read_only(mutate):
    with pytest.raises((TypeError, AttributeError)):
        mutate(CATALOG)
    assert len(CATALOG) == 15 and CATALOG["payments"].key == "payments"


def test_areas_are_immutable():
    area = CATALOG["evaluation"]
    with pytest.raises(AttributeError):
        area.group = "x"  # type: ignore[misc]
    assert isinstance(AREAS, tuple)


@pytest.mark.parametrize("key", ["ebics", "api", "paypal-accounts", "users", "notifications"])
def test_areas_with_secrets_declare_what_read_excludes(key):
    excludes = CATALOG[key].read_excludes
    assert isinstance(excludes, tuple) and excludes
    assert all(isinstance(item, str) and item.strip() for item in excludes)


@pytest.mark.slow
def test_scopes_package_imports_nothing_from_idp_bridge():
    script = ("import scopes, scopes.catalog, sys; "
              "bad = [m for m in sys.modules if m.startswith('idp_bridge')]; "
              "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _idp_bridge_references(source: str, depth: int = 0) -> list[str]:
    """Imports of idp_bridge, relative imports leaving the package (``depth``: how deep the
    module sits below ``scopes/``), and code strings naming it (dynamic imports). Docstrings
    may mention it; they are prose, not a dependency."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "idp_bridge"]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "idp_bridge" or node.level > 1 + depth:
                found.append(f"from {'.' * node.level}{node.module or ''}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and "idp_bridge" in node.value and id(node) not in docstrings):
            found.append(repr(node.value))
    return found


def test_scopes_source_does_not_reference_idp_bridge():
    package = ROOT / "scopes"
    files = {f.relative_to(package): f for f in sorted(package.rglob("*.py"))}
    assert {Path("catalog.py"), Path("guard/validation.py")} <= files.keys()
    offenders = {str(name): refs for name, f in files.items()
                 if (refs := _idp_bridge_references(f.read_text(encoding="utf-8"),
                                                    len(name.parts) - 1))}
    assert offenders == {}


@pytest.mark.parametrize("source", [
    "import idp_bridge",
    "from idp_bridge.settings import Settings",
    "import idp_bridge.storage as s",
    "from .. import idp_bridge",
    "import importlib; importlib.import_module('idp_bridge.app')",
])
def test_reference_scan_detects_dependencies(source):
    assert _idp_bridge_references(source)


@pytest.mark.slow
def test_scopes_package_imports_no_flask():
    script = "import scopes, sys; assert 'flask' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_package_exports_the_catalog():
    assert scopes.ADVISOR_PROFILE is ADVISOR_PROFILE
    assert scopes.CATALOG is CATALOG


# --- helpers ---

@pytest.mark.parametrize("value, expected", [
    (None, []),
    ("", []),
    ("payments:read", ["payments:read"]),
    ("payments:read  ebics:read payments:read", ["payments:read", "ebics:read"]),
])
def test_parse_scope(value, expected):
    assert parse_scope(value) == expected


@pytest.mark.parametrize("scopes_", [
    ["payments:delete"], ["payments"], ["unknown:read"], ["payments:read", "PAYMENTS:READ"], [""],
])
def test_validate_scopes_rejects_unknown(scopes_):
    with pytest.raises(UnknownScope):
        validate_scopes(scopes_)


def test_validate_scopes_accepts_catalog_scopes():
    assert validate_scopes(list(ALL_SCOPES)) == list(ALL_SCOPES)


def test_write_implies_read():
    assert implied_scopes({"evaluation:write"}) == {"evaluation:read", "evaluation:write"}
    assert implied_scopes({"payments:read"}) == {"payments:read"}


def test_no_setting_names_the_profile_in_the_catalog_module():
    # The profile is a module constant, not read from the environment or a file.
    source = Path(catalog.__file__).read_text(encoding="utf-8")
    assert "os.environ" not in source and "getenv" not in source and "open(" not in source
