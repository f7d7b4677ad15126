"""Scripted synthetic scenes for visual-cue dialogues: objects that appear, vanish, change colour,
move, bounce, and words that show up on screen, at frame-exact times.

Shape suffixes follow :mod:`microturn.schemas.legend`: F frames, H pixel rows, W pixel columns,
C the 3 colour channels (a frame is ``frame_HWC``, uint8 RGB).

A :class:`SceneSpec` lists the cues a dialogue asks about (:class:`SceneCue`, in the words of
:mod:`microturn.schemas.visual`) and a seed. Everything else follows from the seed, so one spec
always gives the same frames (and, through :mod:`microturn.synth.scene_video`, the same MP4 bytes):

- the background: a soft vertical gradient of a dark, slightly tinted grey (never near any of
  :data:`RGB`), with a faint horizontal ramp, so that H.264 sees something like a real backdrop;
- the layout: the frame above a bottom text band of :data:`TEXT_BAND_PX` is cut into cells of
  :data:`CELL_PX`; every object owns a rectangle of free cells chosen by the seed (a "move" object
  three cells in a row, its glide path; a "repeat" object two in a column, its bounce), so no
  two objects ever overlap and each is fully visible whenever it is present;
- ``distractors`` other objects, each with one random event (appear, disappear, colour or move)
  at a random frame, whose (shape, colour) pairs differ from every pair a cue shows.

Time: frame ``i`` is shown at ``i * frame_ms(fps)`` (100 ms at the project's 10 fps), and a cue at
``t_ms`` happens on the first frame at or after it (:func:`snap_ms`). :func:`scene_events` reports
what happened on which frame; :func:`cue_times` the time(s) a viewer can answer a cue.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from microturn.schemas.sample import VIDEO_FPS
from microturn.schemas.visual import (
    COLOURS,
    CUE_KINDS,
    MAX_COUNT,
    MAX_SCREEN_TEXT,
    PERIOD_MS,
    SCREEN_TEXT_CHARS,
    SHAPES,
)
from microturn.synth.scene_font import GLYPH_H, text_mask, text_width_px

# 10 fps (schemas.sample.VIDEO_FPS) -> one frame every 100 ms.
FRAME_MS = 1000 // VIDEO_FPS
# Frame sizes are whole 40 x 40 px patches of the shard stage (320 x 240 = 8 x 6 = 48 patches).
PATCH_PX = 40
# Object cells: 64 px holds an object of up to 56 px with a 4 px margin; 320 x 240 gives a grid of
# 5 x 3 cells above the text band (200 px high, 8 px left over as margin).
CELL_PX = 64
# Object sides: 44-56 px (even), inside the ~40-70 px a viewer sees as a distinct thing at 320 x 240.
OBJECT_PX = (44, 56)
# The bottom 40 px (one row of patches) is the text band: scale 3 glyphs are 21 px high, scale 2 14.
TEXT_BAND_PX = 40
TEXT_MARGIN_PX = 4
# A bounce rises half a cell (32 px, 4-5 times the 7 px an H.264 block may smear): unmistakable.
RISE_PX = CELL_PX // 2
# A move glides over two cells (128 px, 40% of a 320 px frame) in 1.5 s: slow enough to follow at
# 10 fps (8-9 px a frame), fast enough to be done within a spoken reply.
MOVE_CELLS = 3
GLIDE_MS = 1500
# The layout search gives up after this many tried placements (a 5 x 3 grid needs a few dozen).
_PLACEMENT_BUDGET = 20_000

# Far apart in RGB (Euclidean): the closest pairs are yellow-orange 110, red-orange 116,
# blue-purple 129, every other over 150; the background greys stay within 14-146 on every channel
# (grey 60-100, tint +-12, gradient +-30, ramp +-4), far from all eight.
RGB: dict[str, tuple[int, int, int]] = {
    "red": (210, 20, 30),
    "green": (20, 180, 40),
    "blue": (30, 60, 230),
    "yellow": (235, 230, 30),
    "purple": (140, 30, 170),
    "orange": (250, 125, 0),
    "white": (245, 245, 245),
    "cyan": (20, 210, 220),
}
TEXT_RGB = (245, 245, 245)
BAND_RGB = (24, 24, 28)

# Event kinds in the order events of one frame are listed.
_KIND_ORDER = {kind: i for i, kind in enumerate((*CUE_KINDS, "rep"))}
_DISTRACTOR_KINDS = ("appear", "disappear", "colour", "move")


def frame_ms(fps: int = VIDEO_FPS) -> int:
    """Milliseconds between frames at ``fps``, which must divide 1000 (10 fps -> 100 ms)."""
    if not _is_int(fps) or fps <= 0 or 1000 % fps:
        raise ValueError(f"fps must be a positive integer that divides 1000 (e.g. 10, 20, 25), got {fps!r}")
    return 1000 // fps


def snap_ms(t_ms: int, *, fps: int = VIDEO_FPS) -> int:
    """The time of the first frame at or after ``t_ms`` (ceil to the frame grid of ``fps``)."""
    step = frame_ms(fps)
    return -(-t_ms // step) * step


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True, kw_only=True)
class SceneCue:
    """One scripted visual event at an absolute time of the conversation.

    ``t_ms`` is when it happens (for "repeat": when the first repetition starts); it is shown on
    the first frame at or after it. ``shape``/``colour`` name the object (ignored for "text");
    for "colour" ``colour`` is the colour before the change and ``to_colour`` the one after.
    ``text`` is only for "text", ``count`` and ``period_ms`` only for "repeat".
    """

    kind: str
    t_ms: int
    shape: str = "circle"
    colour: str = "red"
    to_colour: str | None = None
    text: str | None = None
    count: int | None = None
    period_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CUE_KINDS:
            raise ValueError(f"unknown cue kind {self.kind!r}: use one of {', '.join(CUE_KINDS)}")
        if not _is_int(self.t_ms) or self.t_ms < 0:
            raise ValueError(f"{self.kind} cue: t_ms must be a non-negative integer (ms), got {self.t_ms!r}")
        owners = {"to_colour": "colour", "text": "text", "count": "repeat", "period_ms": "repeat"}
        for name, owner in owners.items():
            if getattr(self, name) is not None and self.kind != owner:
                raise ValueError(f"{self.kind} cue: {name} is only for {owner!r} cues; leave it None")
        if self.kind != "text":
            if self.shape not in SHAPES:
                raise ValueError(f"{self.kind} cue: unknown shape {self.shape!r}: use one of {', '.join(SHAPES)}")
            if self.colour not in COLOURS:
                raise ValueError(f"{self.kind} cue: unknown colour {self.colour!r}: use one of {', '.join(COLOURS)}")
        if self.kind == "colour":
            if self.to_colour is None:
                raise ValueError("colour cue: to_colour is required (the colour after the change)")
            if self.to_colour not in COLOURS:
                raise ValueError(f"colour cue: unknown to_colour {self.to_colour!r}: use one of {', '.join(COLOURS)}")
            if self.to_colour == self.colour:
                raise ValueError(f"colour cue: to_colour must differ from colour (both {self.colour!r})")
        elif self.kind == "text":
            self._check_text()
        elif self.kind == "repeat":
            count, period = self.count, self.period_ms
            if not (isinstance(count, int) and _is_int(count) and 1 <= count <= MAX_COUNT):
                raise ValueError(f"repeat cue: count must be an integer 1..{MAX_COUNT}, got {self.count!r}")
            lo, hi = PERIOD_MS
            if not (isinstance(period, int) and _is_int(period) and lo <= period <= hi):
                raise ValueError(f"repeat cue: period_ms must be an integer {lo}..{hi} (ms per repetition), "
                                 f"got {self.period_ms!r}")

    def _check_text(self) -> None:
        text = self.text
        if not isinstance(text, str):
            raise ValueError(f"text cue: text is required (a string), got {text!r}")
        if not 1 <= len(text) <= MAX_SCREEN_TEXT:
            raise ValueError(f"text cue: text must have 1..{MAX_SCREEN_TEXT} characters, got {len(text)}: {text!r}")
        bad = sorted(set(text) - SCREEN_TEXT_CHARS)
        if bad:
            raise ValueError(f"text cue: {text!r} has characters the screen font lacks: {''.join(bad)!r} "
                             "(use upper-case A-Z, 0-9, space and .,!?:-')")
        if not text.strip():
            raise ValueError("text cue: text of only spaces shows nothing")

    @property
    def object_name(self) -> str:
        """How a script names the cue's object ("red circle"), or the text for a text cue."""
        return (self.text or "") if self.kind == "text" else f"{self.colour} {self.shape}"

    def pairs(self) -> frozenset[tuple[str, str]]:
        """Every (shape, colour) pair the cue's object shows on screen (two for "colour")."""
        if self.kind == "text":
            return frozenset()
        pairs = {(self.shape, self.colour)}
        if self.to_colour is not None:
            pairs.add((self.shape, self.to_colour))
        return frozenset(pairs)


