"""`microturn import lhotse` on cuts built with Lhotse itself, then `microturn shard` on the result.

The cuts (all made with Lhotse's own constructors from WAV files written here):

- ``call``: a 6 s mono recording at 22.05 kHz, two speakers, word alignments (one supervision
  without), made by ``CutSet.from_manifests``: a MonoCut, imported as one mixed 16 kHz stream;
- ``phone``: a 7 s two-channel recording, speaker A on channel 0 and B on channel 1: a MultiCut,
  imported as two streams ``ch0.flac`` / ``ch1.flac``;
- ``window``: 4 s truncated from 1.5 s into a third recording; its supervisions move with the
  cut while its word alignments keep recording times (Lhotse's convention), so the import shifts
  the words by 1.5 s;
- four that fail one way each: no supervisions, audio that is no longer readable, a supervision
  past the end of its cut, and ``call`` again under another id (the same content).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.cut import MonoCut, MultiCut
from lhotse.supervision import AlignmentItem
from scipy.signal import resample_poly

from microturn.pipelines.tables import read_table
from microturn.schemas.turns import Turn, turn_events, turn_stats
from microturn.testing.speechlike import place

CALL_TURNS = [("A", 0.5, 2.5), ("B", 2.2, 4.0), ("A", 4.3, 5.6)]
PHONE_TURNS = [("A", 0.4, 2.6), ("B", 2.9, 4.8), ("A", 4.6, 6.5)]
WINDOW_TURNS = [("A", 2.0, 3.0), ("B", 3.4, 5.0)]  # in the recording; the cut starts at 1.5 s


def words_in(start: float, end: float, tag: str) -> list[AlignmentItem]:
    """One word per 0.4 s of a turn, in recording time, with a confidence."""
    return [AlignmentItem(symbol=f"{tag}{i}", start=round(t, 3), duration=0.3, score=0.8)
            for i, t in enumerate(np.arange(start, end - 0.3, 0.4))]


def sup(rec_id: str, i: int, speaker: str, start: float, end: float, *, channel=0, words=True, cut_start=0.0):
    return SupervisionSegment(
        id=f"{rec_id}-{i}", recording_id=rec_id, start=round(start - cut_start, 3), duration=round(end - start, 3),
        channel=channel, speaker=speaker, text=None,
        alignment={"word": words_in(start, end, f"{rec_id}{speaker}")} if words else None)


def wav(path, seconds: float, spans, *, rate: int = 16000, seed: int = 0) -> None:
    wave_N = place(seconds, spans, seed=seed)  # 16 kHz speech-like syllables in the spans
    if rate != 16000:
        wave_N = resample_poly(wave_N, rate // 50, 16000 // 50).astype(np.float32)
    sf.write(path, wave_N, rate, subtype="PCM_16")


def build_cuts(root) -> tuple[str, dict]:
    """Write the WAVs and the cuts manifest under ``root``; returns its path and the good cuts."""
    root.mkdir(parents=True, exist_ok=True)
    wav(root / "call.wav", 6.0, [(s, e) for _, s, e in CALL_TURNS], rate=22050)
    call = Recording.from_file(root / "call.wav", recording_id="call")
    call_sups = [sup("call", i, spk, s, e, words=i != 1) for i, (spk, s, e) in enumerate(CALL_TURNS)]
    made = CutSet.from_manifests(RecordingSet.from_recordings([call]), SupervisionSet.from_segments(call_sups))
    assert len(made) == 1
    call_cut = made[0].with_id("call")

    stereo = np.stack([place(7.0, [(s, e) for spk, s, e in PHONE_TURNS if spk == spk_], seed=k)
                       for k, spk_ in enumerate("AB")], axis=1)
    sf.write(root / "phone.wav", stereo, 16000, subtype="PCM_16")
    phone = Recording.from_file(root / "phone.wav", recording_id="phone")
    phone_cut = phone.to_cut()
    assert isinstance(phone_cut, MultiCut)
    phone_cut.supervisions = [sup("phone", i, spk, s, e, channel="AB".index(spk))
                              for i, (spk, s, e) in enumerate(PHONE_TURNS)]

    wav(root / "long.wav", 8.0, [(s, e) for _, s, e in WINDOW_TURNS], seed=3)
    long = Recording.from_file(root / "long.wav", recording_id="long")
    window = MonoCut(id="window", start=1.5, duration=4.0, channel=0, recording=long, supervisions=[
        sup("long", i, spk, s, e, cut_start=1.5) for i, (spk, s, e) in enumerate(WINDOW_TURNS)])

    wav(root / "quiet.wav", 3.0, [(0.5, 1.5)], seed=4)
    silent = Recording.from_file(root / "quiet.wav", recording_id="quiet").to_cut()
    wav(root / "broken.wav", 3.0, [(0.5, 1.5)], seed=5)
    broken = Recording.from_file(root / "broken.wav", recording_id="broken").to_cut()
    broken.supervisions = [sup("broken", 0, "A", 0.5, 1.5)]
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave any more")
    wav(root / "over.wav", 3.0, [(0.5, 1.5)], seed=6)
    over = Recording.from_file(root / "over.wav", recording_id="over").to_cut()
    over.supervisions = [sup("over", 0, "A", 2.0, 4.5, words=False)]
    again = call_cut.with_id("call-again")

    path = str(root / "cuts.jsonl.gz")
    CutSet.from_cuts([call_cut, phone_cut, window, silent, broken, over, again]).to_file(path)
    return path, {"call": call_cut, "phone": phone_cut, "window": window}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from microturn.cli.interop import import_main

    root = tmp_path_factory.mktemp("import")
    cuts_path, cuts = build_cuts(root / "in")
    out = str(root / "out")
    assert import_main(["lhotse", cuts_path, "--output", out, "--license", "CC-BY-4.0"]) == 0
    return cuts_path, cuts, out


def by_cut(out: str) -> dict[str, dict]:
    """Conversation rows of OUT by the id of the cut they came from (``source_uri`` = CUTS#id)."""
    return {c["source_uri"].rsplit("#", 1)[1]: c for c in read_table(out, "conversations").to_pylist()}


def rows(out: str, table: str, cid: str) -> list[dict]:
    return [r for r in read_table(out, table).to_pylist() if r["conversation_id"] == cid]


def test_bad_cuts_are_rejects_with_reasons_and_the_rest_are_records(imported):
    cuts_path, _, out = imported
    assert sorted(by_cut(out)) == ["call", "phone", "window"]
    rejects = {(r["input"], r["stage"], r["error_type"]) for r in read_table(out, "rejects").to_pylist()}
    assert rejects == {(f"{cuts_path}#quiet", "import", "no_supervisions"),
                       (f"{cuts_path}#broken", "import", "unreadable_audio"),
                       (f"{cuts_path}#over", "import", "supervision_outside_cut"),
                       (f"{cuts_path}#call-again", "dedupe", "DuplicateContent")}
    sources = read_table(out, "sources").to_pylist()
    assert {s["uri"] for s in sources} == {f"{cuts_path}#{k}" for k in ("call", "phone", "window")}
    with open(os.path.join(out, "_microturn_stage.json")) as f:
        assert json.load(f)["stage"] == "ingest"  # the tables of an ingest output: shard, catalog read it as one


def test_layouts_media_and_ids(imported):
    _, cuts, out = imported
    convs = by_cut(out)
    assert (convs["call"]["channel_layout"], convs["call"]["audio_files"]) == ("mixed", ["mix.flac"])
    assert (convs["phone"]["channel_layout"], convs["phone"]["audio_files"]) == (
        "per_speaker", ["ch0.flac", "ch1.flac"])
    assert convs["window"]["channel_layout"] == "mixed"
    for name, conv in convs.items():
        assert conv["conversation_id"].startswith("c-") and conv["license"] == "CC-BY-4.0"
        assert conv["duration_ms"] == round(cuts[name].duration * 1000)
        for file in conv["audio_files"]:
            wave, rate = sf.read(os.path.join(out, conv["media_dir"], file), dtype="float32")
            assert rate == 16000 and wave.ndim == 1 and abs(len(wave) / 16 - conv["duration_ms"]) <= 1
    # each speaker's stream carries that speaker: ch0 is loud in A's turns and quiet in B's alone
    phone = convs["phone"]
    ch0, _ = sf.read(os.path.join(out, phone["media_dir"], "ch0.flac"), dtype="float32")

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(ch0[int(a * 16000):int(b * 16000)] ** 2)))

    assert rms(0.6, 2.4) > 100 * max(rms(3.0, 4.5), 1e-6)
    # the window's audio is the recording from 1.5 s on
    window, _ = sf.read(os.path.join(out, convs["window"]["media_dir"], "mix.flac"), dtype="float32")
    np.testing.assert_allclose(window, cuts["window"].load_audio()[0], atol=2e-4)


