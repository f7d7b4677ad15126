"""The words of visual cues: what a scripted scene can show and what a viewer is asked to notice.

A visual-cue dialogue (``act: "visual_request"`` in :mod:`microturn.schemas.dialogue`) names
objects by shape and colour and asks for a reaction to one of :data:`CUE_KINDS`; the scene
generator (:mod:`microturn.synth.scene`) draws exactly those objects. Both sides read these
vocabularies from here, so a script can only ask for something a scene can show.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond")
# Eight colours far apart in hue and lightness: after H.264 at crf 23 and 4:2:0 chroma (a 40 px
# patch keeps 20 x 20 chroma samples) each stays nearest its own name.
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan")
CUE_KINDS = (
    "appear",     # an object that was not there shows up at the cue time
    "disappear",  # an object on screen from the start is gone at the cue time
    "colour",     # an object on screen changes from ``colour`` to ``to_colour``
    "move",       # an object on screen starts moving
    "repeat",     # an object repeats a motion (a bounce) ``count`` times, one per ``period_ms``
    "text",       # words appear on screen
)
# Text on screen: upper-case letters, digits, space and a little punctuation, at most 24
# characters, so a line fits a 320 px frame in the 5 x 7 bitmap font at scale 2 (12 px a glyph).
SCREEN_TEXT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?:-'")
MAX_SCREEN_TEXT = 24
# A bounce faster than 3 a second is a blur at 10 fps (under 4 frames per repetition); slower
# than one per 3 s is no longer a repeated motion anyone counts. 20 repetitions is a long set.
PERIOD_MS = (300, 3000)
MAX_COUNT = 20

__all__ = ["COLOURS", "CUE_KINDS", "MAX_COUNT", "MAX_SCREEN_TEXT", "PERIOD_MS", "SCREEN_TEXT_CHARS", "SHAPES"]