@dataclass(frozen=True, kw_only=True)
class SceneSpec:
    """A whole scene: its length, the scripted cues, the seed of everything else, the frame size.

    ``width`` and ``height`` are multiples of the 40 px patch; ``fps`` divides 1000. Every cue must
    be visible inside the scene after at least one frame without it (``t_ms`` > 0, and a repeat's
    last repetition ends on a frame before ``duration_ms``); no two cues show the same (shape,
    colour) pair (a viewer could not tell which is meant); two text cues fall on different frames.
    The objects of the cues and ``distractors`` others must fit the frame's grid of cells.
    """

    duration_ms: int
    cues: tuple[SceneCue, ...]
    seed: int
    width: int = 320
    height: int = 240
    fps: int = VIDEO_FPS
    distractors: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.cues, tuple):
            object.__setattr__(self, "cues", tuple(self.cues))
        for i, cue in enumerate(self.cues):
            if not isinstance(cue, SceneCue):
                raise ValueError(f"cue {i} is a {type(cue).__name__}, not a SceneCue")
        for name in ("duration_ms", "width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("width", "height"):
            if getattr(self, name) % PATCH_PX:
                raise ValueError(f"{name} must be a multiple of the {PATCH_PX} px patch (e.g. 320 x 240), "
                                 f"got {getattr(self, name)}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _is_int(self.distractors) or self.distractors < 0:
            raise ValueError(f"distractors must be a non-negative integer, got {self.distractors!r}")
        step = frame_ms(self.fps)
        n_frames = frame_count(self)
        seen: dict[tuple[str, str], int] = {}
        text_frames: dict[int, int] = {}
        for i, cue in enumerate(self.cues):
            where = f"cue {i} ({cue.kind} {cue.object_name!r} at {cue.t_ms} ms)"
            if cue.t_ms <= 0:
                raise ValueError(f"{where}: t_ms must be > 0, so that the frame before shows the scene without it")
            if cue.kind == "repeat" and _period_frames(cue, self.fps) < 2:
                raise ValueError(f"{where}: period_ms={cue.period_ms} is under 2 frames at {self.fps} fps; "
                                 "a bounce needs a raised frame and a frame at rest")
            last_ms = _cue_frames(cue, self.fps)[-1] * step
            if last_ms >= self.duration_ms:
                raise ValueError(f"{where}: shows at {last_ms} ms, past the last frame of the "
                                 f"{self.duration_ms} ms scene ({(n_frames - 1) * step} ms); "
                                 "make the scene longer or the cue earlier")
            for pair in sorted(cue.pairs()):
                if pair in seen:
                    raise ValueError(f"{where}: cue {seen[pair]} also shows a {pair[1]} {pair[0]}; a viewer "
                                     "could not tell them apart: give each cue's object its own shape/colour")
                seen[pair] = i
            if cue.kind == "text":
                assert cue.text is not None
                if text_width_px(len(cue.text), 2) > self.width - 2 * TEXT_MARGIN_PX:
                    raise ValueError(f"{where}: {len(cue.text)} characters need {text_width_px(len(cue.text), 2)} "
                                     f"px at scale 2, more than a {self.width} px frame holds")
                frame = _start_frame(cue, self.fps)
                if frame in text_frames:
                    raise ValueError(f"{where}: text cue {text_frames[frame]} shows on the same frame "
                                     f"({frame * step} ms); only one text is on screen at a time")
                text_frames[frame] = i
        texts = sorted((frame, i) for frame, i in text_frames.items())
        for (_, a), (_, b) in pairwise(texts):
            if self.cues[a].text == self.cues[b].text:
                raise ValueError(f"cue {b} (text {self.cues[b].text!r}) shows the text already on screen "
                                 f"from cue {a}; the band would not change")
        _plan(self)  # the layout: raises ValueError when the objects do not fit


def frame_count(spec: SceneSpec) -> int:
    """How many frames the scene has: ceil(duration_ms / frame time)."""
    return -(-spec.duration_ms // frame_ms(spec.fps))


def _period_frames(cue: SceneCue, fps: int) -> int:
    assert cue.period_ms is not None
    return snap_ms(cue.period_ms, fps=fps) // frame_ms(fps)


def _start_frame(cue: SceneCue, fps: int) -> int:
    """The cue's first frame: the first that shows it (for a repeat, the first raised one)."""
    return snap_ms(cue.t_ms, fps=fps) // frame_ms(fps)


def _cue_frames(cue: SceneCue, fps: int) -> tuple[int, ...]:
    """Frame indices a viewer can answer the cue at (see :func:`cue_times`)."""
    first = _start_frame(cue, fps)
    if cue.kind != "repeat":
        return (first,)
    assert cue.count is not None
    period = _period_frames(cue, fps)
    # Repetition k occupies frames first + (k-1) * period .. first + k * period - 1 and is back at
    # rest on its last frame.
    return tuple(first + k * period - 1 for k in range(1, cue.count + 1))


@dataclass(frozen=True)
class VisualEvent:
    """What happened on screen, at a frame-exact time.

    ``t_ms``: time of the first frame that shows it. ``kind``: one of CUE_KINDS, or "rep" for the
    end of each repetition of a repeat (the frame where the object is back at rest). ``object``:
    "red circle", or the text for "text". ``cue``: index into ``SceneSpec.cues``, None for a
    distractor. ``detail``: {"from", "to"} for colour; {"count", "period_ms"} for repeat;
    {"rep", "count"} for rep; {"dx_px", "until_ms"} for move (signed travel, the frame it arrives,
    which may lie past the end of the scene).
    """

    t_ms: int
    kind: str
    object: str
    cue: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene's layout: its looks, its rest place and its one event.

    ``x``/``y``: top-left pixel at rest; ``box``: (x0, y0, x1, y1), the pixel rectangle (end
    exclusive) of the cells it owns, which it never leaves and no other object enters. ``frame``:
    frame index of its event (it may be past the last frame for a distractor of a short scene).
    """

    shape: str
    colour: str
    size: int
    x: int
    y: int
    box: tuple[int, int, int, int]
    cue: int | None
    kind: str
    frame: int
    to_colour: str | None = None
    dx: int = 0          # move: signed travel in px
    glide: int = 0       # move: frames to arrive
    count: int = 0       # repeat: repetitions
    period: int = 0      # repeat: frames per repetition
    rise: int = 0        # repeat: px at the top of a bounce

    @property
    def name(self) -> str:
        """"red circle": the object as a script names it (by its colour before any change)."""
        return f"{self.colour} {self.shape}"

    def state(self, i: int) -> tuple[bool, str, int, int]:
        """(present, colour, x, y) on frame ``i``: whether it is drawn, in which colour, where."""
        f = self.frame
        present = not ((self.kind == "appear" and i < f) or (self.kind == "disappear" and i >= f))
        colour = self.to_colour if self.kind == "colour" and i >= f and self.to_colour else self.colour
        x, y = self.x, self.y
        if self.kind == "move" and i >= f:
            # At least 1 px on the cue frame itself, so the first frame of the glide shows it.
            step = abs(self.dx) * min(i - f + 1, self.glide) // self.glide
            x += int(math.copysign(max(1, step), self.dx))
        elif self.kind == "repeat" and f <= i < f + self.count * self.period:
            j = (i - f) % self.period
            if j < self.period - 1:  # the last frame of a repetition is back at rest
                y -= max(1, round(self.rise * math.sin(math.pi * (j + 1) / self.period)))
        return present, colour, x, y


@dataclass(frozen=True)
class _Text:
    frame: int
    text: str
    cue: int
    mask_HW: np.ndarray
    x: int
    y: int


@dataclass(frozen=True)
class _Plan:
    objects: tuple[SceneObject, ...]
    texts: tuple[_Text, ...]  # by frame
    background_HWC: np.ndarray


def _footprint(kind: str) -> tuple[int, int]:
    """(rows, columns) of cells an object with this event owns."""
    return {"move": (1, MOVE_CELLS), "repeat": (2, 1)}.get(kind, (1, 1))


class _Grid:
    def __init__(self, spec: SceneSpec) -> None:
        self.cols = spec.width // CELL_PX
        self.rows = (spec.height - TEXT_BAND_PX) // CELL_PX
        self.x0 = (spec.width - self.cols * CELL_PX) // 2
        self.y0 = (spec.height - TEXT_BAND_PX - self.rows * CELL_PX) // 2
        self.free = np.ones((max(self.rows, 0), max(self.cols, 0)), dtype=bool)

    def candidates(self, rows: int, cols: int) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.rows - rows + 1) for c in range(self.cols - cols + 1)]

    def fits(self, r: int, c: int, rows: int, cols: int) -> bool:
        return bool(self.free[r:r + rows, c:c + cols].all())

    def take(self, r: int, c: int, rows: int, cols: int, value: bool = False) -> None:
        self.free[r:r + rows, c:c + cols] = value

    def describe(self, spec: SceneSpec) -> str:
        return (f"a {spec.width}x{spec.height} frame has {max(self.cols, 0)} x {max(self.rows, 0)} cells of "
                f"{CELL_PX} px above its {TEXT_BAND_PX} px text band; a move object takes {MOVE_CELLS} cells "
                "in a row, a repeat object 2 in a column, any other 1")


def _place_cues(spec: SceneSpec, grid: _Grid, rng: np.random.Generator) -> dict[int, tuple[int, int]]:
    """Cell (row, column) of each cue object, by a seeded depth-first search (largest first)."""
    items = [i for i, cue in enumerate(spec.cues) if cue.kind != "text"]
    items.sort(key=lambda i: -math.prod(_footprint(spec.cues[i].kind)))
    options = []
    for i in items:
        rows, cols = _footprint(spec.cues[i].kind)
        cands = grid.candidates(rows, cols)
        options.append((i, rows, cols, [cands[k] for k in rng.permutation(len(cands))]))
    chosen: dict[int, tuple[int, int]] = {}
    budget = [_PLACEMENT_BUDGET]

    def search(k: int) -> bool:
        if k == len(options):
            return True
        i, rows, cols, cands = options[k]
        for r, c in cands:
            budget[0] -= 1
            if budget[0] < 0:
                return False
            if grid.fits(r, c, rows, cols):
                grid.take(r, c, rows, cols)
                chosen[i] = (r, c)
                if search(k + 1):
                    return True
                grid.take(r, c, rows, cols, True)
                del chosen[i]
        return False

    if not search(0):
        raise ValueError(f"the {len(items)} cue objects do not fit: {grid.describe(spec)}; "
                         "use a larger frame or fewer cues")
    return chosen


def _make_object(grid: _Grid, r: int, c: int, rng: np.random.Generator, **kw: Any) -> SceneObject:
    """An object of a seeded size at rest in its cells: centred (a single cell: a few px of jitter),
    a bounce resting in the lower cell, a glide starting at one end of its row."""
    kind = kw["kind"]
    rows, cols = _footprint(kind)
    size = 2 * int(rng.integers(OBJECT_PX[0] // 2, OBJECT_PX[1] // 2 + 1))
    fx, fy = grid.x0 + c * CELL_PX, grid.y0 + r * CELL_PX
    box = (fx, fy, fx + cols * CELL_PX, fy + rows * CELL_PX)
    inset = (CELL_PX - size) // 2
    x, y = fx + inset, fy + inset
    extra: dict[str, Any] = {}
    if kind == "move":
        travel = (MOVE_CELLS - 1) * CELL_PX
        if rng.random() < 0.5:  # right to left
            x += travel
            travel = -travel
        extra = {"dx": travel}
    elif kind == "repeat":
        y += CELL_PX
        extra = {"rise": RISE_PX}
    else:
        # Keep 2 px of margin to the cell's edge (size 56: +-2 px; size 44: +-8 px).
        jitter = inset - 2
        x += int(rng.integers(-jitter, jitter + 1))
        y += int(rng.integers(-jitter, jitter + 1))
    return SceneObject(size=size, x=x, y=y, box=box, **kw, **extra)


def _background(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """A dark tinted-grey vertical gradient with a faint horizontal ramp, and the text band."""
    base = rng.integers(60, 101)                      # grey level 60..100
    tint = rng.integers(-12, 13, size=3)              # a slight cast, at most 12 per channel
    delta = int(rng.integers(15, 31)) * (1 if rng.random() < 0.5 else -1)  # top to bottom: 30-60 levels
    ramp = int(rng.integers(-8, 9))                   # left to right: at most 8 levels
    ys_H = np.linspace(-1.0, 1.0, spec.height)[:, None, None]
    xs_W = np.linspace(-0.5, 0.5, spec.width)[None, :, None]
    image_HWC = (base + tint)[None, None, :] + delta * ys_H + ramp * xs_W
    image_HWC = np.clip(np.rint(image_HWC), 0, 255).astype(np.uint8)
    image_HWC[spec.height - TEXT_BAND_PX:] = BAND_RGB
    image_HWC.flags.writeable = False
    return image_HWC


def _text(spec: SceneSpec, index: int) -> _Text:
    cue = spec.cues[index]
    assert cue.text is not None
    room = spec.width - 2 * TEXT_MARGIN_PX
    scale = 3 if text_width_px(len(cue.text), 3) <= room else 2
    mask_HW = text_mask(cue.text, scale)
    mask_HW.flags.writeable = False
    x = (spec.width - mask_HW.shape[1]) // 2
    y = spec.height - TEXT_BAND_PX + (TEXT_BAND_PX - GLYPH_H * scale) // 2
    return _Text(frame=_start_frame(cue, spec.fps), text=cue.text, cue=index, mask_HW=mask_HW, x=x, y=y)


@lru_cache(maxsize=32)
def _plan(spec: SceneSpec) -> _Plan:
    """The seeded layout of a scene: objects with their events, texts, background (cached)."""
    n_frames = frame_count(spec)
    grid = _Grid(spec)
    # Separate streams, so that (e.g.) more distractors do not move the cue objects.
    layout_rng = np.random.default_rng([spec.seed, 1])
    distractor_rng = np.random.default_rng([spec.seed, 2])
    background_rng = np.random.default_rng([spec.seed, 3])
    glide = max(1, snap_ms(GLIDE_MS, fps=spec.fps) // frame_ms(spec.fps))

    objects: list[SceneObject] = []
    for i, (r, c) in sorted(_place_cues(spec, grid, layout_rng).items()):
        cue = spec.cues[i]
        kw: dict[str, Any] = {}
        if cue.kind == "colour":
            kw = {"to_colour": cue.to_colour}
        elif cue.kind == "move":
            kw = {"glide": glide}
        elif cue.kind == "repeat":
            kw = {"count": cue.count, "period": _period_frames(cue, spec.fps)}
        objects.append(_make_object(grid, r, c, layout_rng, shape=cue.shape, colour=cue.colour, cue=i,
                                    kind=cue.kind, frame=_start_frame(cue, spec.fps), **kw))

    used: set[tuple[str, str]] = set()
    for cue in spec.cues:
        used |= cue.pairs()
    for d in range(spec.distractors):
        free_pairs = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in used]
        if not free_pairs:
            raise ValueError(f"distractor {d}: every (shape, colour) pair is taken; use fewer distractors")
        shape, colour = free_pairs[int(distractor_rng.integers(len(free_pairs)))]
        kind = _DISTRACTOR_KINDS[int(distractor_rng.integers(len(_DISTRACTOR_KINDS)))]
        frame = int(distractor_rng.integers(1, n_frames)) if n_frames > 1 else 1
        kw = {}
        if kind == "colour":
            targets = [c for c in COLOURS if c != colour and (shape, c) not in used]
            if targets:
                kw = {"to_colour": targets[int(distractor_rng.integers(len(targets)))]}
                used.add((shape, kw["to_colour"]))
            else:
                kind = "appear"
        cells = [rc for rc in grid.candidates(*_footprint(kind)) if grid.fits(*rc, *_footprint(kind))]
        if not cells and kind == "move":  # no free row of 3 cells: the distractor appears instead
            kind = "appear"
            cells = [rc for rc in grid.candidates(1, 1) if grid.fits(*rc, 1, 1)]
        if not cells:
            raise ValueError(f"distractor {d} of {spec.distractors} does not fit beside the cue objects: "
                             f"{grid.describe(spec)}; use fewer distractors or a larger frame")
        r, c = cells[int(distractor_rng.integers(len(cells)))]
        grid.take(r, c, *_footprint(kind))
        used.add((shape, colour))
        if kind == "move":
            kw["glide"] = glide
        objects.append(_make_object(grid, r, c, distractor_rng, shape=shape, colour=colour, cue=None,
                                    kind=kind, frame=frame, **kw))

    texts = sorted((_text(spec, i) for i, cue in enumerate(spec.cues) if cue.kind == "text"), key=lambda t: t.frame)
    return _Plan(objects=tuple(objects), texts=tuple(texts), background_HWC=_background(spec, background_rng))


def scene_objects(spec: SceneSpec) -> tuple[SceneObject, ...]:
    """The scene's objects: one per non-text cue (in cue order), then the distractors."""
    return _plan(spec).objects


def text_band(spec: SceneSpec) -> tuple[int, int]:
    """(first row, end row) of the text band at the bottom of every frame."""
    return spec.height - TEXT_BAND_PX, spec.height


@cache
def shape_mask(shape: str, size: int) -> np.ndarray:
    """The boolean ``size`` x ``size`` mask of a shape (pixel centres inside it); read-only."""
    centres = np.arange(size) + 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    half = size / 2
    if shape == "circle":
        mask_HW = (xs - half) ** 2 + (ys - half) ** 2 <= half * half
    elif shape == "square":
        mask_HW = np.ones((size, size), dtype=bool)
    elif shape == "triangle":  # apex up, base the bottom edge
        mask_HW = np.abs(xs - half) <= ys / 2
    elif shape == "diamond":
        mask_HW = np.abs(xs - half) + np.abs(ys - half) <= half
    else:
        raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    mask_HW.flags.writeable = False
    return mask_HW


def render_frames(spec: SceneSpec) -> Iterator[np.ndarray]:
    """The scene's frames, one new uint8 [H, W, 3] RGB array each, ``frame_count(spec)`` of them."""
    plan = _plan(spec)
    colours = {name: np.array(rgb, dtype=np.uint8) for name, rgb in RGB.items()}
    text_rgb = np.array(TEXT_RGB, dtype=np.uint8)
    current = -1
    for i in range(frame_count(spec)):
        frame_HWC = plan.background_HWC.copy()
        for obj in plan.objects:
            present, colour, x, y = obj.state(i)
            if present:
                frame_HWC[y:y + obj.size, x:x + obj.size][shape_mask(obj.shape, obj.size)] = colours[colour]
        while current + 1 < len(plan.texts) and plan.texts[current + 1].frame <= i:
            current += 1
        if current >= 0:
            text = plan.texts[current]
            h, w = text.mask_HW.shape
            frame_HWC[text.y:text.y + h, text.x:text.x + w][text.mask_HW] = text_rgb
        yield frame_HWC


def cue_times(spec: SceneSpec, index: int) -> tuple[int, ...]:
    """The frame-exact time(s) a viewer can answer cue ``index``.

    One time for appear/disappear/colour/move/text: the first frame that shows it. For repeat, the
    end of each repetition k = 1..count: the frame where the k-th bounce is back at rest.
    """
    if not 0 <= index < len(spec.cues):
        raise IndexError(f"cue index {index} out of range for a scene with {len(spec.cues)} cues")
    step = frame_ms(spec.fps)
    return tuple(f * step for f in _cue_frames(spec.cues[index], spec.fps))


def scene_events(spec: SceneSpec) -> tuple[VisualEvent, ...]:
    """Every visual event of the scene, cues' and distractors', sorted by time (then cues first)."""
    plan = _plan(spec)
    step = frame_ms(spec.fps)
    n_frames = frame_count(spec)
    events: list[VisualEvent] = []
    for obj in plan.objects:
        if obj.frame >= n_frames:  # a distractor's event after a short scene ends
            continue
        t = obj.frame * step
        if obj.kind == "colour":
            detail: dict[str, Any] = {"from": obj.colour, "to": obj.to_colour}
        elif obj.kind == "move":
            detail = {"dx_px": obj.dx, "until_ms": (obj.frame + obj.glide - 1) * step}
        elif obj.kind == "repeat":
            detail = {"count": obj.count, "period_ms": obj.period * step}
            for k in range(1, obj.count + 1):
                events.append(VisualEvent((obj.frame + k * obj.period - 1) * step, "rep", obj.name, obj.cue,
                                          {"rep": k, "count": obj.count}))
        else:
            detail = {}
        events.append(VisualEvent(t, obj.kind, obj.name, obj.cue, detail))
    for text in plan.texts:
        events.append(VisualEvent(text.frame * step, "text", text.text, text.cue, {}))
    events.sort(key=lambda e: (e.t_ms, e.cue is None, e.cue or 0, _KIND_ORDER[e.kind], e.object))
    return tuple(events)


__all__ = [
    "BAND_RGB", "CELL_PX", "FRAME_MS", "RGB", "TEXT_BAND_PX", "TEXT_RGB", "SceneCue", "SceneObject", "SceneSpec",
    "VisualEvent", "cue_times", "frame_count", "frame_ms", "render_frames", "scene_events", "scene_objects",
    "shape_mask", "snap_ms", "text_band",
]
