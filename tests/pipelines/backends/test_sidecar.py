"""Tests of sidecar discovery, decoding and parsing (SRT, VTT, STM, whisperx JSON)."""

from __future__ import annotations

import json
import os
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.pipelines.backends.base import Utterance, Word
from microturn.pipelines.backends.sidecar import (
    MAX_SIDECAR_BYTES,
    SIDECAR_FORMATS,
    SidecarError,
    SidecarTranscript,
    bound_transcript,
    clip_to_media,
    decode_sidecar,
    find_sidecar,
    format_timestamp,
    parse_sidecar,
    parse_stm_segments,
    parse_timestamp,
    read_sidecar,
    read_sidecar_bytes,
)
from microturn.testing.sample_call import SAMPLE_DIR

# The sample call that ships inside pyannote.audio (located without importing it).
SAMPLE = SAMPLE_DIR


# ------------------------------------------------------------------------------- finding


def test_find_sidecar_prefers_json_then_stm_vtt_srt():
    assert SIDECAR_FORMATS == ("json", "stm", "vtt", "srt")
    present = {"/data/talk.srt", "/data/talk.vtt", "/data/talk.stm"}
    assert find_sidecar("/data/talk.mp4", exists=present.__contains__) == "/data/talk.stm"
    present.add("/data/talk.json")
    assert find_sidecar("/data/talk.mp4", exists=present.__contains__) == "/data/talk.json"
    assert find_sidecar("/data/other.mp4", exists=present.__contains__) is None


def test_find_sidecar_builds_candidates_from_url_stems():
    asked: list[str] = []

    def exists(path: str) -> bool:
        asked.append(path)
        return path == "gs://bucket/dir.v2/talk.SRT"

    found = find_sidecar("gs://bucket/dir.v2/talk.mp4", exists=exists)
    assert found == "gs://bucket/dir.v2/talk.SRT"
    # Only the file name's extension is replaced, never a dot in a folder name.
    assert all(p.startswith("gs://bucket/dir.v2/talk.") for p in asked)
    # No extension: candidates are appended to the whole name.
    found = find_sidecar("s3://b/noext", exists={"s3://b/noext.vtt"}.__contains__)
    assert found == "s3://b/noext.vtt"


