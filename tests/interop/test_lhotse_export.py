"""`microturn export lhotse` on a record output, read back and checked with Lhotse itself."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, RecordingSet, SupervisionSet, validate
from lhotse.cut import MonoCut, MultiCut
from lhotse.qa import validate_recordings_and_supervisions

from microturn.pipelines.tables import read_table
from microturn.schemas.stage_marker import MARKER, read_marker


def manifests(folder: str, prefix: str = "microturn"):
    return (RecordingSet.from_file(os.path.join(folder, f"{prefix}_recordings.jsonl.gz")),
            SupervisionSet.from_file(os.path.join(folder, f"{prefix}_supervisions.jsonl.gz")),
            CutSet.from_file(os.path.join(folder, f"{prefix}_cuts.jsonl.gz")))


def test_lhotse_validators_accept_the_manifests_reading_the_audio(exported):
    recordings, supervisions, cuts = manifests(exported)
    validate_recordings_and_supervisions(recordings, supervisions, read_data=True)
    validate(recordings, read_data=True)
    validate(supervisions)
    validate(cuts, read_data=True)
    assert len(recordings) == 2 and len(cuts) == 2 and len(supervisions) == 10 + 16


def test_every_cut_loads_its_audio_with_the_records_shape(records, exported):
    _, _, cuts = manifests(exported)
    convs = {c["conversation_id"]: c for c in read_table(records, "conversations").to_pylist()}
    assert {c.id for c in cuts} == set(convs)
    for cut in cuts:
        conv = convs[cut.id]
        audio = cut.load_audio()
        streams = len(conv["audio_files"])
        assert isinstance(cut, MonoCut if streams == 1 else MultiCut)
        assert audio.shape == (streams, round(conv["duration_ms"] * 16))
        assert cut.sampling_rate == 16000 and abs(cut.duration * 1000 - conv["duration_ms"]) < 1
        for i, name in enumerate(conv["audio_files"]):
            wave, rate = sf.read(os.path.join(records, conv["media_dir"], name), dtype="float32")
            assert rate == 16000
            np.testing.assert_allclose(audio[i], wave, atol=1e-6)
        assert cut.custom is not None
        assert {k: cut.custom[k] for k in ("origin", "license", "split")} == {
            "origin": conv["origin"], "license": conv["license"], "split": conv["split"]}
        assert cut.recording is not None
        for source in cut.recording.sources:
            assert os.path.isabs(str(source.source)) and os.path.isfile(str(source.source))


def test_speakers_channels_and_times_match_the_segments(records, exported):
    _, supervisions, _ = manifests(exported)
    convs = {c["conversation_id"]: c for c in read_table(records, "conversations").to_pylist()}
    want = {(s["conversation_id"], s["speaker"], s["start_ms"], s["end_ms"], s["channel"])
            for s in read_table(records, "segments").to_pylist()}
    got = {(s.recording_id, s.speaker, round(s.start * 1000), round(s.end * 1000), s.channel) for s in supervisions}
    assert got == want
    per_speaker = convs["s-00000000000000b2"]
    assert per_speaker["channel_layout"] == "per_speaker"
    for s in supervisions:
        if s.recording_id == "s-00000000000000b2":  # A on A.flac (channel 0), B on B.flac (channel 1)
            assert s.channel == per_speaker["audio_files"].index(f"{s.speaker}.flac")
        else:
            assert s.channel == 0


def test_word_alignments_hold_every_word_in_its_speakers_supervision(records, exported):
    _, supervisions, _ = manifests(exported)
    want = sorted((w["conversation_id"], w["speaker"], w["text"], w["start_ms"], w["end_ms"],
                   None if w["score"] is None else round(w["score"], 4))
                  for w in read_table(records, "words").to_pylist())
    got = []
    for s in supervisions:
        items = (s.alignment or {}).get("word", [])
        assert s.text == (" ".join(a.symbol for a in items) or None)
        for a in items:
            got.append((s.recording_id, s.speaker, a.symbol, round(a.start * 1000), round(a.end * 1000),
                        None if a.score is None else round(a.score, 4)))
            assert a.end > s.start and a.start < s.end + 0.05  # the turn it overlaps
    assert sorted(got) == want and len(want) > 100


def test_same_records_give_the_same_bytes_and_a_split_filter(records, exported, tmp_path):
    from microturn.cli.interop import export_main

    again = str(tmp_path / "again")
    assert export_main(["lhotse", records, "--output", again]) == 0
    names = sorted(os.listdir(exported))
    assert names == sorted(os.listdir(again)) == sorted([MARKER, "microturn_recordings.jsonl.gz",
                                                         "microturn_supervisions.jsonl.gz", "microturn_cuts.jsonl.gz"])
    for name in names:
        with open(os.path.join(exported, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name
    with pytest.raises(SystemExit, match="no conversation of .* is in that split"):
        export_main(["lhotse", records, "--output", str(tmp_path / "valid"), "--split", "valid"])
    assert not os.path.exists(tmp_path / "valid")


def test_a_rerun_with_another_prefix_replaces_its_own_files_only(records, tmp_path):
    from microturn.cli.interop import export_main

    out = tmp_path / "out"
    assert export_main(["lhotse", records, "--output", str(out), "--prefix", "first"]) == 0
    assert export_main(["lhotse", records, "--output", str(out), "--prefix", "corpus", "--split", "train",
                        "--language", "en"]) == 0
    assert sorted(os.listdir(out)) == sorted([MARKER, "corpus_recordings.jsonl.gz", "corpus_supervisions.jsonl.gz",
                                              "corpus_cuts.jsonl.gz"])
    assert read_marker(str(out)) == {"stage": "export lhotse", "layout_version": 1, "files": sorted(
        ["corpus_recordings.jsonl.gz", "corpus_supervisions.jsonl.gz", "corpus_cuts.jsonl.gz"])}
    _, supervisions, cuts = manifests(str(out), "corpus")
    assert {s.language for s in supervisions} == {"en"}
    validate(cuts)


def test_records_that_lhotse_cannot_take_are_adapted_and_counted(tmp_path):
    """A word with no speaker and a segment of no duration are left out; a segment past the
    media ends at it; the summary counts each."""
    from microturn.pipelines.interop.lhotse_export import ExportConfig, export_lhotse
    from microturn.testing.records import two_streams, write_records

    rec = two_streams("s-00000000000000e1", seconds=12.0)
    cid = "s-00000000000000e1"
    rec["words"].append({"conversation_id": cid, "speaker": None, "text": "stray", "start_ms": 100,
                         "end_ms": 200, "score": None})
    rec["segments"].append({"conversation_id": cid, "speaker": "A", "start_ms": 5000, "end_ms": 5000, "channel": 0})
    rec["segments"].append({"conversation_id": cid, "speaker": "B", "start_ms": 11_500, "end_ms": 12_150,
                            "channel": 1})
    root = write_records(str(tmp_path / "rec"), [rec])
    summary = export_lhotse(ExportConfig(records=root, output=str(tmp_path / "lh")))
    assert summary.left_out == {"words_without_a_speaker_turn_left_out": 1, "segments_of_no_duration_left_out": 1,
                                "segment_ends_cut_at_media_end": 1}
    recordings, supervisions, cuts = manifests(str(tmp_path / "lh"))
    validate_recordings_and_supervisions(recordings, supervisions)
    validate(cuts)
    assert max(s.end for s in supervisions) == pytest.approx(12.0)
    assert "adapted: " in summary.render() and "stray" not in {a.symbol for s in supervisions
                                                                  for a in (s.alignment or {}).get("word", [])}


@pytest.mark.slow
def test_a_synthesize_output_exports_and_loads(tmp_path):
    """The real stage's output (espeak-ng, one bundled dialogue): every speaker's stream is a
    channel of the cut, and each supervision's audio is loud on its own channel."""
    import json

    from microturn.cli.interop import export_main
    from microturn.pipelines.synthesize.run import run as synthesize
    from microturn.synth.templates import bundled_dialogues, dialogue_kind

    plain = [d for d in bundled_dialogues() if dialogue_kind(d) == "dialogue"]
    script = min(plain, key=lambda d: sum(len(t.text) for t in d.turns))
    (tmp_path / "one.jsonl").write_text(json.dumps(script.to_dict()) + "\n")
    synth = str(tmp_path / "synth")
    synthesize(["--scripts", str(tmp_path / "one.jsonl"), "--output", synth, "--seed", "3"], print_summary=False)
    assert export_main(["lhotse", synth, "--output", str(tmp_path / "lh")]) == 0
    recordings, supervisions, cuts = manifests(str(tmp_path / "lh"))
    validate_recordings_and_supervisions(recordings, supervisions, read_data=True)
    validate(cuts, read_data=True)
    (cut,) = list(cuts)
    (conv,) = read_table(synth, "conversations").to_pylist()
    assert isinstance(cut, MultiCut) and cut.num_channels == len(conv["speakers"]) >= 2
    audio = cut.load_audio()
    assert audio is not None
    words = read_table(synth, "words").num_rows
    assert sum(len((s.alignment or {}).get("word", [])) for s in cut.supervisions) == words > 0
    for s in cut.supervisions:
        own = audio[s.channel, int(s.start * 16000):int(s.end * 16000)]
        assert float(np.abs(own).max()) > 0.01, s
