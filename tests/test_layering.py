"""The layers keep their promises (docs/architecture.md): views -> services -> domain ->
storage, one way.

- the domain and the application services import no Flask (checked twice: in a fresh
  interpreter, by what importing them loads; and in their source, by what they name);
- a view module (``api/``, ``web/``, ``oauth/views.py``, ``ssf/views.py``,
  ``upstream/views.py``) imports neither SQLAlchemy nor the ORM models, and opens no unit
  of work (``db.transaction()`` / ``db.read()``): it calls a service;
- ``scopes/`` imports nothing of ``idp_bridge`` (a resource server installs it alone).

Imports are read from the source with :mod:`ast`, relative ones resolved, so an import inside
a function counts too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "idp_bridge"
VIEW_MODULES = sorted([*(PACKAGE / "api").glob("*.py"), *(PACKAGE / "web").glob("*.py"),
                       PACKAGE / "oauth" / "views.py", PACKAGE / "ssf" / "views.py",
                       PACKAGE / "upstream" / "views.py"])
NO_FLASK = sorted([*(PACKAGE / "domain").rglob("*.py"), *(PACKAGE / "services").rglob("*.py")])
FLASK_MODULES = ("flask", "flask_babel", "flask_wtf", "werkzeug")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` counts ``x`` and
    ``x.y``, since ``y`` may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _is(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_view_modules_are_found():
    names = {module_name(p) for p in VIEW_MODULES}
    assert {"idp_bridge.api.tenant_admin", "idp_bridge.api.advisor", "idp_bridge.api.support",
            "idp_bridge.api.groups", "idp_bridge.web.tenant", "idp_bridge.oauth.views"} <= names


@pytest.mark.parametrize("path", VIEW_MODULES, ids=module_name)
def test_views_import_no_sqlalchemy_and_no_models(path):
    wrong = sorted(m for m in imported_modules(path)
                   if _is(m, "sqlalchemy", "idp_bridge.storage.models"))
    assert wrong == [], f"{module_name(path)} reaches below the services: call one instead"


@pytest.mark.parametrize("path", VIEW_MODULES, ids=module_name)
def test_views_open_no_unit_of_work(path):
    """No ``….db.transaction()`` / ``….db.read()`` in a view: the service opens it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("transaction", "read")
             and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "db"]
    assert calls == [], f"{module_name(path)} opens a unit of work on lines {calls}"


@pytest.mark.parametrize("path", NO_FLASK, ids=module_name)
def test_domain_and_services_name_no_flask(path):
    wrong = sorted(m for m in imported_modules(path) if _is(m, *FLASK_MODULES))
    assert wrong == [], f"{module_name(path)} must not know the web framework"


@pytest.mark.slow  # a fresh interpreter
def test_importing_domain_and_services_loads_no_flask():
    modules = [module_name(p) for p in NO_FLASK]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {FLASK_MODULES!r}]\n"
        "print(json.dumps(sorted(loaded)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("path", sorted((ROOT / "scopes").rglob("*.py")), ids=module_name)
def test_scopes_import_nothing_of_the_bridge(path):
    wrong = sorted(m for m in imported_modules(path) if _is(m, "idp_bridge"))
    assert wrong == []
