"""End-to-end ingest runs on the DirectRunner over real speech (the pyannote sample call)."""

import os
import shutil

import pytest

from ingest_helpers import canonical, ingest, table_rows
from media_corpus import SAMPLE_RTTM, SAMPLE_STM, build_corpus, copy_sample_as_video, speech
from microturn.cli.main import main as cli_main
from microturn.pipelines.eval_diarization import evaluate_diarization
from microturn.pipelines.eval_words import evaluate_words

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def corpus_run(corpus, tmp_path_factory):
    root, expect = corpus
    out = str(tmp_path_factory.mktemp("out"))
    summary = ingest([os.path.join(root, "*")], out, "--max-duration-s", "60")
    return out, expect, summary


def test_bad_inputs_become_rejects_and_the_rest_completes(corpus_run):
    out, expect, summary = corpus_run
    rejects = table_rows(out, "rejects")
    by_input = {}
    for r in rejects:
        by_input.setdefault(os.path.basename(r["input"]), []).append(r)
    conversations = {os.path.basename(c["source_uri"]): c for c in table_rows(out, "conversations")}
    for name, exp in expect.items():
        if "stage" in exp:
            rows = by_input.get(name)
            assert rows, f"{name}: expected a rejects row, got none"
            stages = exp["stage"] if isinstance(exp["stage"], tuple) else (exp["stage"],)
            assert any(r["stage"] in stages for r in rows), (name, rows)
            for r in rows:
                assert r["error_type"] and len(r["message"]) > 10, r
            if "error" in exp:
                assert any(exp["error"] in r["message"] for r in rows), (name, rows)
            if "sidecar_of" in exp:
                # a sidecar problem costs words, never the conversation
                assert exp["sidecar_of"] in conversations
            else:
                assert name not in conversations
        else:
            conv = conversations.get(name)
            assert conv is not None, f"{name}: no conversation; rejects: {by_input.get(name)}"
            assert conv["has_video"] == exp["has_video"], name
            assert conv["channels"] == exp["channels"], name
            assert conv["num_speakers"] >= 1, name
    assert summary.conversations == len([e for e in expect.values() if "stage" not in e])
    assert sum(summary.rejects.values()) == len(rejects)


def test_media_and_sources_are_recorded(corpus_run):
    out, _, _ = corpus_run
    sources = {os.path.basename(s["uri"]): s for s in table_rows(out, "sources")}
    assert sources["call_8k.wav"]["sample_rate"] == 8000
    assert sources["call_48k_8ch.wav"]["channels"] == 8
    vfr = sources["vfr.mp4"]
    assert vfr["has_video"] and vfr["video_fps"] and vfr["video_width"] == 320
    assert any(s["variable_frame_rate"] for s in vfr["streams"] if s["codec_type"] == "video")
    assert sources["vfr.mp4"]["sidecar_uri"].endswith("vfr.vtt")
    for conv in table_rows(out, "conversations"):
        media_dir = os.path.join(out, conv["media_dir"])
        for name in conv["audio_files"]:
            assert os.path.getsize(os.path.join(media_dir, name)) > 0
        if conv["has_video"]:
            assert os.path.exists(os.path.join(media_dir, conv["video_file"]))
    two_line = next(c for c in table_rows(out, "conversations")
                    if c["source_uri"].endswith("two_line_call.wav"))
    assert two_line["channel_layout"] == "per_speaker" and two_line["audio_files"] == ["ch0.flac", "ch1.flac"]
    assert two_line["num_speakers"] == 2


def test_words_lie_inside_the_media_and_have_speakers(corpus_run):
    out, _, _ = corpus_run
    durations = {c["conversation_id"]: c["duration_ms"] for c in table_rows(out, "conversations")}
    words = table_rows(out, "words")
    assert words, "the vfr.mp4 sidecar's usable lines must give words"
    for w in words:
        assert 0 <= w["start_ms"] <= w["end_ms"] <= durations[w["conversation_id"]]


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    speech(str(root / "a.wav"), start=6.5, dur=10)
    speech(str(root / "b.flac"), start=17, dur=10, ar=22050)
    shutil.copyfile(SAMPLE_STM, root / "a.stm")  # times past 10 s are clipped / dropped
    return str(root)


