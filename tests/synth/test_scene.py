"""Synthetic visual-cue scenes: validation, layout, events, and frames that show each cue on time."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.schemas.visual import COLOURS, MAX_COUNT, MAX_SCREEN_TEXT, SCREEN_TEXT_CHARS, SHAPES
from microturn.synth import scene as scene_module
from microturn.synth.scene import (
    FRAME_MS,
    RGB,
    TEXT_BAND_PX,
    TEXT_RGB,
    SceneCue,
    SceneObject,
    SceneSpec,
    cue_times,
    frame_count,
    frame_ms,
    render_frames,
    scene_events,
    scene_objects,
    shape_mask,
    snap_ms,
    text_band,
)
from microturn.synth.scene_font import GLYPH_H, GLYPH_W, GLYPHS, text_mask, text_width_px

FPS_VALUES = (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100)


def frames_of(spec: SceneSpec) -> np.ndarray:
    return np.stack(list(render_frames(spec)))


def cue_object(spec: SceneSpec, index: int) -> SceneObject:
    (obj,) = [o for o in scene_objects(spec) if o.cue == index]
    return obj


def in_box(frames_FHWC: np.ndarray, obj: SceneObject) -> np.ndarray:
    x0, y0, x1, y1 = obj.box
    return frames_FHWC[:, y0:y1, x0:x1]


def count_rgb(frames_FHWC: np.ndarray, obj: SceneObject, colour: str) -> np.ndarray:
    """Per frame, how many pixels of the object's cells have exactly ``colour``'s RGB."""
    return (in_box(frames_FHWC, obj) == np.array(RGB[colour], np.uint8)).all(axis=-1).sum(axis=(1, 2))


def rgb_positions(frames_FHWC: np.ndarray, obj: SceneObject, colour: str) -> list[tuple[int, int] | None]:
    """Per frame, (left column, top row) of ``colour`` in the object's cells, None when absent."""
    hits_FHW = (in_box(frames_FHWC, obj) == np.array(RGB[colour], np.uint8)).all(axis=-1)
    out: list[tuple[int, int] | None] = []
    for hits_HW in hits_FHW:
        ys, xs = np.nonzero(hits_HW)
        out.append((int(xs.min()), int(ys.min())) if len(xs) else None)
    return out


# -- time grid ------------------------------------------------------------------------------------

def test_frame_time_at_the_project_rate():
    assert FRAME_MS == 100 == frame_ms(10) == frame_ms()
    assert [snap_ms(t) for t in (0, 1, 99, 100, 101, 250)] == [0, 100, 100, 100, 200, 300]
    for bad in (0, -10, 3, 7, 2000, 10.0, True):
        with pytest.raises(ValueError, match="divides 1000"):
            frame_ms(bad)  # type: ignore[arg-type]


@given(st.integers(-10**6, 10**7), st.integers(-10**6, 10**7), st.sampled_from(FPS_VALUES))
def test_snap_ms_is_the_ceiling_on_the_frame_grid(t, u, fps):
    step = 1000 // fps
    s = snap_ms(t, fps=fps)
    assert s % step == 0 and t <= s < t + step
    assert snap_ms(s, fps=fps) == s
    if t <= u:
        assert s <= snap_ms(u, fps=fps)


