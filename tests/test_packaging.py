"""Packaging: the two distributions built from this repository, and what each one needs.

- ``idp-bridge`` (pyproject.toml): the bridge. ``pip install idp-bridge`` alone gives a working
  CLI, so the server dependencies are its base dependencies; the wheel holds ``idp_bridge``
  and ``scopes`` but not the development OpenID provider (``idp_bridge/devidp``, used from a
  source checkout by ``idp-bridge demo`` and the tests).
- ``idp-bridge-guard`` (guard/pyproject.toml): the resource-server library alone (``scopes``),
  whose requirements are exactly what ``scopes`` imports, Flask only as the ``flask`` extra for
  ``scopes.guard.flask_adapter``.

The wheels are built once per module, offline (``--no-index --no-build-isolation``, with the
setuptools of this environment), from a copy of the sources in a temporary directory.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

#: Declared by the bridge but never imported (by name only, e.g. a driver SQLAlchemy loads by
#: URL). psycopg is imported now (idp_bridge/events.py: LISTEN for revocation wake-ups).
LOADED_BY_NAME: set[str] = set()
#: What a resource server must never load for the guard.
BRIDGE_ONLY = ("idp_bridge", "flask", "werkzeug", "sqlalchemy", "authlib", "alembic", "joserfc",
               "click", "redis", "gunicorn")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- building ---

@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    setuptools = Version(importlib.metadata.version("setuptools"))
    assert setuptools >= Version("70.1"), (
        f"setuptools {setuptools} cannot build a wheel without the wheel package: "
        f"pip install -e '.[test]' installs setuptools>=70.1")
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("idp_bridge", "scopes", "guard"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "-q", "-w", str(out), ".", "./guard"],
        cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    found = {normalize(p.name.split("-")[0]): p for p in out.glob("*.whl")}
    assert set(found) == {"idp-bridge", "idp-bridge-guard"}, found
    return found


def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def requirements(wheel: Path) -> dict[str | None, set[str]]:
    """Requires-Dist by extra (None: the base requirements), as normalized names."""
    by_extra: dict[str | None, set[str]] = {}
    for line in metadata(wheel).get_all("Requires-Dist") or ():
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        extra = re.fullmatch(r'extra == "([^"]+)"', marker)
        assert not marker or extra, f"unexpected marker on {line}"
        by_extra.setdefault(extra and extra.group(1), set()).add(normalize(requirement.name))
    return by_extra


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def extract(wheel: Path, target: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


#: Start of a script run with ``python -S`` (no .pth files, so no editable-install finder
#: that would serve modules from this checkout): the extracted wheel ``sys.argv[1]`` first,
#: then this environment's site-packages (``PACKAGES``), for the dependencies.
ISOLATED_PRELUDE = """
import os, sys
sys.path.insert(0, sys.argv[1])
sys.path += os.environ["PACKAGES"].split(os.pathsep)
"""


def run_isolated(script: str, site: Path, *args: str, cwd: Path) -> str:
    packages = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    result = subprocess.run([sys.executable, "-S", "-c", ISOLATED_PRELUDE + script, str(site),
                             *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PACKAGES": os.pathsep.join(packages)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- what the sources import ---

def imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one module, lazy ones included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def third_party(modules: set[str], own: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in own}


def distributions(modules: set[str]) -> set[str]:
    """The distributions (normalized) that provide these import names in this environment."""
    provided = importlib.metadata.packages_distributions()
    result = set()
    for module in modules:
        dists = {normalize(d) for d in provided.get(module, ())}
        assert len(dists) == 1, f"import {module} comes from {sorted(dists) or 'nothing'}"
        result |= dists
    return result


def bridge_modules() -> list[Path]:
    return [p for p in sorted((ROOT / "idp_bridge").rglob("*.py"))
            if "devidp" not in p.relative_to(ROOT).parts]


# --- idp-bridge ---

def test_bridge_wheel_has_the_cli_and_its_dependencies(wheels):
    wheel = wheels["idp-bridge"]
    base = requirements(wheel)[None]
    assert {"click", "flask", "sqlalchemy", "authlib", "alembic", "gunicorn", "requests",
            "psycopg", "joserfc", "cryptography"} <= base
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in archive.namelist()
                            if n.endswith(".dist-info/entry_points.txt"))
    assert re.search(r"^\[console_scripts\]\s*\nidp-bridge = idp_bridge\.cli:main$",
                     entry_points, re.M), entry_points
    # The README's two commands install '.[bridge]' and '.[test]'.
    assert {"bridge", "test"} <= set(metadata(wheel).get_all("Provides-Extra"))
    assert "setuptools" in requirements(wheel)["test"]  # this file builds offline with it


def test_bridge_requirements_are_what_it_imports(wheels):
    imported = set()
    for path in bridge_modules():
        imported |= imports(path)
    needed = distributions(third_party(imported, {"idp_bridge", "scopes"}))
    declared = requirements(wheels["idp-bridge"])[None]
    assert needed - declared == set(), "imported but not declared"
    assert declared - needed == LOADED_BY_NAME, "declared but not imported"


def test_bridge_wheel_leaves_out_the_development_provider(wheels):
    content = names(wheels["idp-bridge"])
    assert [n for n in content if n.startswith("idp_bridge/devidp") or "devidp" in n] == []
    assert "idp_bridge/cli.py" in content and "scopes/guard/validation.py" in content
    modules = {p.relative_to(ROOT).as_posix() for p in bridge_modules()}
    assert modules <= set(content), sorted(modules - set(content))
    migrations = {p.relative_to(ROOT).as_posix()
                  for p in (ROOT / "idp_bridge/storage/migrations/versions").glob("*.py")}
    assert migrations and migrations <= set(content)
    assert any(n.startswith("idp_bridge/web/templates/") for n in content)
    assert any(n.endswith("LC_MESSAGES/messages.mo") for n in content)


def test_installed_bridge_cli_works_and_demo_asks_for_a_checkout(wheels, tmp_path):
    site = extract(wheels["idp-bridge"], tmp_path / "site")
    run_isolated(textwrap.dedent("""
        import importlib.util
        from click.testing import CliRunner
        import idp_bridge.cli
        assert idp_bridge.cli.__file__.startswith(sys.argv[1]), idp_bridge.cli.__file__
        assert importlib.util.find_spec("idp_bridge.devidp") is None  # else demo would start
        runner = CliRunner()
        help = runner.invoke(idp_bridge.cli.main, ["--help"])
        assert help.exit_code == 0 and "demo" in help.output, help.output
        demo = runner.invoke(idp_bridge.cli.main, ["demo"])
        assert demo.exit_code == 1, (demo.exit_code, demo.output, demo.exception)
        assert "source checkout" in demo.output, demo.output
    """), site, cwd=tmp_path)


# --- idp-bridge-guard ---

def scopes_imports() -> tuple[set[str], set[str]]:
    """(third-party imports of scopes without the Flask adapter, those of the adapter)."""
    core, adapter = set(), set()
    for path in sorted((ROOT / "scopes").rglob("*.py")):
        (adapter if path.name == "flask_adapter.py" else core).update(
            third_party(imports(path), {"scopes"}))
    return core, adapter


def test_guard_requirements_are_exactly_what_scopes_imports(wheels):
    core, adapter = scopes_imports()
    declared = requirements(wheels["idp-bridge-guard"])
    assert declared[None] == distributions(core) == {"cryptography", "requests", "urllib3"}
    assert set(declared) == {None, "flask"}
    assert declared["flask"] == distributions(adapter - core) == {"flask"}


def test_guard_wheel_holds_scopes_and_nothing_else(wheels):
    content = {n for n in names(wheels["idp-bridge-guard"]) if ".dist-info/" not in n}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "scopes").rglob("*.py")}
    assert content == modules


def _closure(requirement_names: set[str]) -> set[str]:
    """Import names of these distributions and of everything they require, as installed."""
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(normalize(dist), set()).add(module)
    seen, todo = set(), set(requirement_names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            required = importlib.metadata.requires(name) or ()
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: then nothing can import it either
        for line in required:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.add(normalize(requirement.name))
    return set().union(*(provided.get(name, set()) for name in seen))


GUARD_PROBE = """
import importlib.abc, json, threading, weakref
allowed = set(json.loads(sys.argv[2])) | set(sys.stdlib_module_names) | {"scopes"}

