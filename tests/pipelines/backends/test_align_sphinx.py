"""Tests of the pocketsphinx forced aligner on real and synthesised speech.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.
"""

from __future__ import annotations

import copy
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from microturn.pipelines.backends.align_sphinx import (
    PocketsphinxAligner,
    PocketsphinxAlignerConfig,
    _padded_spans,
    normalise_token,
    spread_words,
)
from microturn.pipelines.backends.base import SAMPLE_RATE, Transcriber, Turn, Utterance, Word
from microturn.pipelines.backends.sidecar import SidecarTranscript, parse_sidecar
from microturn.pipelines.eval_words import evaluate_words
from microturn.testing.sample_call import SAMPLE_DIR

# The sample call that ships inside pyannote.audio (located without importing it).
SAMPLE = SAMPLE_DIR
ESPEAK = "/usr/bin/espeak-ng"


@pytest.fixture(scope="module")
def aligner() -> PocketsphinxAligner:
    al = PocketsphinxAligner()
    assert al.decoder is not None  # build once for the module
    return al


@pytest.fixture(scope="module")
def sample():
    wave_N, sr = sf.read(str(SAMPLE / "sample.wav"), dtype="float32")
    assert sr == SAMPLE_RATE and wave_N.ndim == 1
    transcript = parse_sidecar((SAMPLE / "sample.stm").read_bytes(), "stm")
    return wave_N, transcript


@pytest.fixture(scope="module")
def sample_words(aligner, sample):
    wave_N, transcript = sample
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every utterance of the sample aligns: no fallback
        return aligner(wave_N, utterances=transcript.utterances, turns=[])


# ------------------------------------------------------------------------------- real speech


def test_is_a_transcriber(aligner):
    assert isinstance(aligner, Transcriber)
    assert aligner.name == "sidecar+pocketsphinx"


def test_sample_words_fall_inside_their_reference_segments(sample_words):
    hyp = {"sample": [(w.text, w.start_ms, w.end_ms) for w in sample_words]}
    strict = evaluate_words(SAMPLE / "sample.stm", hyp)
    assert strict.total.n_hypothesis == 81 and strict.total.coverage == 1.0
    # By default the transcript's segment bounds the audio searched (as whisperx does), so
    # every word of the sample (81 of 81) lands inside its segment; the check is that alignment
    # succeeds for every utterance (no fallback, see the fixture) and keeps order.
    share = strict.total.inside_share
    assert share is not None and share >= 0.90


def test_padded_alignment_for_loose_transcripts(aligner, sample):
    """With 200 ms padding (for subtitles whose times are loose), words may leave the segment.

    Measured: 72 of 81 words (0.889) strictly inside. The misses are first/last words 10-180
    ms past a segment edge; the STM edges themselves disagree with the sample's RTTM by up to
    150 ms there (e.g. Sheila's "Well," starts at 21.78 s in the RTTM, 21.935 s in the STM;
    the aligner says 21.835 s). Within two 10 ms frames of the edges: 75 of 81 (0.926).
    """
    wave_N, transcript = sample
    padded = PocketsphinxAligner(PocketsphinxAlignerConfig(pad_ms=200))
    words = padded(wave_N, utterances=transcript.utterances, turns=[])
    hyp = {"sample": [(w.text, w.start_ms, w.end_ms) for w in words]}
    share = evaluate_words(SAMPLE / "sample.stm", hyp).total.inside_share
    assert share is not None and share >= 0.85
    share = evaluate_words(SAMPLE / "sample.stm", hyp, collar_ms=20).total.inside_share
    assert share is not None and share >= 0.90