# -- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "match"), [
    (dict(kind="wave", t_ms=100), "unknown cue kind 'wave'"),
    (dict(kind="appear", t_ms=100, shape="star"), "unknown shape 'star'"),
    (dict(kind="appear", t_ms=100, colour="pink"), "unknown colour 'pink'"),
    (dict(kind="appear", t_ms=-1), "non-negative integer"),
    (dict(kind="appear", t_ms=1.5), "non-negative integer"),
    (dict(kind="text", t_ms=100, text="hello"), "characters the screen font lacks: 'ehlo'"),
    (dict(kind="text", t_ms=100, text="A;B"), "lacks: ';'"),
    (dict(kind="text", t_ms=100, text="A" * (MAX_SCREEN_TEXT + 1)), f"1..{MAX_SCREEN_TEXT} characters"),
    (dict(kind="text", t_ms=100, text=""), f"1..{MAX_SCREEN_TEXT} characters"),
    (dict(kind="text", t_ms=100, text="   "), "only spaces"),
    (dict(kind="text", t_ms=100), "text is required"),
    (dict(kind="repeat", t_ms=100, period_ms=500), "count must be an integer"),
    (dict(kind="repeat", t_ms=100, count=0, period_ms=500), "count must be an integer"),
    (dict(kind="repeat", t_ms=100, count=MAX_COUNT + 1, period_ms=500), "count must be an integer"),
    (dict(kind="repeat", t_ms=100, count=2), "period_ms must be an integer 300..3000"),
    (dict(kind="repeat", t_ms=100, count=2, period_ms=200), "period_ms must be an integer 300..3000"),
    (dict(kind="repeat", t_ms=100, count=2, period_ms=3001), "period_ms must be an integer 300..3000"),
    (dict(kind="colour", t_ms=100), "to_colour is required"),
    (dict(kind="colour", t_ms=100, colour="red", to_colour="red"), "must differ"),
    (dict(kind="colour", t_ms=100, to_colour="mauve"), "unknown to_colour 'mauve'"),
    (dict(kind="appear", t_ms=100, to_colour="blue"), "to_colour is only for 'colour' cues"),
    (dict(kind="appear", t_ms=100, text="HI"), "text is only for 'text' cues"),
    (dict(kind="move", t_ms=100, count=3), "count is only for 'repeat' cues"),
])
def test_bad_cues_are_refused_with_a_reason(kw, match):
    with pytest.raises(ValueError, match=match):
        SceneCue(**kw)


def appear(t_ms=500, shape="circle", colour="red") -> SceneCue:
    return SceneCue(kind="appear", t_ms=t_ms, shape=shape, colour=colour)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(width=300), "width must be a multiple of the 40 px patch"),
    (dict(height=250), "height must be a multiple of the 40 px patch"),
    (dict(width=0), "width must be a positive integer"),
    (dict(duration_ms=0), "duration_ms must be a positive integer"),
    (dict(fps=7), "divides 1000"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(distractors=-1), "distractors must be a non-negative integer"),
    (dict(cues=(appear(t_ms=0),)), "t_ms must be > 0"),
    (dict(cues=(appear(t_ms=2000),)), "past the last frame of the 2000 ms scene"),
    (dict(cues=(SceneCue(kind="repeat", t_ms=500, count=4, period_ms=500),)), "past the last frame"),
    (dict(cues=(appear(), SceneCue(kind="move", t_ms=900))), "cue 0 also shows a red circle"),
    (dict(cues=(appear(colour="blue"), SceneCue(kind="colour", t_ms=900, to_colour="blue"))),
     "also shows a blue circle"),
    (dict(cues=(SceneCue(kind="text", t_ms=410, text="A"), SceneCue(kind="text", t_ms=490, text="B"))),
     "same frame"),
    (dict(cues=(SceneCue(kind="text", t_ms=400, text="A"), SceneCue(kind="text", t_ms=900, text="A"))),
     "already on screen"),
    (dict(width=200, cues=(SceneCue(kind="text", t_ms=400, text="X" * 24),)), "more than a 200 px frame holds"),
    (dict(cues=tuple(SceneCue(kind="move", t_ms=500, colour=c) for c in COLOURS[:4])), "cue objects do not fit"),
    (dict(cues=(appear(),), distractors=15), "of 15 does not fit"),
    (dict(cues=("appear",)), "cue 0 is a str"),
])
def test_bad_specs_are_refused_with_a_reason(kw, match):
    base = dict(duration_ms=2000, cues=(), seed=0)
    with pytest.raises(ValueError, match=match):
        SceneSpec(**(base | kw))  # type: ignore[arg-type]