class OnlyDeclared(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in allowed:
            raise ModuleNotFoundError(f"not a declared dependency: {name}", name=name)
        return None

sys.meta_path.insert(0, OnlyDeclared())
import scopes.guard
assert scopes.guard.__file__.startswith(sys.argv[1]), scopes.guard.__file__
loaded = {m.partition(".")[0] for m in sys.modules}
from scopes.guard import TokenGuard
from scopes.guard.feed import _abortable_session
guard = TokenGuard("https://bridge.example", "konfipay-api")  # its own requests.Session
_abortable_session(guard.http, weakref.WeakSet(), threading.Event()).close()  # urllib3 too
used = {m.partition(".")[0] for m in sys.modules}
try:
    import scopes.guard.flask_adapter
    adapter = "imported"
except ModuleNotFoundError as exc:
    adapter = exc.name
print(json.dumps({"on_import": sorted(loaded), "after_use": sorted(used), "adapter": adapter,
                  "after_adapter": sorted({m.partition(".")[0] for m in sys.modules})}))
"""


def _probe(site: Path, allowed: set[str], cwd: Path) -> dict:
    return json.loads(run_isolated(GUARD_PROBE, site, json.dumps(sorted(allowed)), cwd=cwd))


def test_guard_runs_with_only_its_declared_dependencies(wheels, tmp_path):
    """As if installed next to only its declared requirements: any other import fails."""
    site = extract(wheels["idp-bridge-guard"], tmp_path / "site")
    base = requirements(wheels["idp-bridge-guard"])[None]
    report = _probe(site, _closure(base), tmp_path)
    assert report["adapter"] == "flask"  # the adapter, and only it, needs the extra
    for loaded in (report["on_import"], report["after_use"]):
        assert not {m for m in loaded if m in BRIDGE_ONLY}, loaded
    assert "requests" not in report["on_import"]  # imported when a session is needed
    assert {"requests", "urllib3", "cryptography"} <= set(report["after_use"])


def test_guard_flask_extra_brings_the_adapter(wheels, tmp_path):
    site = extract(wheels["idp-bridge-guard"], tmp_path / "site")
    declared = requirements(wheels["idp-bridge-guard"])
    report = _probe(site, _closure(declared[None] | declared["flask"]), tmp_path)
    assert report["adapter"] == "imported"
    assert "flask" not in report["after_use"]
    assert "flask" in report["after_adapter"]
