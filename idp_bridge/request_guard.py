"""What every request must satisfy before any view sees it (DESIGN.md section 9: bad input
gets a clear error and changes nothing, never a 500).

Text that no legitimate request carries and that storage cannot hold is refused here, once,
for every endpoint and page, with ``400 invalid_request``:

- a NUL character anywhere in the path, the query, form fields or JSON strings (PostgreSQL
  text cannot hold NUL: a lookup with one failed inside the database driver);
- an unpaired surrogate in a JSON string (``"\\ud800"`` is valid JSON but no UTF-8 text:
  SQLite's and PostgreSQL's drivers both fail to encode it);
- a JSON body that does not parse (also when nested so deep that the parser gives up), is
  nested deeper than :data:`MAX_JSON_DEPTH`, or uses ``NaN``/``Infinity`` (not JSON,
  RFC 8259 section 6, though Python's parser accepts them).

Query and form bytes that are not UTF-8 are decoded by Werkzeug with replacement
characters, so they reach views as ordinary (wrong) text; the size of a body is limited by
``max_request_bytes`` (413).
"""

from __future__ import annotations

import json

from flask import request as _flask_request

from werkzeug.exceptions import BadRequest

#: Deepest JSON nesting accepted (the API's and the feed's bodies are two or three levels
#: deep).
MAX_JSON_DEPTH = 32


class RejectedInput(BadRequest):
    """A request refused at the boundary; the description names the part, never the value."""


def check_request(req=None) -> None:
    """``before_request`` hook: raise :class:`RejectedInput` for a request carrying text
    that no view may see. ``req``: a Werkzeug request (the lean token endpoint, no Flask
    context); default Flask's current request."""
    request = _current() if req is None else req
    if "\x00" in request.path:
        raise RejectedInput("the path contains a NUL character")
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise RejectedInput("a query parameter contains a NUL character")
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in request.form.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise RejectedInput("a form field contains a NUL character")
    elif request.is_json and request.content_length != 0:
        _check_json_body(request)


def _current():
    return _flask_request._get_current_object()


def _check_json_body(request) -> None:
    data = request.get_data(cache=True)
    if not data:
        return
    try:
        body = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RejectedInput("the request body is not valid JSON") from None
    problem = _problem(body, 0)
    if problem:
        raise RejectedInput(problem)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _problem(value, depth: int) -> str | None:
    """What is wrong with a parsed JSON value, or None."""
    if isinstance(value, str):
        return _text_problem(value)
    if depth >= MAX_JSON_DEPTH and isinstance(value, (dict, list)):
        return f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _text_problem(key) or _problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _problem(item, depth + 1)
            if problem:
                return problem
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a JSON string contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a JSON string contains an unpaired surrogate"
    return None


#: Largest integer a query parameter may name: row ids and counts stay far below it, it is
#: exact in JSON numbers (2**53) and it fits every integer column (64-bit).
MAX_QUERY_INT = 2 ** 53


def parse_int(value, low: int = 1, high: int = MAX_QUERY_INT) -> int | None:
    """``value`` (a query or form string) as an integer from ``low`` to ``high``, else None.
    Only ASCII digits with an optional ``-``: no spaces, ``_``, ``+``, exponents or other
    scripts' digits (``int()`` accepts ``"١٢"`` and ``" 1_0 "``); more than 20 characters
    are refused before any conversion."""
    if not isinstance(value, str) or not 0 < len(value) <= 20:
        return None
    digits = value[1:] if value.startswith("-") else value
    if not digits or not all("0" <= ch <= "9" for ch in digits):
        return None
    number = int(value)
    return number if low <= number <= high else None
