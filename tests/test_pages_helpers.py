"""Helpers of the web page tests (test_pages_*.py): signing in through the development
provider, reading CSRF tokens, posting forms. No tests here."""

from __future__ import annotations

import re
from html import unescape

from test_web_login import edit_signed_in_user, sign_in

__all__ = ["sign_in", "signed_in", "edit_signed_in_user", "csrf_token", "post_form_page",
           "text_of", "DE", "EN"]

DE = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}


def signed_in(app, user: str):
    """A fresh test client with ``user`` signed in."""
    client = app.test_client()
    response = sign_in(client, user)
    assert response.status_code == 302, response.text
    return client


def csrf_token(client, path: str = "/") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def post_form_page(client, path: str, data: dict | None = None, *, token_from: str = "/",
                   headers=None):
    """POST a page form with a valid CSRF token (taken from ``token_from``)."""
    form = dict(data or {})
    form["csrf_token"] = csrf_token(client, token_from)
    return client.post(path, data=form, headers=headers)


def text_of(response) -> str:
    """The page's visible text, roughly: tags removed, entities decoded, spaces collapsed."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.text, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body))).strip()
