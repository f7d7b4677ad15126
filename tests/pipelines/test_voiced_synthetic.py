"""VOICED on a synthetic dialogue with known pauses: espeak-ng speech on one channel per
speaker, through the shard stage's samples. One turn of A holds pauses of 300, 600 and 150 ms
(digital silence between espeak's phrases); B answers after the turn.

Where a phrase's speech begins or ends inside a chunk, espeak's onsets and decays blur the
edge by some 10-20 ms, so the checks leave alone the chunks whose share of pause lies within
20 ms of the 100 ms threshold."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.pipelines.shard.samples import Record, WindowSpec, make_samples
from microturn.schemas.sample import CHUNK_MS, Label
from microturn.schemas.turns import Turn
from microturn.synth.tts import Voice, get_tts

_PER_MS = 16
PHRASES = ("so I went down to the market this morning", "and they had nothing left at all",
           "not even the bread", "which never happens on a weekday")
PAUSES_MS = (300, 600, 150)  # after each phrase but the last


@pytest.fixture(scope="module")
def dialogue():
    tts = get_tts("espeak-ng")
    a_speech = [tts.speak(p, Voice(name="en-us")) for p in PHRASES]
    b_speech = tts.speak("oh that is a shame", Voice(name="en-gb", pitch=60))
    # A's phrases one after the other with the pauses between them; the first pause starts 50 ms
    # into a chunk, so its 300 ms cover 150 ms of two chunks.
    first_end = -(-(400 + a_speech[0].duration_ms) // CHUNK_MS) * CHUNK_MS + 50
    t, placed, pauses = first_end - a_speech[0].duration_ms, [], []
    for i, sp in enumerate(a_speech):
        placed.append((t, sp))
        t += sp.duration_ms
        if i < len(PAUSES_MS):
            pauses.append((t, t + PAUSES_MS[i]))
            t += PAUSES_MS[i]
    a_end = t
    b_start = a_end + 400
    duration_ms = -(-(b_start + b_speech.duration_ms + 600) // CHUNK_MS) * CHUNK_MS
    audio = {0: np.zeros(duration_ms * _PER_MS, np.float32), 1: np.zeros(duration_ms * _PER_MS, np.float32)}
    words = []
    for start, sp in placed:
        audio[0][start * _PER_MS: start * _PER_MS + len(sp.wave_N)] = sp.wave_N
        words += [("A", w.text, start + w.start_ms, start + w.end_ms) for w in sp.words]
    audio[1][b_start * _PER_MS: b_start * _PER_MS + len(b_speech.wave_N)] = b_speech.wave_N
    words += [("B", w.text, b_start + w.start_ms, b_start + w.end_ms) for w in b_speech.words]
    segments = [Turn("A", placed[0][0], a_end, 0), Turn("B", b_start, b_start + b_speech.duration_ms, 1)]
    conv = {"conversation_id": "s-00000000000000c3", "duration_ms": duration_ms, "speakers": ["A", "B"],
            "origin": "synthetic", "license": "Apache-2.0", "channel_layout": "per_speaker",
            "audio_files": ["A.flac", "B.flac"], "provenance": None}
    record = Record(root="", conversation=conv, segments=segments, words=sorted(words, key=lambda w: w[2]))
    labels = {}
    for sample, _ in make_samples(record, audio, spec=WindowSpec(window_chunks=200), splits=(("train", 1.0),)):
        labels[sample.meta["model_speaker"]] = sample.labels["model"]
    return labels, placed, pauses, segments


def _on(bits: np.ndarray, flag: Label) -> list[int]:
    return np.flatnonzero(bits & flag).tolist()


def _pause_ms(k: int, pauses) -> int:
    """How much of chunk ``k`` the pauses cover."""
    return sum(max(0, min(e, (k + 1) * CHUNK_MS) - max(s, k * CHUNK_MS)) for s, e in pauses)


def test_pauses_of_200_ms_or_more_inside_a_turn_are_unvoiced(dialogue):
    labels, _, pauses, segments = dialogue
    a = labels["A"]
    long_pauses, (short,) = pauses[:2], pauses[2:]
    turn = range(segments[0].start_ms // CHUNK_MS, (segments[0].end_ms - 1) // CHUNK_MS + 1)
    silent = [k for k in turn if _pause_ms(k, long_pauses) > 120]
    assert len([k for k in silent if _pause_ms(k, long_pauses[:1]) > 120]) == 2  # the 300 ms pause
    assert len([k for k in silent if _pause_ms(k, long_pauses[1:]) > 120]) >= 2  # the 600 ms pause
    assert not any(a[silent] & Label.VOICED)
    # Chunks wholly inside the turn that the long pauses leave (nearly) alone are voiced, the
    # 150 ms pause's included.
    talking = [k for k in turn if _pause_ms(k, long_pauses) < 80
               and segments[0].start_ms <= k * CHUNK_MS and (k + 1) * CHUNK_MS <= segments[0].end_ms]
    assert all(a[talking] & Label.VOICED)
    assert {short[0] // CHUNK_MS, (short[1] - 1) // CHUNK_MS} <= set(talking)


def test_speech_is_voiced_and_turn_bits_follow_the_turn(dialogue):
    labels, placed, _, segments = dialogue
    a, b = labels["A"], labels["B"]
    inside = [k for start, sp in placed
              for k in range(-(-start // CHUNK_MS), (start + sp.duration_ms) // CHUNK_MS)]
    assert all(a[inside] & Label.VOICED)
    turn = range(segments[0].start_ms // CHUNK_MS, (segments[0].end_ms - 1) // CHUNK_MS + 1)
    assert _on(a, Label.TURN_START) == [turn[0]] and _on(a, Label.TURN_END) == [turn[-1]]
    assert set(_on(a, Label.VOICED)) <= set(turn)
    b_turn = range(segments[1].start_ms // CHUNK_MS, (segments[1].end_ms - 1) // CHUNK_MS + 1)
    assert set(_on(b, Label.VOICED)) <= set(b_turn) and _on(b, Label.VOICED)
    assert not _on(a, Label.OVERLAP) and not _on(b, Label.OVERLAP)