def test_sample_words_are_well_formed(sample, sample_words):
    wave_N, transcript = sample
    duration_ms = len(wave_N) * 1000 // SAMPLE_RATE
    pad = PocketsphinxAlignerConfig().pad_ms
    k = 0
    for utt in transcript.utterances:
        tokens = utt.text.split()
        words = sample_words[k : k + len(tokens)]
        k += len(tokens)
        # Surface text kept ("Hello?", "didn't", "Oh,"), speaker from the sidecar.
        assert [w.text for w in words] == tokens
        assert all(w.speaker == utt.speaker for w in words)
        prev_end = 0
        for w in words:
            assert 0 <= w.start_ms < w.end_ms <= duration_ms
            assert utt.start_ms - pad <= w.start_ms and w.end_ms <= utt.end_ms + pad
            assert w.start_ms >= prev_end  # monotone, no overlap within an utterance
            prev_end = w.end_ms
            assert w.score is not None and 0.0 <= w.score <= 1.0
    assert k == len(sample_words)
    # The confidence is calibrated so that a typical correct word scores about 0.8.
    assert 0.6 <= float(np.median([w.score for w in sample_words])) <= 0.95


def test_words_do_not_depend_on_what_was_aligned_before(aligner, sample, sample_words):
    """An utterance aligned alone on a fresh decoder, in a whole call, or again after the whole
    call, gives the same words (the decoder's noise and cepstral-mean state once carried over:
    "didn't" ended at 9131 ms alone and at 9111 ms after the rest of the call)."""
    wave_N, transcript = sample
    utts = transcript.utterances
    as_tuples = lambda ws: [(w.text, w.start_ms, w.end_ms, w.score, w.speaker) for w in ws]  # noqa: E731
    starts = np.cumsum([0] + [len(u.text.split()) for u in utts])
    for k in (0, 3, len(utts) - 1):
        in_call = as_tuples(sample_words[starts[k] : starts[k + 1]])
        fresh = PocketsphinxAligner()(wave_N, utterances=[utts[k]], turns=[])
        again = aligner(wave_N, utterances=[utts[k]], turns=[])
        assert as_tuples(fresh) == in_call == as_tuples(again), k


def test_alignment_speed(aligner, sample):
    """30 s of audio aligns in well under 0.6 s once the decoder exists (> 50x realtime)."""
    wave_N, transcript = sample
    best = np.inf
    for _ in range(2):
        # CPU time of this process: robust to other jobs sharing the machine.
        t0 = time.process_time()
        aligner(wave_N, utterances=transcript.utterances, turns=[])
        best = min(best, time.process_time() - t0)
    realtime = len(wave_N) / SAMPLE_RATE / best
    print(f"aligned 30 s in {best:.3f} s CPU: {realtime:.0f}x realtime")
    assert best < 0.6 and realtime > 50


def test_turns_assign_speakers(aligner, sample):
    wave_N, transcript = sample
    turns = []
    for line in (SAMPLE / "sample.rttm").read_text().splitlines():
        f = line.split()
        start = round(float(f[3]) * 1000)
        turns.append(Turn(f[7], start, start + round(float(f[4]) * 1000)))
    words = aligner(wave_N, utterances=transcript.utterances, turns=turns)
    by_label: dict[str, dict[str, int]] = {}
    for utt_speaker, w in zip(
        (u.speaker for u in transcript.utterances for _ in u.text.split()), words, strict=False
    ):
        by_label.setdefault(utt_speaker, {}).setdefault(w.speaker, 0)
        by_label[utt_speaker][w.speaker] += 1
    # Diane is speaker90, Sheila speaker91 for the large majority of words (the rest fall in
    # overlapping speech, where the turn of the other speaker is longer).
    assert max(by_label["Diane"].items(), key=lambda kv: kv[1])[0] == "speaker90"
    assert max(by_label["Sheila"].items(), key=lambda kv: kv[1])[0] == "speaker91"
    agree = by_label["Diane"]["speaker90"] + by_label["Sheila"]["speaker91"]
    assert agree / len(words) >= 0.9


# ------------------------------------------------------------------------------- espeak speech