def test_segments_words_events_and_statistics(imported):
    _, cuts, out = imported
    convs = by_cut(out)
    for name, cut in cuts.items():
        cid = convs[name]["conversation_id"]
        shift = cut.start  # word alignments are in recording time
        want_segments = sorted((s.speaker, round(s.start * 1000), round(s.end * 1000),
                                "AB".index(s.speaker) if name == "phone" else 0) for s in cut.supervisions)
        segments = rows(out, "segments", cid)
        assert sorted((r["speaker"], r["start_ms"], r["end_ms"], r["channel"]) for r in segments) == want_segments
        want_words = sorted((s.speaker, a.symbol, round((a.start - shift) * 1000), round((a.end - shift) * 1000), 0.8)
                            for s in cut.supervisions for a in (s.alignment or {}).get("word", []))
        got_words = sorted((w["speaker"], w["text"], w["start_ms"], w["end_ms"], round(w["score"], 4))
                           for w in rows(out, "words", cid))
        assert got_words == want_words and got_words
        turns = sorted((Turn(r["speaker"], r["start_ms"], r["end_ms"], r["channel"]) for r in segments),
                       key=lambda t: (t.start_ms, t.end_ms, t.speaker))
        events = sorted((e["type"], e["speaker"], e["t_ms"], e["payload"]) for e in rows(out, "events", cid))
        assert events == sorted((e.type, e.speaker, e.t_ms, json.dumps(e.payload, sort_keys=True))
                                for e in turn_events(turns))
        assert any(e[0] == "turn_end" for e in events)
        assert convs[name]["stats"] == turn_stats(turns, convs[name]["duration_ms"]).as_row()
    window_words = rows(out, "words", convs["window"]["conversation_id"])
    assert min(w["start_ms"] for w in window_words) == 500  # 2.0 s in the recording, 1.5 s into it