def test_cues_given_as_a_list_become_a_tuple():
    spec = SceneSpec(duration_ms=1000, cues=[appear()], seed=1)  # type: ignore[arg-type]
    assert spec.cues == (appear(),) and hash(spec) == hash(SceneSpec(duration_ms=1000, cues=(appear(),), seed=1))


# -- font --------------------------------------------------------------------------------------------

def test_font_covers_the_screen_characters_with_distinct_glyphs():
    assert set(GLYPHS) == SCREEN_TEXT_CHARS
    for char, rows in GLYPHS.items():
        assert len(rows) == GLYPH_H and all(len(r) == GLYPH_W and set(r) <= {"#", "."} for r in rows), char
        assert (char == " ") == ("#" not in "".join(rows))
    assert len(set(GLYPHS.values())) == len(GLYPHS)
    assert text_width_px(MAX_SCREEN_TEXT, 2) <= 320 - 8
    mask = text_mask("A1", 3)
    assert mask.shape == (21, 33) and mask[:, 15:18].sum() == 0  # the gap column between the glyphs


# -- frames and determinism ------------------------------------------------------------------------

ALL_KINDS = (
    SceneCue(kind="appear", t_ms=450, shape="square", colour="blue"),
    SceneCue(kind="repeat", t_ms=1000, count=3, period_ms=500),
    SceneCue(kind="move", t_ms=2000, shape="triangle", colour="green"),
    SceneCue(kind="colour", t_ms=2500, shape="diamond", colour="white", to_colour="cyan"),
    SceneCue(kind="text", t_ms=3000, text="HELLO, WORLD!"),
    SceneCue(kind="disappear", t_ms=3300, shape="circle", colour="orange"),
    SceneCue(kind="text", t_ms=3750, text="2 MORE: GO"),
)


@pytest.fixture(scope="module", params=[1, 7])
def all_kinds(request) -> tuple[SceneSpec, np.ndarray]:
    spec = SceneSpec(duration_ms=4500, cues=ALL_KINDS, seed=request.param)
    return spec, frames_of(spec)


