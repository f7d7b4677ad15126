"""The project's shape legend (``microturn.schemas.legend``) and the names that use it.

Every suffixed array name in the packages (``dmel_TM``, ``w_gate_EID``) must use only legend
letters and digits, and no module docstring may define a letter of its own ("Legend: N target
positions"): a module says which letters it uses by pointing at the legend.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from microturn.schemas.legend import LEGEND, axes

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "schemas", "pipelines", "synth", "trainer", "kernels", "testing")

# A lower-case name, an underscore, then capitals and digits; a trailing lower-case letter is
# half of that axis (``cos_B1Lq``: half a head). ``\b`` on both sides keeps ALL_CAPS constants
# (``N_MELS``, ``_BLOCK_R``: no lower-case part before the suffix) and CamelCase out.
SUFFIXED = re.compile(r"(?<![\w.])_?([a-z][a-z0-9]*(?:_[a-z0-9]+)*)_([A-Z][A-Z0-9]{0,5}[a-z]?)\b")
# Suffixes that are words or units, not axes.
NOT_SHAPES = {"ID", "IDS", "OK", "MS", "KB", "MB", "GB", "URL", "URI", "UTC", "CPU", "GPU", "IO", "RGB",
              "HZ", "PID", "TOML", "JSON", "CSV", "SHA",
              "VOICE"}  # espeak_VOICE: the C struct of libespeak-ng, named as its header names it


def _python_files():
    for package in PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _undefined(suffix: str) -> str | None:
    """The first character of ``suffix`` that is neither a legend letter nor a digit (a trailing
    lower-case letter counts as its capital), else None."""
    for char in suffix:
        if not (char.isdigit() or char.upper() in LEGEND):
            return char
    return None


def test_legend_has_one_meaning_per_letter_and_its_table_matches():
    assert all(len(letter) == 1 and letter.isupper() for letter in LEGEND)
    assert "O" not in LEGEND  # reads as 0
    assert len(set(LEGEND.values())) == len(LEGEND), "two letters share one meaning"
    import microturn.schemas.legend as legend

    rows: dict[str, str] = {}
    letter = None
    for line in (legend.__doc__ or "").splitlines():
        if re.match(r"^[A-Z]      \S", line):
            letter = line[0]
            rows[letter] = line[7:].strip()
        elif letter is not None and line.startswith(" " * 7) and line.strip():
            rows[letter] += " " + line.strip()  # a row continued on the next line
        else:
            letter = None
    assert rows == dict(LEGEND), "the docstring table and LEGEND disagree"


def test_axes_reads_a_suffix_and_refuses_unknown_letters():
    assert axes("TM") == (LEGEND["T"], LEGEND["M"])
    assert axes("R1")[1] == "an axis of size 1"
    with pytest.raises(ValueError, match="'O'"):
        axes("BO")


def test_scan_finds_suffixes_and_skips_constants():
    line = "x_UD = w_gate_EID[e] @ h_RI; N_MELS = 80; _BLOCK_R = 32; cos_B1Lq; frame_OX; req_ID"
    found = [m.group(2) for m in SUFFIXED.finditer(line)]
    assert found == ["UD", "EID", "RI", "B1Lq", "OX", "ID"]
    assert [s for s in found if s not in NOT_SHAPES and _undefined(s)] == ["OX"]


def test_every_suffixed_name_uses_legend_letters():
    bad = []
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in SUFFIXED.finditer(line):
                suffix = match.group(2)
                if suffix in NOT_SHAPES:
                    continue
                char = _undefined(suffix)
                if char is not None:
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)} ({char!r} is not in the legend)")
    assert not bad, "shape letters missing from microturn.schemas.legend:\n" + "\n".join(bad)


LOCAL_LEGEND = re.compile(r"^\s*(?:Shape |Array )?legend\b[^\n]*:", re.IGNORECASE | re.MULTILINE)


def test_no_module_defines_its_own_legend():
    bad = []
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        for match in LOCAL_LEGEND.finditer(text):
            number = text.count("\n", 0, match.start()) + 1
            bad.append(f"{name}:{number}: {match.group(0).strip()}")
    assert not bad, ("module docstrings that define their own letters (point at microturn.schemas.legend "
                     "instead):\n" + "\n".join(bad))
