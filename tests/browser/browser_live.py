"""Real servers and a real browser for the browser tests.

- the development OpenID provider (``upstream`` fixture of tests/conftest.py);
- the bridge, served on a free 127.0.0.1 port with an issuer naming that very URL (the
  example resource server discovers it there), on SQLite, background workers running;
- the example resource server (``deploy/example-resource-server``) with its revocation-feed
  listener, access recording on (the guard's ``start_access_recording``: what advisors read
  there is shipped to the bridge's ``/access-records`` from a spool in the test's folder, as
  in ``idp-bridge demo``) and its page standing for the konfipay application
  (``POST /tenants/<t>/open``, the bridge's ``app_url``), which receives the tokens that
  "open tenant" hands over and shows the areas they may read; the tests also keep what was
  handed over;
- Debian's Chromium driven by Playwright for Python (``executable_path``, no browser
  download). Outside CI a missing Chromium or Playwright skips these tests with the reason;
  with ``CI`` set it fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conftest import RS_CLIENT_ID, ServerThread, build_app
from idp_bridge.app import services
from idp_bridge.settings import Settings
from idp_bridge.storage.models import Client

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
#: Form controls (a date field's "dd.mm.yyyy" or "mm/dd/yyyy", number formats) follow the
#: page's ``<html lang>``: Chromium formats them in its own language (``--lang``, one for the
#: whole browser process) and a context's ``locale`` changes only ``navigator.language``,
#: Accept-Language and ``Intl``. The browser is shared by contexts of both languages, so
#: each page's controls take the page's language instead, as in a browser of that language.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--enable-blink-features=LangAttributeAwareFormControlUI"]
#: Auto-waiting assertions get this long (ms): generous, never a fixed sleep.
TIMEOUT = 30_000
EXAMPLE_RS = ROOT / "deploy" / "example-resource-server" / "example_resource_server.py"


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium and Playwright when CI is set: {reason}. "
                    "Install them with: apt-get install -y chromium && pip install playwright",
                    pytrace=False)
    pytest.skip(f"browser unavailable (set CI=1 to make this a failure): {reason}")


#: The one running browser of this test process. Every test module imports the ``browser``
#: fixture, so pytest holds one session fixture per module; Playwright's sync API runs only
#: once per thread, so the later ones share the first one's browser.
_RUNNING: list = []


@pytest.fixture(scope="session")
def browser():
    if _RUNNING:
        yield _RUNNING[0]
        return
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the Python package playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _RUNNING.append(browser)
        try:
            yield browser
        finally:
            _RUNNING.clear()
            browser.close()


def _load_example_resource_server():
    spec = importlib.util.spec_from_file_location("example_resource_server_for_browser",
                                                  EXAMPLE_RS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Holder:
    """A WSGI app whose real app is set after the port is known."""

    def __init__(self):
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


class LiveSystem:
    def __init__(self, bridge_url, app, rs_url, handed_over):
        self.url = bridge_url
        self.app = app
        self.rs_url = rs_url
        #: What the application page received from "open tenant", newest last.
        self.handed_over = handed_over

    @property
    def services(self):
        return services(self.app)


def application_page(example, guard, handed_over: list):
    """The example resource server with its application page; what the page receives is
    also kept in ``handed_over`` for the tests."""
    from flask import request

    rs_app = example.create_app(guard)

    @rs_app.before_request
    def keep_handed_over():
        if request.endpoint == "open_tenant":
            handed_over.append(request.form.to_dict())

    return rs_app


@pytest.fixture
def live(tmp_path, upstream):
    """The bridge, the example resource server and the application page, served for real."""
    bridge_holder, rs_holder = Holder(), Holder()
    handed_over: list = []
    with ServerThread(bridge_holder) as bridge_server, ServerThread(rs_holder) as rs_server:
        bridge_url = f"http://127.0.0.1:{bridge_server.port}"
        rs_url = f"http://127.0.0.1:{rs_server.port}"
        settings = Settings.load({
            "mode": "test", "issuer": bridge_url,
            "database_url": f"sqlite:///{tmp_path / 'browser.sqlite'}",
            "secret_key": secrets.token_urlsafe(32),
            "key_encryption_key": Fernet.generate_key().decode(),
            "upstream_issuer": upstream.issuer,
            "app_url": rs_url + "/tenants/{tenant}/open",
            "maintenance_interval": 5,
        }, environ={})
        app = build_app(settings)
        bridge_holder.app = app
        with services(app).db.transaction() as session:  # named as in idp-bridge demo
            session.get(Client, RS_CLIENT_ID).name = "Example resource server"
        example = _load_example_resource_server()
        guard = example.TokenGuard(bridge_url, settings.default_audience)
        rs_holder.app = application_page(example, guard, handed_over)
        services(app).start_background()
        guard.start_revocation_listener(RS_CLIENT_ID, app.config["TEST_RS_SECRET"])
        guard.start_access_recording(RS_CLIENT_ID, app.config["TEST_RS_SECRET"],
                                     tmp_path / "access-spool", max_spool_bytes=1024 * 1024)
        try:
            yield LiveSystem(bridge_url, app, rs_url, handed_over)
        finally:
            guard.stop_access_recording()
            guard.stop_revocation_listener()
            services(app).stop_background()


_shot_lock = threading.Lock()


def screenshot(page, name: str, *, commit: bool = False, full_page: bool = True) -> None:
    """Save a screenshot as a test artifact (test-artifacts/, git-ignored) and, for the README,
    under docs/screenshots when ``UPDATE_SCREENSHOTS=1``."""
    with _shot_lock:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page,
                        animations="disabled", caret="hide")
        if commit and os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page,
                            animations="disabled", caret="hide")


def expect():
    """Playwright's auto-waiting ``expect`` with this suite's deadline."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT)
    return playwright_expect


def new_context(browser, locale="en-GB", **kwargs):
    """A browser context of its own (cookies, language) with this suite's deadline."""
    context = browser.new_context(locale=locale, **kwargs)
    context.set_default_timeout(TIMEOUT)
    return context


def sign_in(context, base_url: str, user: str, path: str = "/"):
    """Sign ``user`` in through the development provider's page, like a person would."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(f"{base_url}/login?next={path}")
    page.locator(f"button[name=username][value={user}]").click()
    page.wait_for_url(f"{base_url}{path}*")
    return page