def _espeak_word(word: str, path: Path) -> np.ndarray:
    """One word from espeak-ng at 16 kHz, trimmed to the 10 ms frames within 35 dB of its peak."""
    subprocess.run([ESPEAK, "-v", "en-us", "-w", str(path), word], check=True, capture_output=True)
    x_N, sr = sf.read(str(path), dtype="float32")
    x_N = resample_poly(x_N, SAMPLE_RATE // 50, sr // 50).astype(np.float32)  # 22050 -> 16000
    n = len(x_N) // 160
    rms = np.sqrt((x_N[: n * 160].reshape(n, 160) ** 2).mean(axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > -35)[0]
    return x_N[loud[0] * 160 : (loud[-1] + 1) * 160]


@pytest.fixture(scope="module")
def espeak_scene(tmp_path_factory):
    """Three phrases (speech islands) separated by 700 ms of silence, words 50-150 ms apart.

    "zorblat" is not in the dictionary. Returns the audio, the utterance, and the true
    (text, start_ms, end_ms, island) of every word.
    """
    if not Path(ESPEAK).exists():
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("espeak")
    phrases = [
        ["Hello,", "my", "good", "friend."],
        ["The", "zorblat", "machine", "is", "broken", "again."],
        ["Call", "me", "tomorrow", "morning!"],
    ]
    rng = np.random.default_rng(7)
    pieces = [np.zeros(400 * 16, np.float32)]
    truth: list[tuple[str, int, int, int]] = []
    for island, phrase in enumerate(phrases):
        if island:
            pieces.append(np.zeros(700 * 16, np.float32))
        for k, word in enumerate(phrase):
            if k:
                pieces.append(np.zeros(int(rng.integers(50, 150)) * 16, np.float32))
            start = sum(len(p) for p in pieces) // 16
            x_N = _espeak_word(word.strip(",.!"), tmp / f"{island}_{k}.wav")
            pieces.append(x_N)
            truth.append((word, start, start + len(x_N) // 16, island))
    pieces.append(np.zeros(400 * 16, np.float32))
    wave_N = np.concatenate(pieces)
    wave_N += rng.normal(0.0, 3e-4, len(wave_N)).astype(np.float32)  # a little room noise
    utt = Utterance(truth[0][1], truth[-1][2], " ".join(t[0] for t in truth), "S")
    return wave_N, utt, truth


def test_espeak_words_fall_in_their_speech_islands(aligner, espeak_scene, tmp_path):
    wave_N, utt, truth = espeak_scene
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        words = aligner(wave_N, utterances=[utt], turns=[])
    assert [w.text for w in words] == [t[0] for t in truth]
    islands = {}
    for _, s, e, island in truth:
        lo, hi = islands.get(island, (s, e))
        islands[island] = (min(lo, s), max(hi, e))
    for w, (text, s, e, island) in zip(words, truth, strict=True):
        lo, hi = islands[island]
        mid = (w.start_ms + w.end_ms) / 2
        assert lo <= mid <= hi, f"{text!r} at {w.start_ms}-{w.end_ms} outside island {lo}-{hi}"
        # Most of the word lies in its own island, none of it in another island.
        inside = min(w.end_ms, hi) - max(w.start_ms, lo)
        assert inside >= 0.8 * (w.end_ms - w.start_ms), text
        if text == "zorblat":  # out of vocabulary: interpolated between its neighbours
            assert w.score is None
            assert w.start_ms < e and w.end_ms > s  # overlaps the true word
        else:
            assert w.score is not None
    # Boundary error against the known word positions, through the evaluation module.
    stm = tmp_path / "espeak.stm"
    stm.write_text(
        "".join(
            f"espeak 1 S {islands[i][0] / 1000:.3f} {islands[i][1] / 1000:.3f} "
            + " ".join(t[0] for t in truth if t[3] == i)
            + "\n"
            for i in sorted(islands)
        )
    )
    known = [t for t in truth if t[0] != "zorblat"]
    report = evaluate_words(
        stm,
        {"espeak": [(w.text, w.start_ms, w.end_ms) for w in words if w.score is not None]},
        {"espeak": [(t[0], t[1], t[2]) for t in known]},
        collar_ms=50,
    )
    assert report.total.inside_share == 1.0
    assert report.total.n_boundary_pairs == len(known)
    # Measured 15 ms (180 espeak words, 3 voices); frames are 10 ms.
    median_ms = report.total.median_abs_boundary_ms
    assert median_ms is not None and median_ms <= 40


# ------------------------------------------------------------------------------- failures


def test_failed_alignment_spreads_words_with_a_warning(aligner, espeak_scene):
    wave_N, _, _ = espeak_scene
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    utt = Utterance(100, 400, text, "X")  # 13 words cannot fit into 300 ms (+ padding)
    with pytest.warns(UserWarning, match="alignment of the utterance at 100-400 ms failed"):
        words = aligner(wave_N, utterances=[utt], turns=[])
    assert [w.text for w in words] == text.split()
    assert all(w.score is None and w.speaker == "X" for w in words)
    assert words[0].start_ms == 100 and words[-1].end_ms == 400
    spans = [w.end_ms - w.start_ms for w in words]
    assert spans[words.index(next(w for w in words if w.text == "thirteen"))] > spans[0]
    assert all(a.end_ms == b.start_ms for a, b in zip(words, words[1:], strict=False))


def test_out_of_vocabulary_only_utterance_falls_back(aligner, espeak_scene):
    wave_N, _, _ = espeak_scene
    with pytest.warns(UserWarning, match="none of its words is in the pronunciation dictionary"):
        words = aligner(wave_N, utterances=[Utterance(500, 1500, "Qwxz vrrbl!")], turns=[])
    assert [(w.text, w.start_ms, w.end_ms, w.score) for w in words] == [
        ("Qwxz", 500, 900, None),  # 4 of 10 characters
        ("vrrbl!", 900, 1500, None),
    ]


def test_punctuation_tokens_and_media_end(aligner, espeak_scene):
    wave_N, _, truth = espeak_scene
    duration_ms = len(wave_N) // 16
    utts = [
        Utterance(truth[0][1], truth[3][2], "- Hello, -- my ... good friend."),
        Utterance(duration_ms + 10, duration_ms + 500, "late"),
    ]
    with pytest.warns(UserWarning) as record:
        words = aligner(wave_N, utterances=utts, turns=[])
    assert [str(r.message) for r in record] == [
        f"utterance at {duration_ms + 10} ms starts after the media end ({duration_ms} ms); "
        "skipped it (clip the sidecar with clip_to_media first)"
    ]
    # Tokens without letters or digits are not words; the others keep their punctuation.
    assert [w.text for w in words] == ["Hello,", "my", "good", "friend."]
    assert all(w.score is not None for w in words)


def test_input_validation(aligner):
    wave_N = np.zeros(16_000, np.float32)
    with pytest.raises(ValueError, match="sidecar"):
        aligner(wave_N, utterances=None, turns=[])
    with pytest.raises(ValueError, match=r"shape \[N\]"):
        aligner(np.zeros((2, 100), np.float32), utterances=[], turns=[])
    with pytest.raises(TypeError, match="float audio"):
        aligner(np.zeros(100, np.int16), utterances=[], turns=[])
    with pytest.raises(TypeError, match="Utterance"):
        aligner(wave_N, utterances=[("a", 0, 1)], turns=[])  # type: ignore[list-item]
    assert aligner(wave_N, utterances=[], turns=[]) == []
    with pytest.raises(ValueError, match="pad_ms"):
        PocketsphinxAlignerConfig(pad_ms=-1)
    with pytest.raises(ValueError, match="edge_garbage_prob"):
        PocketsphinxAlignerConfig(edge_garbage_prob=1.5)
    with pytest.raises(ValueError, match="garbage_phones"):
        PocketsphinxAlignerConfig(garbage_phones=())
    with pytest.raises(ValueError, match="beam"):
        PocketsphinxAlignerConfig(beam=0.0)
    with pytest.raises(TypeError):
        PocketsphinxAlignerConfig(200)  # type: ignore[misc]  # keyword-only
    with pytest.raises(TypeError, match="PocketsphinxAlignerConfig"):
        PocketsphinxAligner({"pad_ms": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a phone"):
        _ = PocketsphinxAligner(PocketsphinxAlignerConfig(garbage_phones=("QQ",))).decoder


def test_sidecar_word_times_are_used_without_alignment():
    al = PocketsphinxAligner()
    transcript = SidecarTranscript(
        utterances=[Utterance(0, 1000, "a b", "U"), Utterance(1500, 2500, "c", "U")],
        words=[
            Word("a", 0, 400, 0.9, "U"), Word("b", 500, 1000, 0.8, "U"),
            Word("c", 1500, 2500, 0.7, "U"),
        ],
        format="json",
    )
    wave_N = np.zeros(2000 * 16, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "c" is clipped to the media end, nothing is dropped
        words = al.align_transcript(wave_N, transcript, turns=[Turn("T", 0, 2000)])
    assert al._decoder is None  # no decoder was built
    assert words == [
        Word("a", 0, 400, 0.9, "T"), Word("b", 500, 1000, 0.8, "T"), Word("c", 1500, 2000, 0.7, "T")
    ]
    short_N = np.zeros(1200 * 16, np.float32)
    with pytest.warns(UserWarning, match="dropped 1 sidecar word"):
        words = al.align_transcript(short_N, transcript, turns=[])
    assert [w.text for w in words] == ["a", "b"]


def test_copy_drops_the_decoder(aligner):
    clone = copy.deepcopy(aligner)
    assert clone.config == aligner.config and clone._decoder is None


def test_padding_stops_at_neighbouring_utterances():
    utts = [Utterance(1000, 2000, "a"), Utterance(2100, 3000, "b"), Utterance(2900, 4000, "c")]
    spans = _padded_spans(utts, 10_000, 200, into_neighbours=False)
    assert spans[0] == (800, 2100, 800, 2200)
    assert spans[1] == (2000, 3000, 1900, 3200)  # c overlaps b's end: no right padding
    assert spans[2] == (2900, 4200, 2700, 4200)  # b overlaps c's start: no left padding
    assert _padded_spans(utts, 3500, 200, into_neighbours=True)[2] == (2700, 3500, 2700, 3500)


# ------------------------------------------------------------------------------- text


def test_normalise_token():
    known = {"hello", "didn't", "u.s.", "new-york", "cafe", "cause", "rock", "roll", "mr"}
    known |= {"forty", "two", "three", "point", "five", "nineteen", "ninety", "nine"}
    known |= {"twenty", "first", "fifty", "percent", "nineties", "hundred", "one", "thousand"}
    lookup = known.__contains__
    assert normalise_token("Hello?", lookup) == ["hello"]
    assert normalise_token("Didn’t", lookup) == ["didn't"]
    assert normalise_token("U.S.", lookup) == ["u.s."]
    assert normalise_token("Mr.", lookup) == ["mr"]
    assert normalise_token("New-York", lookup) == ["new-york"]
    assert normalise_token("rock/roll", lookup) == ["rock", "roll"]
    assert normalise_token("café", lookup) == ["cafe"]
    assert normalise_token("'cause", lookup) == ["cause"]
    assert normalise_token("42", lookup) == ["forty", "two"]
    assert normalise_token("3.5", lookup) == ["three", "point", "five"]
    assert normalise_token("1999", lookup) == ["nineteen", "ninety", "nine"]
    assert normalise_token("21st", lookup) == ["twenty", "first"]
    assert normalise_token("50%", lookup) == ["fifty", "percent"]
    assert normalise_token("1990s", lookup) == ["nineteen", "nineties"]
    assert normalise_token("--", lookup) == []
    assert normalise_token("zorblat", lookup) is None
    assert normalise_token("rock-zorblat", lookup) is None


def test_spread_words():
    assert spread_words(["a", "bbb"], 0, 400) == [(0, 100), (100, 400)]
    assert spread_words(["a", "b", "c"], 0, 1) == [(0, 1), (1, 2), (2, 3)]