def test_rerun_gives_the_same_ids_and_contents(small_inputs, tmp_path):
    first, second = str(tmp_path / "1"), str(tmp_path / "2")
    ingest([f"{small_inputs}/*"], first)
    ingest([f"{small_inputs}/*"], second)
    assert canonical(first) == canonical(second)
    ingest([f"{small_inputs}/*"], first)  # rerun into the same OUT replaces, never appends
    assert canonical(first) == canonical(second)


def test_multiprocessing_runner_gives_the_same_output(small_inputs, tmp_path):
    inproc, multi = str(tmp_path / "in"), str(tmp_path / "mp")
    ingest([f"{small_inputs}/*"], inproc)
    ingest([f"{small_inputs}/*"], multi, "--direct_running_mode=multi_processing",
           "--direct_num_workers=2")
    assert canonical(inproc) == canonical(multi)
    assert len(table_rows(multi, "conversations")) == 2


@pytest.mark.parametrize("count", [["--num-speakers", "2"], []], ids=["2-speakers", "estimated"])
def test_sample_call_quality(tmp_path, count, capsys):
    root = tmp_path / "in"
    copy_sample_as_video(str(root))
    out = str(tmp_path / "out")
    ingest([f"{root}/*.mp4"], out, *count)
    segments = table_rows(out, "segments")
    hyp = {"sample": [(s["speaker"], s["start_ms"], s["end_ms"]) for s in segments]}
    der = evaluate_diarization(SAMPLE_RTTM, hyp, collar_s=0.0).total.der
    assert der <= (0.15 if count else 0.20), der
    words = {"sample": [(w["text"], w["start_ms"], w["end_ms"]) for w in table_rows(out, "words")]}
    report = evaluate_words(SAMPLE_STM, words)
    assert report.total.inside_share is not None and report.total.inside_share >= 0.90
    # the same figures through the command line (file ids paired with the only conversation)
    capsys.readouterr()
    assert cli_main(["eval", "diarization", "--reference", SAMPLE_RTTM, "--hypothesis", out]) == 0
    total = [line for line in capsys.readouterr().out.splitlines() if line.startswith("TOTAL")]
    assert total and float(total[0].split()[1].rstrip("%")) == pytest.approx(100 * der, abs=0.01)
    assert cli_main(["eval", "words", "--reference", SAMPLE_STM, "--hypothesis", out]) == 0
    total = [line for line in capsys.readouterr().out.splitlines() if line.startswith("TOTAL")]
    assert total and float(total[0].split()[2].rstrip("%")) >= 90.0


def test_far_field_meetings_get_turns_where_the_vad_hears_nothing(tmp_path, capsys):
    """Two real AMI clips through ingest: trn01 (silero-vad finds no speech in it) still gets
    turns, and `eval diarization --uem` scores both with speaker counts and overlap shares."""
    from microturn.testing.ami import AMI_DIR

    root = tmp_path / "in"
    root.mkdir()
    for uri in ("trn01", "trn06"):
        shutil.copy(AMI_DIR / f"{uri}.flac", root / f"{uri}.flac")
    out = str(tmp_path / "out")
    ingest([f"{root}/*.flac"], out, "--transcriber", "none")
    ids = {r["source_uri"].rsplit("/", 1)[-1]: r["conversation_id"] for r in table_rows(out, "conversations")}
    assert set(ids) == {"trn01.flac", "trn06.flac"}
    assert any(s["conversation_id"] == ids["trn01.flac"] for s in table_rows(out, "segments"))
    capsys.readouterr()
    refs = tmp_path / "refs"
    refs.mkdir()
    for uri in ("trn01", "trn06"):
        for suffix in (".rttm", ".uem"):
            shutil.copy(AMI_DIR / f"{uri}{suffix}", refs / f"{uri}{suffix}")
    assert cli_main(["eval", "diarization", "--reference", str(refs), "--hypothesis", out, "--uem", str(refs)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert int(lines["trn01"][7]) >= 1, lines["trn01"]  # hypothesis speakers: turns were found
    assert int(lines["trn06"][6]) == 3  # reference speakers
    assert float(lines["TOTAL"][1].rstrip("%")) < 60.0
