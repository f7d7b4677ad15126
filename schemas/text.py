"""Text that reaches a table or a terminal: which characters are refused, and how values are shown.

Two rules, one for every stage and tool:

- **Input text is checked at the boundary** (:func:`refused_char`). Dialogue scripts are
  NFC-normalised and their whitespace of every kind (tab, CR, LF, NEL, U+2028, ...) collapses to
  one space; what remains is refused, not stripped, when it holds a control character (Unicode
  category Cc: C0 U+0000-U+001F, DEL U+007F, C1 U+0080-U+009F), a lone surrogate (Cs:
  ``"\\ud800"`` is valid JSON but no character, UTF-8 cannot encode it, so Parquet cannot store it)
  or a bidirectional embedding, override or isolate (U+202A-U+202E, U+2066-U+2069), which
  reorders how the text around it is displayed. Refused rather than stripped: removing the ESC
  of ``"\\x1b[31mhello"`` would leave ``"[31mhello"`` to be spoken, and espeak-ng stops reading a
  text at a NUL, so ``"hello\\x00world"`` would silently lose ``world``.
- **Values are escaped on display** (:func:`visible`). Tables can come from anywhere, so every
  value a command prints (``microturn audit``, ``audit report``, ``eval``) shows each control
  (Cc), surrogate (Cs), format character (Cf: bidi controls, zero-width characters, tag
  characters, BOM) and line or paragraph separator (Zl, Zp) as a visible escape: ``\\x1b``,
  ``\\u202e``, ``\\U000e0041``. A value then cannot move the cursor, recolour or clear the
  terminal, or hide or reorder text.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["BIDI_CONTROLS", "refused_char", "describe_char", "visible", "visible_json"]

# Embeddings and overrides (LRE RLE PDF LRO RLO) and isolates (LRI RLI FSI PDI). The marks
# (LRM U+200E, RLM U+200F, ALM U+061C) only set the direction of neutral characters and are
# legitimate in right-to-left text, so input keeps them (display still escapes them).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

_DISPLAY_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def refused_char(text: str) -> tuple[int, str] | None:
    """The first character of ``text`` that input text may not hold, with its index, or None.

    Refused: controls (Cc; whitespace controls are expected to be collapsed before this check,
    so a tab left here is refused too), lone surrogates (Cs) and :data:`BIDI_CONTROLS`.
    """
    for i, ch in enumerate(text):
        if ch in BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs"):
            return i, ch
    return None


def describe_char(ch: str) -> str:
    """``U+001B`` plus the character's name where Unicode gives one: ``U+202E RIGHT-TO-LEFT OVERRIDE``."""
    name = unicodedata.name(ch, "")
    if unicodedata.category(ch) == "Cs":
        name = "lone surrogate"
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(ch: str) -> bool:
    return unicodedata.category(ch) in _DISPLAY_CATEGORIES


# Everything outside printable ASCII, tested one character at a time only when present (the
# common all-ASCII value costs one regex search).
_SUSPECT = re.compile(r"[^\x20-\x7e]")


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with every control, surrogate, format and separator character (categories Cc,
    Cs, Cf, Zl, Zp) written as a visible escape (``\\x1b``, ``\\u202e``, ``\\U000e0041``), except
    the characters in ``keep`` (e.g. ``"\\n"`` for multi-line text). Safe to print to a terminal."""
    if not _SUSPECT.search(text):
        return text
    return "".join(_escape(ch) if ch not in keep and _needs_escape(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, the only way JSON writes an astral code point
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible_json(text: str) -> str:
    """JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it) with the characters
    :func:`visible` escapes written as JSON escapes (``\\u001b``, ``\\u202e``), so it parses back to
    the same value and is safe to print. Such characters can only stand inside JSON strings,
    where an escape means the same character; a raw tab or newline can only be the whitespace
    between tokens (json.dumps escapes them inside strings) and is kept."""
    if not _SUSPECT.search(text):
        return text
    return "".join(_json_escape(ch) if ch not in "\t\n\r" and _needs_escape(ch) else ch for ch in text)
