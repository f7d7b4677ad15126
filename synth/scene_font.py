"""A 5 x 7 bitmap font for the text of synthetic scenes (:mod:`microturn.synth.scene`).

Shape suffixes follow :mod:`microturn.schemas.legend`; a text mask is rows x columns of pixels
(named ``mask_HW``).

The glyphs cover exactly :data:`microturn.schemas.visual.SCREEN_TEXT_CHARS`: A-Z, 0-9, space and
``.,!?:-'``. They are written here as data (``#`` ink, ``.`` paper) so that rendering needs only
numpy: no font file and no imaging library. A glyph cell is 5 columns and 7 rows of ink plus one
column of spacing, so at scale 2 a character takes 12 px and the longest screen text (24
characters) 286 px, which fits a 320 px frame.
"""

from __future__ import annotations

from functools import cache

import numpy as np

GLYPH_W = 5
GLYPH_H = 7
# One blank column between glyphs (scaled with them): 6 columns a character, the last one dropped.
GLYPH_GAP = 1

GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    "!": ("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "'": ("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."),
}


def text_width_px(n_chars: int, scale: int) -> int:
    """Width in pixels of ``n_chars`` characters at ``scale`` (no trailing gap)."""
    if n_chars <= 0:
        return 0
    return (n_chars * (GLYPH_W + GLYPH_GAP) - GLYPH_GAP) * scale


@cache
def glyph_mask(char: str) -> np.ndarray:
    """The 7 x 5 boolean ink mask of one character (read-only); KeyError names an unknown one."""
    try:
        rows = GLYPHS[char]
    except KeyError:
        raise KeyError(f"no glyph for {char!r}: the font covers A-Z, 0-9, space and .,!?:-'") from None
    mask_HW = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    mask_HW.flags.writeable = False
    return mask_HW


def text_mask(text: str, scale: int) -> np.ndarray:
    """The boolean ink mask of ``text`` on one line, each font pixel a ``scale`` x ``scale`` block.

    Shape (7 * scale, text_width_px(len(text), scale)); an empty text gives a (7 * scale, 0) mask.
    """
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    mask_HW = np.zeros((GLYPH_H, max(0, len(text) * (GLYPH_W + GLYPH_GAP) - GLYPH_GAP)), dtype=bool)
    for i, char in enumerate(text):
        x = i * (GLYPH_W + GLYPH_GAP)
        mask_HW[:, x:x + GLYPH_W] = glyph_mask(char)
    return np.repeat(np.repeat(mask_HW, scale, axis=0), scale, axis=1)


__all__ = ["GLYPHS", "GLYPH_GAP", "GLYPH_H", "GLYPH_W", "glyph_mask", "text_mask", "text_width_px"]
