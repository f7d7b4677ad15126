"""The shared number speller: exact spellings, the token reader's forms, and invariants over the
whole range (words only, round trip back to the number, ordinals change only the last word)."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.schemas.numbers import NUMBER_LIMIT, cardinal, cardinal_words, number_to_words

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES = {w: i for i, w in enumerate(_ONES)} | {w: 20 + 10 * k for k, w in enumerate(_TENS)}
_SCALES = {"thousand": 1000, "million": 1_000_000}


def _words_to_int(words: list[str]) -> int:
    total, current = 0, 0
    for w in words:
        if w == "hundred":
            current *= 100
        elif w in _SCALES:
            total += current * _SCALES[w]
            current = 0
        else:
            current += _WORD_VALUES[w]
    return total + current


def _is_year(n: int) -> bool:
    return 1100 <= n <= 2099 and not 2000 <= n <= 2009


numbers = st.integers(min_value=0, max_value=NUMBER_LIMIT - 1)


@pytest.mark.parametrize("n,words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (45, "forty-five"), (100, "one hundred"),
    (115, "one hundred fifteen"), (999, "nine hundred ninety-nine"), (1000, "one thousand"),
    (2300, "two thousand three hundred"),
    (999_999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    (1_000_000, "one million"), (7_000_021, "seven million twenty-one"),
])
def test_cardinal(n, words):
    assert cardinal(n) == words
    assert cardinal(np.int64(n)) == words  # numpy integers are integers


def test_cardinal_rejects():
    with pytest.raises(ValueError):
        cardinal(-1)
    with pytest.raises(ValueError):
        cardinal(NUMBER_LIMIT)
    with pytest.raises(TypeError):
        cardinal(2.0)  # pyright: ignore[reportArgumentType]  # the refusal is what is tested
    with pytest.raises(TypeError):
        cardinal(True)
    with pytest.raises(TypeError):
        cardinal_words("3")  # pyright: ignore[reportArgumentType]  # the refusal is what is tested


@pytest.mark.parametrize("token,words", [
    ("42", ["forty", "two"]), ("1,200", ["one", "thousand", "two", "hundred"]),
    ("3.5", ["three", "point", "five"]), ("1999", ["nineteen", "ninety", "nine"]),
    ("1905", ["nineteen", "oh", "five"]), ("1900", ["nineteen", "hundred"]),
    ("2012", ["twenty", "twelve"]), ("2005", ["two", "thousand", "five"]),
    ("21st", ["twenty", "first"]), ("12th", ["twelfth"]), ("40th", ["fortieth"]),
    ("1990s", ["nineteen", "nineties"]), ("50%", ["fifty", "percent"]),
    ("1,000,000", ["one", "million"]),
])
def test_number_to_words(token, words):
    assert number_to_words(token) == words


@pytest.mark.parametrize("token", ["", "abc", "1.", ".5", "1,00", "12a", "1,000,000,000", "-3"])
def test_number_to_words_refuses_what_is_not_a_simple_number(token):
    assert number_to_words(token) is None


@given(numbers)
def test_cardinal_is_words_and_reads_back(n: int):
    text = cardinal(n)
    assert re.fullmatch(r"[a-z]+(?:-[a-z]+)?(?: [a-z]+(?:-[a-z]+)?)*", text)
    words = cardinal_words(n)
    assert words == text.replace("-", " ").split()
    assert _words_to_int(words) == n


@given(numbers)
def test_number_words_round_trip(n: int):
    words = number_to_words(str(n))
    assert words is not None
    if not _is_year(n) or n % 100 == 0:
        # Years of whole hundreds read as cardinals of hundreds ("nineteen hundred").
        assert _words_to_int(words) == n
    else:
        high, low = divmod(n, 100)
        high_words = number_to_words(str(high))
        assert high_words is not None
        tail = words[len(high_words):]
        assert _words_to_int(high_words) == high
        assert _words_to_int([w for w in tail if w != "oh"]) == low
    if not _is_year(n):
        assert words == cardinal_words(n)
        assert number_to_words(f"{n:,}") == words  # grouped digits read the same


@given(numbers, st.sampled_from(["st", "nd", "rd", "th"]))
def test_ordinal_changes_only_the_last_word(n: int, suffix: str):
    plain, ordinal = number_to_words(str(n)), number_to_words(f"{n}{suffix}")
    assert plain is not None and ordinal is not None
    assert ordinal[:-1] == plain[:-1]
    assert ordinal[-1] != plain[-1] and ordinal[-1].endswith(("st", "nd", "rd", "th"))


@given(numbers, st.text(alphabet="0123456789", min_size=1, max_size=6))
def test_decimals_are_read_digit_by_digit(n: int, decimals: str):
    words = number_to_words(f"{n}.{decimals}")
    assert words is not None
    point = words.index("point")
    assert words[:point] == cardinal_words(n)
    assert words[point + 1:] == [_ONES[int(d)] for d in decimals]
