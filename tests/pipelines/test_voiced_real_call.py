"""VOICED on a real call: pyannote's sample call (one mixed channel, reference turns and
transcript) through the shard stage's samples, against the transcript's word gaps.

Reference per speaker: a chunk is a speech chunk when the speaker's words inside the speaker's
diarized turns (pauses under 200 ms between them closed) cover 100 ms or more of it, and a gap
chunk when a gap of 400 ms or more between those words, or between a word and an edge of the
speaker's turn, covers 100 ms or more of it. Two sets of word times: the transcript's utterances with their
tokens spread evenly (as :mod:`microturn.testing.sample_call` and the records give them), and
the same transcript aligned by the ingest's pocketsphinx backend.

Figures (30 s, 150 chunks, both speakers): evenly spread words: 108 of 108 speech chunks
voiced, 7 of 8 gap chunks unvoiced; aligned words: 104 of 104 speech chunks voiced, 7 of 11 gap
chunks unvoiced. The gap chunks found voiced hold speech energy (-44..-20 dBFS) on a stretch of
the channel that only this speaker's turn claims: the end of Sheila's "Hello?" at 7.8-8.3 s (the
transcript has it until 8.155 s, the aligner ends it at 7.849 s) and 14.2-14.4 s, after Diane's
"New Jersey." (the transcript ends it at 14.184 s; Sheila's turn begins at 14.49 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from microturn.pipelines.backends.align_sphinx import PocketsphinxAligner
from microturn.pipelines.backends.sidecar import parse_sidecar
from microturn.pipelines.shard.activity import close_gaps, voiced_chunks
from microturn.pipelines.shard.samples import Record, WindowSpec, make_samples
from microturn.pipelines.shard.streams import intervals_intersect, intervals_union
from microturn.schemas.sample import Label
from microturn.schemas.turns import Turn
from microturn.testing.records import real_call
from microturn.testing.sample_call import SAMPLE_DIR, sample_call


def _voiced(words: list[tuple[str | None, str, int, int]]) -> tuple[dict[str, np.ndarray], int]:
    """Per speaker: bool [K] VOICED of the stream where the speaker is ``model``, from the samples."""
    rec = real_call()
    segs = [Turn(r["speaker"], r["start_ms"], r["end_ms"], r["channel"]) for r in rec["segments"]]
    record = Record(root="", conversation=rec["conversation"], segments=segs, words=words)
    out = {}
    for sample, _ in make_samples(record, {0: rec["audio"]["mix.flac"]}, spec=WindowSpec(window_chunks=150),
                                  splits=(("train", 1.0),)):
        out[sample.meta["model_speaker"]] = (sample.labels["model"] & Label.VOICED).astype(bool)
    return out, sample.chunks


def _reference(speaker: str, words, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """bool [K] speech chunks and gap chunks of ``speaker`` (module doc)."""
    turns = intervals_union([(t.start_ms, t.end_ms) for t in sample_call().turns if t.speaker == speaker])
    # Words inside the speaker's turns only: the transcript's and the diarization's edges differ
    # by up to 130 ms, and a stream's speech never leaves its turns.
    mine = close_gaps(intervals_intersect(intervals_union([(s, e) for spk, _, s, e in words if spk == speaker]),
                                          turns))
    gaps = []
    for s, e in turns:
        cur = s
        for a, b in mine:
            if b <= s or a >= e:
                continue
            if a - cur >= 400:
                gaps.append((cur, a))
            cur = max(cur, b)
        if e - cur >= 400:
            gaps.append((cur, e))
    return voiced_chunks(chunks, mine), voiced_chunks(chunks, gaps)


def _agreement(words) -> tuple[int, int, int, int]:
    voiced, chunks = _voiced(words)
    speech_hits = speech_all = gap_hits = gap_all = 0
    for speaker, v in voiced.items():
        speech, gap = _reference(speaker, words, chunks)
        speech_hits += int((v & speech).sum())
        speech_all += int(speech.sum())
        gap_hits += int((~v & gap).sum())
        gap_all += int(gap.sum())
    return speech_hits, speech_all, gap_hits, gap_all


def test_transcript_word_gaps_are_unvoiced_and_speech_is_voiced():
    speech_hits, speech_all, gap_hits, gap_all = _agreement(list(sample_call().words))
    assert speech_all > 90 and gap_all >= 5  # the call has both kinds of chunk
    assert speech_hits == speech_all
    assert gap_hits >= gap_all - 1, (gap_hits, gap_all)


@pytest.fixture(scope="module")
def aligned_words() -> list[tuple[str | None, str, int, int]]:
    import soundfile as sf

    wave_N, _ = sf.read(str(SAMPLE_DIR / "sample.wav"), dtype="float32")
    transcript = parse_sidecar((SAMPLE_DIR / "sample.stm").read_bytes(), "stm")
    names: dict[str, str] = {}
    for u in transcript.utterances:  # the transcript's names in order of first appearance
        names.setdefault(str(u.speaker), f"SPEAKER_{len(names):02d}")
    words = PocketsphinxAligner()(wave_N, utterances=transcript.utterances, turns=[])
    return [(names[str(w.speaker)], w.text, w.start_ms, w.end_ms) for w in words]


def test_aligned_word_gaps_are_mostly_unvoiced(aligned_words):
    speech_hits, speech_all, gap_hits, gap_all = _agreement(aligned_words)
    assert speech_hits == speech_all > 90
    assert gap_all >= 8 and gap_hits >= gap_all // 2 + 1, (gap_hits, gap_all)