def test_find_sidecar_default_exists_uses_beam_filesystems(tmp_path):
    media = tmp_path / "call.wav"
    media.write_bytes(b"")
    assert find_sidecar(str(media)) is None
    (tmp_path / "call.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    assert find_sidecar(str(media)) == str(tmp_path / "call.srt")


def test_find_sidecar_skips_what_is_not_a_regular_file(tmp_path):
    media = tmp_path / "call.wav"
    media.write_bytes(b"")
    os.mkfifo(tmp_path / "call.json")  # reading it would block forever
    (tmp_path / "call.stm").symlink_to("/dev/zero")
    (tmp_path / "call.vtt").symlink_to(tmp_path / "missing.vtt")
    (tmp_path / "call.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    assert find_sidecar(str(media)) == str(tmp_path / "call.srt")


def test_sidecars_are_read_bounded_and_only_from_regular_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.srt")
    with pytest.raises(SidecarError, match="FIFO"):
        read_sidecar_bytes(str(tmp_path / "pipe.srt"))
    (tmp_path / "zero.srt").symlink_to("/dev/zero")
    with pytest.raises(SidecarError, match="character device"):
        read_sidecar(str(tmp_path / "zero.srt"))
    big = tmp_path / "big.srt"
    big.write_bytes(b"x" * 101)
    with pytest.raises(SidecarError, match="larger than"):
        read_sidecar_bytes(str(big), max_bytes=100)
    assert read_sidecar_bytes(str(big), max_bytes=101) == b"x" * 101
    assert MAX_SIDECAR_BYTES == 16 << 20  # the documented cap


def test_find_sidecar_rejects_bad_path():
    with pytest.raises(TypeError, match="media_path"):
        find_sidecar("", exists=lambda p: True)


# ------------------------------------------------------------------------------- decoding

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> there,
general Kenobi.

2
00:00:03,000 --> 00:00:04,000 X1:10 X2:20
{\\an8}Second &amp; last
"""


def test_decode_utf8_with_and_without_bom_and_utf16():
    for data in (
        SRT.encode("utf-8"),
        b"\xef\xbb\xbf" + SRT.encode("utf-8"),
        SRT.encode("utf-16"),  # with BOM, native order
        b"\xff\xfe" + SRT.encode("utf-16-le"),
        b"\xfe\xff" + SRT.encode("utf-16-be"),
        SRT.replace("\n", "\r\n").encode("utf-8"),
    ):
        t = parse_sidecar(data, "srt")
        assert [u.text for u in t.utterances] == ["Hello there, general Kenobi.", "Second & last"]
        assert [(u.start_ms, u.end_ms) for u in t.utterances] == [(1000, 2500), (3000, 4000)]


def test_invalid_utf8_names_the_byte_and_the_fix():
    data = SRT.encode("utf-8").replace(b"Second", b"Sec\xe9nd")
    message = r"not valid UTF-8 at byte \d+.*re-encode it as UTF-8"
    with pytest.raises(SidecarError, match=message) as info:
        parse_sidecar(data, "srt", name="talk.srt")
    assert "talk.srt" in str(info.value)
    offset = int(str(info.value).split("at byte ")[1].split()[0])
    assert data[offset] == 0xE9


def test_undecodable_encodings_raise_sidecar_error():
    with pytest.raises(SidecarError, match="UTF-16 without a byte-order mark"):
        decode_sidecar(SRT.encode("utf-16-le"))
    with pytest.raises(SidecarError, match="UTF-32"):
        decode_sidecar(SRT.encode("utf-32"))
    with pytest.raises(SidecarError, match="empty"):
        decode_sidecar(b"  \n")
    with pytest.raises(SidecarError, match="UTF-16"):
        decode_sidecar(b"\xff\xfe" + b"\x00\xd8")  # lone surrogate
    assert issubclass(SidecarError, ValueError)
    with pytest.raises(TypeError):
        decode_sidecar("text")  # type: ignore[arg-type]


def test_unknown_format_is_value_error():
    with pytest.raises(ValueError, match="unknown sidecar format"):
        parse_sidecar(b"x", "ass")
    assert parse_sidecar(SRT.encode(), ".SRT").format == "srt"


# ------------------------------------------------------------------------------- SRT


def test_srt_malformed_cues_are_skipped_with_a_warning():
    text = (
        "1\n00:00:01,000 --> 00:00:02,000\nGood one\n\n"
        "2\n00:00:xx,000 --> 00:00:03,000\nBad time\n\n"
        "3\n00:00:05,000 --> 00:00:04,000\nEnds before it starts\n\n"
        "4\nno timing line here\n\n"
        "five\n00:00:06,000 --> 00:00:07,000\nBad number\n\n"
        "6\n00:00:08,000 --> 00:00:09,000\n<b></b>\n\n"
        "7\n00:00:10,000 --> 00:00:11,000\nAlso good\n"
    )
    with pytest.warns(UserWarning, match=r"skipped 5 malformed SRT entries"):
        t = parse_sidecar(text.encode(), "srt")
    assert [u.text for u in t.utterances] == ["Good one", "Also good"]
    assert t.words is None and all(u.speaker is None for u in t.utterances)


def test_srt_without_usable_cue_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SidecarError, match="no usable SRT cue"):
            parse_sidecar(b"1\n00:00:xx,000 --> 00:00:01,000\nhello\n", "srt")
        with pytest.raises(SidecarError, match="no usable JSON cue"):
            parse_sidecar(b'{"segments": []}', "json")


# ------------------------------------------------------------------------------- VTT

VTT = """WEBVTT - some title
Kind: captions

NOTE this is a comment
spanning two lines

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:02.000 align:start position:10%
<v Roger Bingham>We are in New York City

00:00:02.500 --> 00:00:04.000
<v.loud Neil>Hi<00:00:03.000> <c.yellow>there</c></v>
<v Roger Bingham>and hello

00:04.000 --> 00:05.000
No voice &lt;here&gt;
"""


def test_vtt_voices_notes_styles_and_short_times():
    t = parse_sidecar(VTT.encode(), "vtt")
    assert t.utterances == [
        Utterance(1000, 2000, "We are in New York City", "Roger Bingham"),
        Utterance(2500, 4000, "Hi there", "Neil"),
        Utterance(2500, 4000, "and hello", "Roger Bingham"),
        Utterance(4000, 5000, "No voice <here>", None),
    ]


def test_vtt_without_header_warns_but_parses():
    with pytest.warns(UserWarning, match="must start with 'WEBVTT'"):
        t = parse_sidecar(b"00:01.000 --> 00:02.000\nhello\n", "vtt")
    assert t.utterances == [Utterance(1000, 2000, "hello")]


# ------------------------------------------------------------------------------- STM


def test_stm_sample_parses_with_speakers():
    t = parse_sidecar((SAMPLE / "sample.stm").read_bytes(), "stm")
    assert len(t.utterances) == 13
    assert t.utterances[0] == Utterance(6680, 7160, "Hello?", "Diane")
    assert t.utterances[-1].speaker == "Diane" and t.utterances[-1].end_ms == 29987
    assert {u.speaker for u in t.utterances} == {"Diane", "Sheila"}


def test_stm_comments_labels_ignored_segments_and_malformed_lines():
    text = (
        ';; CATEGORY "0" "" ""\n'
        "rec 1 A 0.0 1.5 <o,f0,male> hello world\n"
        "rec 1 A 1.5 2.0 ignore_time_segment_in_scoring\n"
        "rec 1 inter_segment_gap 2.0 2.5\n"
        "rec 1 B 2.5 3.0\n"
        "rec 1 B 3.0 x.5 broken time\n"
        "rec 1 B\n"
        "rec 1 B 4.0 5.25 good bye\n"
    )
    with pytest.warns(UserWarning) as record:
        t = parse_sidecar(text.encode(), "stm")
    messages = " ".join(str(r.message) for r in record)
    assert "skipped 2 malformed STM entries" in messages and "without text" in messages
    assert t.utterances == [
        Utterance(0, 1500, "hello world", "A"),
        Utterance(4000, 5250, "good bye", "B"),
    ]


def test_stm_with_several_recordings_needs_file_id():
    text = b"a 1 X 0 1 one\nb 1 Y 0 1 two\n"
    with pytest.raises(SidecarError, match="2 recordings.*file_id"):
        parse_sidecar(text, "stm")
    t = parse_sidecar(text, "stm", file_id="b")
    assert t.utterances == [Utterance(0, 1000, "two", "Y")]
    assert [s.file for s in parse_stm_segments(text.decode())] == ["a", "b"]


# ------------------------------------------------------------------------------- JSON


def _whisperx(segments) -> bytes:
    return json.dumps({"segments": segments, "language": "en"}).encode()


def test_json_with_words_gives_word_times_and_speakers():
    data = _whisperx(
        [
            {
                "start": 0.5, "end": 1.5, "text": " Hello there.", "speaker": "SPEAKER_00",
                "words": [
                    {"word": "Hello", "start": 0.5, "end": 0.9, "score": 0.8},
                    {"word": "there.", "start": 1.0, "end": 1.5, "score": 0.6},
                ],
            },
            {
                "start": 2.0, "end": 3.0, "text": "Call 911 now", "speaker": "SPEAKER_01",
                "words": [
                    {"word": "Call", "start": 2.0, "end": 2.2},
                    {"word": "911"},  # whisperx leaves numbers untimed
                    {"word": "now", "start": 2.8, "end": 3.0, "score": 0.9},
                ],
            },
        ]
    )
    with pytest.warns(UserWarning, match="1 word.*interpolation"):
        t = parse_sidecar(data, "json")
    assert t.utterances == [
        Utterance(500, 1500, "Hello there.", "SPEAKER_00"),
        Utterance(2000, 3000, "Call 911 now", "SPEAKER_01"),
    ]
    assert t.words is not None
    assert t.words[:2] == [
        Word("Hello", 500, 900, 0.8, "SPEAKER_00"),
        Word("there.", 1000, 1500, 0.6, "SPEAKER_00"),
    ]
    interpolated = t.words[3]
    assert interpolated.text == "911" and interpolated.score is None
    assert 2200 <= interpolated.start_ms < interpolated.end_ms <= 2800


def test_json_partial_word_times_are_ignored_with_a_warning():
    data = _whisperx(
        [
            {"start": 0, "end": 1, "text": "a b", "words": [{"word": "a", "start": 0, "end": 0.5}]},
            {"start": 1, "end": 2, "text": "c d"},
        ]
    )
    with pytest.warns(UserWarning, match="only 1 of 2 segments carry word times"):
        t = parse_sidecar(data, "json")
    assert t.words is None and len(t.utterances) == 2


def test_json_errors_and_malformed_segments():
    with pytest.raises(SidecarError, match="not valid JSON.*line 1"):
        parse_sidecar(b"{segments: }", "json")
    with pytest.raises(SidecarError, match="'segments' list"):
        parse_sidecar(b'{"text": "hi"}', "json")
    data = _whisperx(
        [
            {"start": "soon", "end": 1, "text": "bad"},
            {"start": 2, "end": 1, "text": "backwards"},
            "not an object",
            {"start": 3, "end": 4, "text": "fine"},
        ]
    )
    with pytest.warns(UserWarning, match="skipped 3 malformed JSON entries"):
        t = parse_sidecar(data, "json")
    assert t.utterances == [Utterance(3000, 4000, "fine")]
    # A bare list of segments is accepted too.
    assert parse_sidecar(b'[{"start": 0, "end": 1, "text": "x"}]', "json").utterances[0].text == "x"


def test_read_sidecar_from_a_path(tmp_path):
    path = tmp_path / "talk.vtt"
    path.write_bytes(VTT.encode("utf-16"))
    assert len(read_sidecar(str(path)).utterances) == 4
    with pytest.raises(SidecarError, match="extension"):
        read_sidecar(str(tmp_path / "talk.txt"))


# ------------------------------------------------------------------------------- media bounds


def test_clip_to_media_counts_dropped_and_clipped():
    t = SidecarTranscript(
        utterances=[
            Utterance(0, 1000, "a"),
            Utterance(1500, 2600, "b"),
            Utterance(2500, 3000, "c"),
            Utterance(3000, 3500, "d"),
        ],
        words=[
            Word("a", 0, 1000), Word("b", 1500, 2600), Word("c", 2500, 3000), Word("d", 3000, 3500)
        ],
        format="json",
    )
    with pytest.warns(UserWarning, match="dropped 2 .* clipped 1"):
        out, n_dropped, n_clipped = clip_to_media(t, 2500)
    # c starts exactly at the media end: dropped, like d; b runs past it: clipped.
    assert (n_dropped, n_clipped) == (2, 1)
    assert [u.text for u in out.utterances] == ["a", "b"]
    assert out.utterances[1].end_ms == 2500
    assert out.words is not None
    assert [w.text for w in out.words] == ["a", "b"] and out.words[1].end_ms == 2500
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, d, c = clip_to_media(t, 10_000)
    assert (d, c) == (0, 0) and same.utterances == t.utterances
    with pytest.raises(ValueError, match="positive integer"):
        clip_to_media(t, 0)


# ------------------------------------------------------------------------------- timestamps


def test_timestamp_formats():
    assert parse_timestamp("01:02:03,004") == 3_723_004
    assert parse_timestamp("01:02:03.004") == 3_723_004
    assert parse_timestamp("02:03.5") == 123_500
    assert parse_timestamp("100:00:00.000") == 360_000_000
    assert parse_timestamp("00:00:01.0006") == 1001  # sub-millisecond digits are rounded
    for bad in ("1:2", "00:61.000", "aa:bb:cc,ddd", "00:00:00;000"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    with pytest.raises(ValueError):
        format_timestamp(-1)


@given(ms=st.integers(min_value=0, max_value=200 * 3_600_000), sep=st.sampled_from([",", "."]))
def test_timestamp_round_trip(ms: int, sep: str):
    text = format_timestamp(ms, sep=sep)
    assert parse_timestamp(text) == ms
    # and a cue built from it parses to the same times
    fmt = "srt" if sep == "," else "vtt"
    head = "WEBVTT\n\n" if fmt == "vtt" else "1\n"
    cue = f"{head}{text} --> {format_timestamp(ms + 1, sep=sep)}\nword\n"
    u = parse_sidecar(cue.encode(), fmt).utterances[0]
    assert (u.start_ms, u.end_ms) == (ms, ms + 1)


# ------------------------------------------------------------------------------- work limits


def test_a_cue_with_more_words_than_can_be_spoken_is_left_out_with_a_count():
    # One cue of a million words took 104 s to align and then lost all but 3,500 of them.
    huge = Utterance(0, 5000, "word " * 1_000_000)
    ok = Utterance(5000, 7000, "a normal line of speech")
    with pytest.warns(UserWarning, match="left out 1 cue"):
        bounded, limits = bound_transcript(SidecarTranscript([huge, ok]), 10_000)
    assert bounded.utterances == [ok]
    assert (limits.dense_cues, limits.dense_words) == (1, 1_000_000)
    assert "1000000 words" in limits.message(10_000)
    # At the edge: 10 words a second of the cue plus 10 is speakable, one more is not.
    edge = [Utterance(0, 2000, "w " * 30), Utterance(3000, 5000, "w " * 31)]
    with pytest.warns(UserWarning):
        bounded, limits = bound_transcript(SidecarTranscript(edge), 10_000)
    assert bounded.utterances == edge[:1] and limits.dense_cues == 1


def test_the_whole_sidecar_has_a_word_and_coverage_budget():
    # 20 words per second of media plus 100: 10 s of media holds 300 words.
    cues = [Utterance(k * 1000, k * 1000 + 1000, "w " * 20) for k in range(10)] * 2
    with pytest.warns(UserWarning, match="past what 10 s of media can hold"):
        bounded, limits = bound_transcript(SidecarTranscript(cues), 10_000)
    assert len(bounded.utterances) == 15 and limits.over_budget_cues == 5
    # Cue spans may cover the media at most 4 times: alignment work is bounded by its length.
    long = [Utterance(0, 10_000, "a few words") for _ in range(6)]
    with pytest.warns(UserWarning):
        bounded, limits = bound_transcript(SidecarTranscript(long), 10_000)
    assert len(bounded.utterances) == 4 and limits.over_budget_cues == 2
    # Timed words (whisperx JSON) are cut to the same word budget.
    words = [Word("w", k, k + 1) for k in range(400)]
    with pytest.warns(UserWarning, match="100 timed word"):
        bounded, limits = bound_transcript(
            SidecarTranscript([Utterance(0, 10_000, "w")], words=words), 10_000)
    assert bounded.words is not None and len(bounded.words) == 300


def test_an_ordinary_sidecar_is_left_whole():
    transcript = parse_sidecar((SAMPLE / "sample.stm").read_bytes(), "stm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounded, limits = bound_transcript(transcript, 30_000)
    assert bounded == transcript and not limits
