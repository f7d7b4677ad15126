"""The whisperx transcriber on real speech, with tiny random models loaded like real weights.

Random weights place words arbitrarily, so these tests check validity (types, integer ms, each
word inside its segment and the media, speakers from the turns), never accuracy.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from microturn.pipelines.backends.base import Transcriber, Turn, Utterance, Word
from microturn.pipelines.backends.model_dir import check_model_dir, whisperx_config
from microturn.pipelines.backends.whisperx_backend import WhisperxConfig, WhisperxTranscriber

if __package__:
    from .tiny_models import build_tiny_align, build_tiny_whisper
else:  # rootdir-relative collection puts this folder on sys.path
    from tiny_models import build_tiny_align, build_tiny_whisper

SAMPLE_MS = 30_000  # pyannote's sample.wav: 30 s at 16 kHz


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir, offline_module, one_thread) -> WhisperxTranscriber:
    # One CTranslate2 thread too, for the same reason as torch's (see the one_thread fixture).
    return WhisperxTranscriber(whisperx_config(tiny_model_dir, language="en", threads=1))


def check_words(words: list[Word], duration_ms: int) -> None:
    assert isinstance(words, list)
    for w in words:
        assert isinstance(w, Word)
        assert isinstance(w.text, str) and w.text and w.text == w.text.strip()
        assert type(w.start_ms) is int and type(w.end_ms) is int
        assert 0 <= w.start_ms < w.end_ms <= duration_ms, w
        assert w.score is None or (isinstance(w.score, float) and 0.0 <= w.score <= 1.0), w
        assert w.speaker is None or isinstance(w.speaker, str)
    assert [w.start_ms for w in words] == sorted(w.start_ms for w in words)


def inside_an_utterance(word: Word, utterances: list[Utterance]) -> bool:
    return any(
        u.start_ms <= word.start_ms and word.end_ms <= u.end_ms and word.text in u.text.split()
        for u in utterances
    )


@pytest.mark.slow
def test_sidecar_utterances_are_aligned_into_their_spans(
    transcriber, sample_wave, sample_utterances, sample_turns, offline
):
    assert isinstance(transcriber, Transcriber) and transcriber.name == "whisperx"
    words = transcriber(sample_wave, utterances=sample_utterances, turns=sample_turns)
    check_words(words, SAMPLE_MS)
    # Every word of the sidecar comes back once, inside the line it belongs to.
    assert Counter(w.text for w in words) == Counter(t for u in sample_utterances for t in u.text.split())
    assert all(inside_an_utterance(w, sample_utterances) for w in words)
    assert any(w.score is not None for w in words)
    speakers = {t.speaker for t in sample_turns}
    assert {w.speaker for w in words} - {None} <= speakers
    assert any(w.speaker is not None for w in words)


@pytest.mark.slow
def test_sidecar_without_turns_keeps_the_sidecar_speakers(
    transcriber, sample_wave, sample_utterances, offline
):
    words = transcriber(sample_wave, utterances=sample_utterances[:3], turns=[])
    check_words(words, SAMPLE_MS)
    assert [w.speaker for w in words] == ["Diane", "Sheila", "Diane", "Diane"]  # Hello? Hello? Oh, hello.


@pytest.mark.slow
def test_asr_runs_end_to_end(transcriber, sample_wave, sample_turns, offline):
    # The first 15 s (speech from 6.7 s) halve the cost of whisperx's VAD and of the aligner.
    excerpt_ms = 15_000
    words = transcriber(sample_wave[: excerpt_ms * 16], utterances=None, turns=sample_turns)
    check_words(words, excerpt_ms)
    # The tiny Whisper is built to end each window after 12 tokens, so there are words to align.
    assert words
    assert {w.speaker for w in words} - {None} <= {t.speaker for t in sample_turns}


@pytest.mark.slow
def test_silence_and_empty_audio_give_no_words(transcriber, offline):
    assert transcriber(np.zeros(16_000, np.float32), utterances=None, turns=[]) == []
    with pytest.warns(UserWarning, match="empty audio"):
        assert transcriber(np.zeros(0, np.float32), utterances=None, turns=[]) == []


def test_unusable_sidecar_lines_are_skipped_with_a_warning(transcriber, offline):
    wave = np.zeros(16_000, np.float32)  # 1 s
    lines = [Utterance(200, 900, "hello there"), Utterance(500, 500, "empty span"),
             Utterance(2_000, 3_000, "after the end"), Utterance(100, 400, "   ")]
    with pytest.warns(UserWarning, match="skipped 3 sidecar line"):
        words = transcriber(wave, utterances=lines, turns=[Turn("SPEAKER_00", 0, 1_000)])
    check_words(words, 1_000)
    assert [w.text for w in words] == ["hello", "there"]
    assert all(200 <= w.start_ms < w.end_ms <= 900 and w.speaker == "SPEAKER_00" for w in words)


def test_without_align_model_words_are_spread_over_the_segment(
    tiny_whisper_dir, sample_wave, sample_utterances, offline
):
    config = WhisperxConfig(whisper_model=str(tiny_whisper_dir), align_model=None)
    with pytest.warns(UserWarning, match="without an align model"):
        bare = WhisperxTranscriber(config)
    words = bare(sample_wave, utterances=sample_utterances, turns=[])
    check_words(words, SAMPLE_MS)
    assert all(w.score is None for w in words)
    assert all(inside_an_utterance(w, sample_utterances) for w in words)


def test_missing_punkt_is_refused_before_whisperx_downloads_it(
    tiny_model_dir, tmp_path, monkeypatch, offline
):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    config = whisperx_config(tiny_model_dir)
    with pytest.raises(ValueError, match="punkt_tab"):
        WhisperxTranscriber(replace(config, nltk_data=None))
    with pytest.raises(ValueError, match="nltk_data folder"):
        WhisperxTranscriber(replace(config, nltk_data=str(tmp_path / "no")))
    # A partial copy: nltk would raise LookupError inside whisperx.align, which then downloads.
    partial = tmp_path / "partial"
    assert config.nltk_data is not None
    shutil.copytree(config.nltk_data, partial)
    (partial / "tokenizers" / "punkt_tab" / "english" / "ortho_context.tab").unlink()
    with pytest.raises(ValueError, match="missing or incomplete"):
        WhisperxTranscriber(replace(config, nltk_data=str(partial)))


def test_models_that_would_need_a_download_are_refused(tiny_model_dir, offline):
    config = whisperx_config(tiny_model_dir)
    with pytest.raises(ValueError, match="--model-dir") as info:  # a size name, not cached here
        WhisperxTranscriber(replace(config, whisper_model="large-v3"))
    assert type(info.value.__cause__).__name__ != "NetworkAccessError"
    with pytest.raises(ValueError, match="torchaudio bundle"):
        WhisperxTranscriber(replace(config, align_model="WAV2VEC2_ASR_BASE_960H"))
    with pytest.raises(ValueError, match="does not exist"):
        WhisperxTranscriber(replace(config, whisper_model="/no/such/whisper"))


def test_bad_model_dir_lists_what_is_missing(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="--model-dir"):
        whisperx_config(None)
    with pytest.raises(ValueError) as info:
        whisperx_config(tmp_path)
    message = str(info.value)
    for part in ("whisper/ (a CTranslate2", "tokenizer.json", "align-en/ (a Hugging Face",
                 "punkt_tab/english"):
        assert part in message, (part, message)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / "whisper" / "tokenizer.json").unlink()
    (partial / "nltk_data" / "tokenizers" / "punkt_tab" / "english" / "sent_starters.txt").unlink()
    with pytest.raises(ValueError) as info:
        whisperx_config(partial, language="en")
    message = str(info.value)
    assert "tokenizer.json" in message and "download" in message and "sent_starters.txt" in message
    assert "align-en" not in message and "model.bin" not in message
    with pytest.raises(ValueError, match="align-fr"):
        whisperx_config(tiny_model_dir, language="fr")
    assert set(check_model_dir(tiny_model_dir)) == {"pyannote", "whisper", "align", "nltk_data"}


@pytest.mark.parametrize(
    "change, error",
    [
        ({"language": "xx"}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"threads": -1}, ValueError),
        ({"device": "tpu"}, ValueError),
        ({"interpolate_method": "cubic"}, ValueError),
        ({"whisper_model": ""}, TypeError),
        ({"align_model": ""}, TypeError),
    ],
)
def test_config_is_validated(change, error):
    base = {"whisper_model": "/models/whisper", "align_model": "/models/align-en"}
    with pytest.raises(error):
        WhisperxConfig(**{**base, **change})


def test_tiny_whisper_is_a_multilingual_ct2_model_that_follows_the_seed(tmp_path, tiny_whisper_dir):
    import ctranslate2

    model = ctranslate2.models.Whisper(str(tiny_whisper_dir))
    assert model.is_multilingual and model.num_languages == 100 and model.n_mels == 80
    again = build_tiny_whisper(tmp_path / "again")
    other = build_tiny_whisper(tmp_path / "other", seed=1)
    weights = (tiny_whisper_dir / "model.bin").read_bytes()
    assert (again / "model.bin").read_bytes() == weights
    for name in ("tokenizer.json", "vocabulary.json", "config.json", "preprocessor_config.json"):
        assert (again / name).read_bytes() == (tiny_whisper_dir / name).read_bytes(), name
    assert (other / "model.bin").read_bytes() != weights


def test_tiny_align_model_follows_the_seed(tmp_path, tiny_align_dir):
    weights = (tiny_align_dir / "model.safetensors").read_bytes()
    assert (build_tiny_align(tmp_path / "a") / "model.safetensors").read_bytes() == weights
    assert (build_tiny_align(tmp_path / "b", seed=1) / "model.safetensors").read_bytes() != weights
