"""Free text that people read: one check for every field a tenant or an advisor sees.

A reason, a user-group name, an invitee, a display name end up on the tenant's pages, in its
access log and its CSV export. Control characters (C0, DEL, C1) break lines and terminals;
bidirectional overrides and isolates (Trojan Source, CVE-2021-42574) make ``Ticket 4711``
display as something else than what is stored; unpaired surrogates cannot even be stored as
UTF-8. Such text is refused with a clear error naming the field (never echoing the value),
not silently repaired: the sender learns what is wrong and nothing is stored.

Used by the domain (so the management API, the pages and the token endpoint's ``reason``
all get the same rule) and by views for fields the domain does not see.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidInput

#: Bidirectional formatting characters: embeddings and overrides (U+202A-U+202E), isolates
#: (U+2066-U+2069), the marks LRM, RLM (U+200E, U+200F) and ALM (U+061C).
BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"])
#: Line and paragraph separators: line breaks to anything that splits on them.
SEPARATORS = frozenset("\u2028\u2029")


class TextRefused(InvalidInput):
    """A free-text field that is refused (missing, not a string, too long); ``field`` names
    it, so that a page can say which entry is wrong."""

    def __init__(self, field: str, description: str, *, code: str | None = None):
        super().__init__(description, code=code)
        self.field = field


class UnsafeText(TextRefused):
    """A free-text field with characters that are refused; ``field`` names it."""

    code = "unsafe_text"

    def __init__(self, field: str, description: str):
        super().__init__(field, description)


def unsafe_characters(text: str) -> bool:
    """Whether ``text`` holds a control (C0, DEL, C1), a bidirectional formatting character,
    a line/paragraph separator or an unpaired surrogate."""
    for ch in text:
        if ch in BIDI_CONTROLS or ch in SEPARATORS:
            return True
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return True
    return False


def check_text(value, *, field: str, max_length: int, required: bool = False) -> str | None:
    """``value`` stripped of surrounding spaces, or None when empty (then ``required``
    refuses it). Refuses what is not a string, is longer than ``max_length`` characters or
    holds characters of :func:`unsafe_characters`, with :class:`UnsafeText` /
    :class:`TextRefused` naming ``field``."""
    if value is None:
        if required:
            raise TextRefused(field, f"{field} is required", code="text_required")
        return None
    if not isinstance(value, str):
        raise TextRefused(field, f"{field} must be a string", code="text_not_string")
    value = value.strip()
    if unsafe_characters(value):
        raise UnsafeText(field, f"{field} contains characters that are not allowed "
                                "(control or bidirectional formatting characters)")
    if len(value) > max_length:
        raise TextRefused(field, f"{field} is longer than {max_length} characters",
                          code="text_too_long")
    if not value:
        if required:
            raise TextRefused(field, f"{field} is required", code="text_required")
        return None
    return value
