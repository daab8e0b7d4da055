"""HTTP helpers shared by discovery, introspection and the revocation feed.

The guard talks to the bridge through a ``requests.Session``-like object (``get``, ``post``,
``request``); ``requests`` itself is imported only when the guard has to make its own session.
"""

from __future__ import annotations

import re

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_NO_CACHE = re.compile(r"(?:^|[,\s])no-(?:store|cache)\b")


class FetchError(Exception):
    """A document could not be had (network, TLS, HTTP status, not JSON): "unavailable"."""


def fetch_json(http, url: str, *, timeout: float, **kwargs):
    """(JSON document, max-age seconds or None) of a GET; raises :class:`FetchError`."""
    try:
        response = http.get(url, timeout=timeout, headers={"Accept": "application/json"},
                            **kwargs)
        if response.status_code != 200:
            raise FetchError(f"GET {url} answered HTTP {response.status_code}")
        document = response.json()
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, TLS, JSON: all mean unavailable
        raise FetchError(f"GET {url} failed: {type(exc).__name__}") from None
    return document, max_age(response.headers.get("Cache-Control"))


def max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be cached per its ``Cache-Control`` (``no-store``/``no-cache``:
    0), or None when it does not say."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def load_requests():
    """The ``requests`` module, with an installation hint when it is missing."""
    try:
        import requests
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("scopes.guard needs requests: pip install idp-bridge-guard, "
                          "or pass http=<a requests.Session-like object>") from None
    return requests
