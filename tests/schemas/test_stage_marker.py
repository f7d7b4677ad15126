"""The local stage-marker reader the session, eval items and eval interaction share."""

from __future__ import annotations

from microturn.schemas.stage_marker import MARKER, read_marker


def test_a_marker_is_read_and_a_damaged_one_names_no_stage(tmp_path):
    assert read_marker(str(tmp_path)) is None  # no marker
    (tmp_path / MARKER).write_text('{"stage": "session", "layout_version": 1}')
    assert read_marker(str(tmp_path)) == {"stage": "session", "layout_version": 1}
    for damaged in ("{not json", "[1, 2]", '"session"', ""):
        (tmp_path / MARKER).write_text(damaged)
        assert read_marker(str(tmp_path)) == {}, damaged
