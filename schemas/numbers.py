"""English number words: the one speller for scripts that are synthesized and transcripts that
are aligned.

- :func:`cardinal` writes a number as a script would (``"forty-five"``,
  ``"two thousand three hundred"``): the template generator spells the numbers it puts into
  dialogue text with it, so that the TTS says them and the words table holds them as words.
- :func:`number_to_words` reads a transcript token as a speaker says it (``"1999"`` ->
  nineteen ninety nine, ``"21st"`` -> twenty first, ``"3.5"`` -> three point five): the forced
  aligner looks the words up in its pronunciation dictionary, which has no digits.

Both use American style without "and" (``"one hundred fifteen"``) and cover 0 to 999,999,999.
A billion and more is left to the caller: no dialogue template needs it, and a transcript token
that large is more often an id or a phone number than a quantity anyone says as words.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import operator
import re
from typing import SupportsIndex

__all__ = ["NUMBER_LIMIT", "cardinal", "cardinal_words", "number_to_words"]

# Numbers below this are spelled; see the module docstring for why not beyond.
NUMBER_LIMIT = 1_000_000_000

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# Ordinals that are not the cardinal plus "th" ("twenty" -> "twentieth" is handled by rule).
_ORDINAL = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
# A whole number (bare digits, or digits grouped by commas in threes), an optional decimal
# part, and an optional ordinal, plural-decade or percent suffix.
_NUMBER_RE = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th|s|%)?$")


def _parts(n: int) -> list[str]:
    """Space-separated parts of the cardinal of 0 <= n < NUMBER_LIMIT; a compound of tens and
    ones is one hyphenated part (``"forty-five"``)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens] + (f"-{_ONES[ones]}" if ones else "")]
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [_ONES[hundreds], "hundred"] + (_parts(rest) if rest else [])
    if n < 1_000_000:
        thousands, rest = divmod(n, 1000)
        return _parts(thousands) + ["thousand"] + (_parts(rest) if rest else [])
    millions, rest = divmod(n, 1_000_000)
    return _parts(millions) + ["million"] + (_parts(rest) if rest else [])


def _checked(n: SupportsIndex) -> int:
    # operator.index takes Python and numpy integers and refuses floats, so 2.0 is a TypeError.
    if isinstance(n, bool):
        raise TypeError("cardinal takes an int, got bool")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"cardinal takes an int, got {type(n).__name__}") from None
    if not 0 <= value < NUMBER_LIMIT:
        raise ValueError(f"cardinal covers 0..{NUMBER_LIMIT - 1}, got {value}")
    return value


def cardinal(n: SupportsIndex) -> str:
    """English cardinal of ``0 <= n < 1,000,000,000`` as written in a script:
    ``cardinal(45) == "forty-five"``, ``cardinal(2300) == "two thousand three hundred"``.

    Raises TypeError for anything but an integer (``bool`` included) and ValueError outside
    the range.
    """
    return " ".join(_parts(_checked(n)))


def cardinal_words(n: SupportsIndex) -> list[str]:
    """The words of :func:`cardinal`, hyphenated compounds split: ``45 -> ["forty", "five"]``."""
    return [word for part in _parts(_checked(n)) for word in part.split("-")]


def number_to_words(token: str) -> list[str] | None:
    """Spoken words for a simple number token, or None when it is not a simple number.

    Handles integers below a billion (``1,200`` too), decimals (``3.5``: three point five),
    ordinals (``21st``), plural decades (``1990s``) and percentages (``50%``). Four-digit
    numbers from 1100 to 2099 without a comma, except 2000-2009, are read as years, which is
    how they are usually spoken: 1999 nineteen ninety nine, 1905 nineteen oh five, 1900
    nineteen hundred, 2012 twenty twelve.
    """
    m = _NUMBER_RE.match(token)
    if m is None:
        return None
    digits, decimals, suffix = m.group(1).replace(",", ""), m.group(2), m.group(3)
    n = int(digits)
    if n >= NUMBER_LIMIT:
        return None
    if 1100 <= n <= 2099 and "," not in m.group(1) and not decimals and not 2000 <= n <= 2009:
        high, low = divmod(n, 100)
        words = cardinal_words(high) + (
            ["hundred"] if low == 0 else (["oh"] + cardinal_words(low) if low < 10 else cardinal_words(low))
        )
    else:
        words = cardinal_words(n)
    if decimals:
        words += ["point"] + [_ONES[int(d)] for d in decimals]
    if suffix in ("st", "nd", "rd", "th") and not decimals:
        last = words[-1]
        if last in _ORDINAL:
            words[-1] = _ORDINAL[last]
        elif last.endswith("y"):
            words[-1] = last[:-1] + "ieth"
        else:
            words[-1] = last + "th"
    elif suffix == "s" and not decimals:
        last = words[-1]
        words[-1] = last[:-1] + "ies" if last.endswith("y") else last + "s"
    elif suffix == "%":
        words.append("percent")
    return words