@given(st.integers(1, 2500), st.sampled_from((10, 25)))
@settings(max_examples=15, deadline=None)
def test_frame_count_is_the_ceiling_of_duration_over_frame_time(duration, fps):
    spec = SceneSpec(duration_ms=duration, cues=(), seed=3, fps=fps, distractors=2)
    frames = list(render_frames(spec))
    assert len(frames) == frame_count(spec) == math.ceil(duration / (1000 // fps))
    assert all(f.dtype == np.uint8 and f.shape == (240, 320, 3) for f in frames)


def test_same_spec_same_frames_other_seed_other_frames(all_kinds):
    spec, frames = all_kinds
    scene_module._plan.cache_clear()  # a fresh layout, not the cached one
    again = SceneSpec(duration_ms=spec.duration_ms, cues=tuple(ALL_KINDS), seed=spec.seed)
    assert np.array_equal(frames_of(again), frames)
    other = SceneSpec(duration_ms=spec.duration_ms, cues=ALL_KINDS, seed=spec.seed + 100)
    assert not np.array_equal(frames_of(other)[0], frames[0])


def test_background_is_not_flat(all_kinds):
    spec, frames = all_kinds
    column = frames[0, : spec.height - TEXT_BAND_PX, 0].astype(int)
    assert np.abs(column[-1] - column[0]).max() >= 20  # a vertical gradient
    assert len(np.unique(frames[0, :, 0], axis=0)) > 20


def test_appear_absent_before_present_from_its_frame(all_kinds):
    spec, frames = all_kinds
    (t,) = cue_times(spec, 0)
    f, obj = t // FRAME_MS, cue_object(spec, 0)
    assert t == 500
    full = shape_mask(obj.shape, obj.size).sum()
    counts = count_rgb(frames, obj, "blue")
    assert (counts[:f] == 0).all() and (counts[f:] == full).all()


def test_disappear_present_before_gone_from_its_frame(all_kinds):
    spec, frames = all_kinds
    (t,) = cue_times(spec, 5)
    f, obj = t // FRAME_MS, cue_object(spec, 5)
    counts = count_rgb(frames, obj, "orange")
    assert (counts[:f] == shape_mask(obj.shape, obj.size).sum()).all() and (counts[f:] == 0).all()


def test_colour_changes_on_its_frame(all_kinds):
    spec, frames = all_kinds
    (t,) = cue_times(spec, 3)
    f, obj = t // FRAME_MS, cue_object(spec, 3)
    full = shape_mask(obj.shape, obj.size).sum()
    before, after = count_rgb(frames, obj, "white"), count_rgb(frames, obj, "cyan")
    assert (before[:f] == full).all() and (before[f:] == 0).all()
    assert (after[:f] == 0).all() and (after[f:] == full).all()


def test_move_glides_from_its_frame_and_stays_whole(all_kinds):
    spec, frames = all_kinds
    (t,) = cue_times(spec, 2)
    f, obj = t // FRAME_MS, cue_object(spec, 2)
    assert t == 2000
    full = shape_mask(obj.shape, obj.size).sum()
    assert (count_rgb(frames, obj, "green") == full).all()
    xs = [p[0] for p in rgb_positions(frames, obj, "green") if p is not None]
    assert len(set(xs[:f])) == 1 and xs[f] != xs[f - 1]
    steps = np.diff(xs[f - 1:])
    assert (np.sign(steps) * np.sign(obj.dx) >= 0).all()  # one direction, no going back
    assert abs(xs[-1] - xs[0]) == abs(obj.dx) >= 2 * obj.size  # across part of the frame


def test_repeat_returns_to_rest_exactly_count_times(all_kinds):
    spec, frames = all_kinds
    obj, cue = cue_object(spec, 1), spec.cues[1]
    assert (count_rgb(frames, obj, "red") == shape_mask(obj.shape, obj.size).sum()).all()
    tops = [p[1] for p in rgb_positions(frames, obj, "red") if p is not None]
    rest = tops[0]
    raised = [top < rest for top in tops]
    assert all(top <= rest for top in tops)
    first_raised = raised.index(True)
    assert first_raised * FRAME_MS == snap_ms(cue.t_ms) == 1000
    returns = [i * FRAME_MS for i in range(1, len(tops)) if raised[i - 1] and not raised[i]]
    assert len(returns) == cue.count == 3
    assert tuple(returns) == cue_times(spec, 1) == (1400, 1900, 2400)
    assert min(tops) <= rest - 25  # a visible bounce (32 px at its top)


def test_text_band_changes_at_each_text_cue(all_kinds):
    spec, frames = all_kinds
    y0, y1 = text_band(spec)
    band = frames[:, y0:y1]
    changes = [i * FRAME_MS for i in range(1, len(band)) if not np.array_equal(band[i], band[i - 1])]
    assert changes == [*cue_times(spec, 4), *cue_times(spec, 6)] == [3000, 3800]
    ink = (band == np.array(TEXT_RGB, np.uint8)).all(axis=-1).sum(axis=(1, 2))
    assert ink[0] == 0
    assert ink[30] == text_mask("HELLO, WORLD!", 3).sum() and ink[38] == text_mask("2 MORE: GO", 3).sum()


def test_events_are_sorted_and_agree_with_cue_times(all_kinds):
    spec, _ = all_kinds
    events = scene_events(spec)
    assert [e.t_ms for e in events] == sorted(e.t_ms for e in events)
    for i, cue in enumerate(spec.cues):
        mine = [e for e in events if e.cue == i]
        if cue.kind == "repeat":
            assert tuple(e.t_ms for e in mine if e.kind == "rep") == cue_times(spec, i)
            assert [e.detail["rep"] for e in mine if e.kind == "rep"] == [1, 2, 3]
            assert [e.t_ms for e in mine if e.kind == "repeat"] == [snap_ms(cue.t_ms)]
        else:
            assert [(e.kind, e.t_ms) for e in mine] == [(cue.kind, *cue_times(spec, i))]
            assert mine[0].object == cue.object_name
    colour = next(e for e in events if e.cue == 3)
    assert colour.object == "white diamond" and colour.detail == {"from": "white", "to": "cyan"}
    assert sum(e.cue is None for e in events) == spec.distractors
    with pytest.raises(IndexError):
        cue_times(spec, len(spec.cues))


def test_every_event_shows_on_its_frame_and_not_before(all_kinds):
    """Each object's cells are unchanged up to the frame before its event and change on it."""
    spec, frames = all_kinds
    for obj in scene_objects(spec):
        cells = in_box(frames, obj)
        f = obj.frame
        assert all(np.array_equal(cells[i], cells[0]) for i in range(f)), obj
        assert not np.array_equal(cells[f], cells[f - 1]), obj


# -- layout and distractors --------------------------------------------------------------------------

cue_strategy = st.one_of(
    st.builds(SceneCue, kind=st.sampled_from(("appear", "disappear", "move")), t_ms=st.integers(1, 2900),
              shape=st.sampled_from(SHAPES), colour=st.sampled_from(COLOURS)),
    st.builds(SceneCue, kind=st.just("repeat"), t_ms=st.integers(1, 1000), shape=st.sampled_from(SHAPES),
              colour=st.sampled_from(COLOURS), count=st.integers(1, 3), period_ms=st.integers(300, 600)),
    st.tuples(st.sampled_from(SHAPES), st.sampled_from(COLOURS), st.sampled_from(COLOURS), st.integers(1, 2900))
    .filter(lambda s: s[1] != s[2])
    .map(lambda s: SceneCue(kind="colour", t_ms=s[3], shape=s[0], colour=s[1], to_colour=s[2])),
)


def distinct_objects(cues: list[SceneCue]) -> list[SceneCue]:
    kept: list[SceneCue] = []
    for cue in cues:
        if not any(cue.pairs() & other.pairs() for other in kept):
            kept.append(cue)
    return kept


@given(st.lists(cue_strategy, max_size=4).map(distinct_objects), st.integers(0, 2**32), st.integers(0, 4))
@settings(max_examples=40, deadline=None)
def test_layout_keeps_objects_apart_whole_and_distractors_distinct(cues, seed, distractors):
    try:
        spec = SceneSpec(duration_ms=3000, cues=tuple(cues), seed=seed, distractors=distractors)
    except ValueError as exc:  # two moves and two bounces may not fit 5 x 3 cells
        assert "do not fit" in str(exc) or "does not fit" in str(exc)
        return
    objects = scene_objects(spec)
    assert [o.cue for o in objects] == [*range(len(cues)), *[None] * distractors]
    cue_pairs = set().union(*(c.pairs() for c in cues))
    names = set()
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= spec.width and 0 <= y0 < y1 <= spec.height - TEXT_BAND_PX
        assert 44 <= obj.size <= 56
        for i in range(frame_count(spec)):
            _, _, x, y = obj.state(i)
            assert x0 <= x and x + obj.size <= x1 and y0 <= y and y + obj.size <= y1
        if obj.cue is None:
            shown = {(obj.shape, obj.colour)} | ({(obj.shape, obj.to_colour)} if obj.to_colour else set())
            assert not shown & cue_pairs
            assert not shown & names
            names |= shown
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            ax0, ay0, ax1, ay1 = a.box
            bx0, by0, bx1, by1 = b.box
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)
    events = scene_events(spec)
    assert [e.t_ms for e in events] == sorted(e.t_ms for e in events)
    assert all(0 < e.t_ms < spec.duration_ms for e in events)