def test_the_shard_stage_takes_the_imported_records(imported, tmp_path):
    from microturn.pipelines.shard.run import run as shard

    _, _, out = imported
    summary = shard(["--input", out, "--output", str(tmp_path / "shards"), "--window-chunks", "10",
                     "--splits", "train=1"], print_summary=False)
    samples = read_table(str(tmp_path / "shards"), "samples").to_pylist()
    convs = by_cut(out)
    assert {s["conversation_id"] for s in samples} == {c["conversation_id"] for c in convs.values()}
    assert summary["samples"] == len(samples) > 0 and not summary["rejects"]
    assert {(s["conversation_id"], s["model_speaker"]) for s in samples} == {
        (c["conversation_id"], spk) for c in convs.values() for spk in c["speakers"]}
    assert sum(s["stats"]["model_words"] for s in samples) > 0


def test_every_cut_failing_is_an_error_and_writes_nothing(tmp_path):
    from microturn.cli.interop import import_main

    wav(tmp_path / "quiet.wav", 2.0, [(0.5, 1.5)])
    path = str(tmp_path / "bad_cuts.jsonl")
    CutSet.from_cuts([Recording.from_file(tmp_path / "quiet.wav", recording_id="quiet").to_cut()]).to_file(path)
    with pytest.raises(SystemExit, match="every input failed .*no_supervisions"):
        import_main(["lhotse", path, "--output", str(tmp_path / "out")])
    left = [os.path.join(d, n) for d, _, names in os.walk(tmp_path / "out") for n in names]
    assert not [p for p in left if p.endswith((".parquet", ".flac", ".pending"))], left
