"""German and English for the pages (Flask-Babel; DESIGN.md section 2: the UI speaks German
and English, code, logs and the API speak English).

The language is the one chosen with the switch (a cookie, so that it survives signing in,
which starts a new session), else the best match of ``Accept-Language``, else English.
Catalogs live in ``translations/<lang>/LC_MESSAGES``; the compiled ``.mo`` files are committed
(``tests/test_pages_i18n.py`` fails when one is older than its ``.po``), so a fresh clone
needs no build step. Update them with::

    pybabel extract -F babel.cfg -k _l -o /tmp/messages.pot --no-location --sort-output .
    pybabel update -i /tmp/messages.pot -d idp_bridge/web/translations --no-fuzzy-matching \
        --ignore-obsolete -w 100
    pybabel compile -d idp_bridge/web/translations
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from flask import request
from flask_babel import Babel, format_datetime, format_time, format_timedelta, get_locale

LANGUAGES = ("de", "en")
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English"}
DEFAULT_LANGUAGE = "en"
TRANSLATIONS = Path(__file__).parent / "translations"


def lang_cookie_name(secure: bool) -> str:
    # __Host- cookies are only accepted over https, host-only, path /.
    return "__Host-idp-bridge-lang" if secure else "idp-bridge-lang"


def select_locale() -> str:
    from flask import current_app

    chosen = request.cookies.get(lang_cookie_name(current_app.config["SESSION_COOKIE_SECURE"]))
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


def init_babel(app, settings) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LANGUAGE
    Babel(app, locale_selector=select_locale, timezone_selector=lambda: settings.web_timezone)
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["in_time"] = in_time
    app.jinja_env.filters["clock"] = clock
    app.jinja_env.filters["time_of_day"] = lambda value: format_time(value, "short")
    app.jinja_env.globals.update(current_language=current_language, LANGUAGE_NAMES=LANGUAGE_NAMES,
                                 LANGUAGES=LANGUAGES, config_timezone=lambda: settings.web_timezone)


def current_language() -> str:
    return str(get_locale() or DEFAULT_LANGUAGE)


def when(value: datetime | None, fmt: str = "short") -> str:
    """A date and time in the reader's language and the configured zone."""
    return format_datetime(value, fmt) if value else "–"


def in_time(value: datetime | None) -> str:
    """How far ``value`` is from now ("in 29 days", "vor 3 Minuten")."""
    if not value:
        return ""
    return format_timedelta(value - datetime.now(timezone.utc), add_direction=True,
                            granularity="minute", threshold=1.0)


def clock(seconds: float) -> str:
    """m:ss or h:mm:ss (the help page's script counts down in the same format)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
