"""The pages' German catalog is complete and compiled: every text of the code and templates
has a German translation, placeholders agree, and the committed .mo matches the .po (a fresh
clone needs no build step)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from idp_bridge.web.i18n import TRANSLATIONS
from idp_bridge.web.rights import EXCLUSIONS, GROUP_NAMES
from scopes.catalog import AREAS

ROOT = Path(__file__).resolve().parents[1]
PO = TRANSLATIONS / "de" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def extracted_ids() -> set:
    with open(ROOT / "babel.cfg", encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = {**DEFAULT_KEYWORDS, "_l": None}
    return {message for _file, _line, message, _comments, _context in
            extract_from_dir(str(ROOT), method_map, options_map, keywords=keywords)}


@pytest.fixture(scope="module")
def catalog():
    with open(PO, "rb") as fh:
        return read_po(fh, locale="de")


def test_every_text_has_a_german_translation(catalog):
    ids = extracted_ids()
    assert len(ids) > 150
    missing = [i for i in ids if i not in catalog or not catalog[i].string
               or (isinstance(catalog[i].string, tuple) and not all(catalog[i].string))]
    assert missing == [], "translate these in messages.po, then pybabel compile"
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert fuzzy == []


def test_the_catalog_has_no_stale_entries(catalog):
    ids = extracted_ids()
    stale = [m.id for m in catalog if m.id and m.id not in ids]
    assert stale == [], "run pybabel update (see idp_bridge/web/i18n.py)"


def test_placeholders_agree(catalog):
    problems = [(message.id, errors) for message, errors in catalog.check() if errors]
    assert problems == []


def test_compiled_catalog_matches_the_po(catalog):
    compiled = BytesIO()
    write_mo(compiled, catalog)
    with open(MO, "rb") as fh:
        committed = read_mo(fh)
    fresh = read_mo(BytesIO(compiled.getvalue()))
    assert _texts(committed) == _texts(fresh), "run: pybabel compile -d idp_bridge/web/translations"
    assert len(_texts(committed)) > 150


def _texts(catalog) -> dict:
    def frozen(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return {frozen(m.id): frozen(m.string) for m in catalog if m.id}


def test_every_exclusion_and_group_of_the_catalog_is_translated():
    assert {item for area in AREAS for item in area.read_excludes} == set(EXCLUSIONS)
    assert {area.group for area in AREAS} == set(GROUP_NAMES)


def test_german_is_written_with_the_products_words(catalog):
    german = {m.id: m.string for m in catalog if m.id}
    assert german["Remove from tenant"] == "Aus Mandant entfernen"
    assert german["User list"] == "Benutzer-Liste"
    assert german["Help page"] == "Hilfeseite"
    assert german["Access code"] == "Zugangscode"
    assert german["Advisor"] == "Kundenberater"
    assert german["Tenant"] == "Mandant"
    assert german["Functional area"] == "Funktionsbereich"
    assert german["temporary"] == "temporär" and german["permanent"] == "permanent"
    assert german["Tenant administrator"] == "Mandanten-Administrator"
