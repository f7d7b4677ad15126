"""Remix: two-stream dialogues built from the real, diarized turns of an ingested conversation.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.

The turns of a real record keep their audio and their words; what changes is the timing between
them, drawn from a :class:`~microturn.synth.timing.TimingModel` (the defaults, or one fitted on
real data), and where each speaker's voice goes: every speaker gets a stream of their own.

- Per-speaker sources (one channel per speaker): a turn's audio is its speaker's channel over the
  turn; backchannels keep their offset inside the turn they respond to.
- Mixed sources (one channel for everybody): a turn's audio is the mixture over the turn with
  every stretch where another speaker talks cut to silence (10 ms fades), so that no stream holds
  another speaker's voice; the words of those stretches are dropped. A backchannel lies wholly
  inside another's turn, so in a mixture it cannot be separated from it and is dropped (counted
  in ``RemixResult.dropped_backchannels``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from microturn.schemas.turns import Turn, split_backchannels
from microturn.synth.engine import Conversation, assemble
from microturn.synth.layout import MIN_SELF_GAP_MS, SAMPLES_PER_MS, Layout, PlacedTurn, start_after
from microturn.synth.mix import MixConfig
from microturn.synth.timing import TimingModel

FADE_MS = 10


@dataclass(frozen=True, kw_only=True)
class RemixResult:
    conversation: Conversation
    dropped_backchannels: int
    dropped_words: int


def _masked(wave_N: np.ndarray, start_ms: int, end_ms: int, others: Sequence[tuple[int, int]]) -> np.ndarray:
    """``wave_N[start:end]`` with the spans of ``others`` (absolute ms) silenced, edges faded."""
    out_N = wave_N[start_ms * SAMPLES_PER_MS: end_ms * SAMPLES_PER_MS].astype(np.float32, copy=True)
    fade = FADE_MS * SAMPLES_PER_MS
    for s, e in others:
        a, b = max(s, start_ms) - start_ms, min(e, end_ms) - start_ms
        if b <= a:
            continue
        a, b = a * SAMPLES_PER_MS, b * SAMPLES_PER_MS
        out_N[a:b] = 0.0
        lo = max(0, a - fade)
        out_N[lo:a] *= np.linspace(1.0, 0.0, a - lo, dtype=np.float32)
        hi = min(out_N.size, b + fade)
        out_N[b:hi] *= np.linspace(0.0, 1.0, hi - b, dtype=np.float32)
    return out_N


def _inside(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    mid = (start + end) / 2
    return any(s <= mid < e for s, e in spans)


def remix_conversation(*, segments: Sequence[Turn], words: Sequence[tuple[str | None, str, int, int]],
                       audio: Mapping[int, np.ndarray], per_speaker: bool, timing: TimingModel,
                       mix: MixConfig, rng: np.random.Generator) -> RemixResult:
    """Re-time the turns of one real conversation into one stream per speaker.

    ``segments``: its diarized turns (``channel`` = index into ``audio``); ``words``: (speaker,
    text, start_ms, end_ms); ``audio``: channel → 16 kHz float32 wave; ``per_speaker``: whether
    each channel holds one speaker (else channel 0 is the mixture). ``ValueError`` when fewer
    than two speakers have turns.
    """
    speakers = sorted({t.speaker for t in segments})
    if len(speakers) < 2:
        raise ValueError(f"remix needs at least two speakers with turns, found {speakers or 'none'}")
    main, backchannels = split_backchannels(segments)
    words = sorted(words, key=lambda w: (w[2], w[3]))
    spans = {s: [(t.start_ms, t.end_ms) for t in segments if t.speaker == s] for s in speakers}
    dropped_words = 0
    placed: list[PlacedTurn] = []
    transitions: list[int] = []
    own_end: dict[str, int] = {}
    prev_new: PlacedTurn | None = None
    shift_of: list[tuple[Turn, int]] = []  # original main turn → its shift (new start - old start)

    def source_wave(turn: Turn) -> np.ndarray:
        wave_N = audio[turn.channel if per_speaker else 0]
        end = min(turn.end_ms, wave_N.size // SAMPLES_PER_MS)
        if per_speaker:
            return _masked(wave_N, turn.start_ms, end, [])
        others = [sp for s in speakers if s != turn.speaker for sp in spans[s]]
        return _masked(wave_N, turn.start_ms, end, others)

    for turn in main:
        if prev_new is None:
            new_start = int(timing.gap.sample(rng))
        else:
            offset = timing.sample_transition(rng)
            transitions.append(offset)
            new_start = start_after(prev_new, offset, own_end.get(turn.speaker, 0) + MIN_SELF_GAP_MS)
        wave_N = source_wave(turn)
        if wave_N.size == 0:
            continue
        shift = new_start - turn.start_ms
        new = PlacedTurn(speaker=turn.speaker, act="statement", pieces=[(new_start, wave_N)])
        others = [] if per_speaker else [sp for s in speakers if s != turn.speaker for sp in spans[s]]
        for spk, text, s, e in words:
            if s >= turn.start_ms and e <= turn.end_ms and spk in (turn.speaker, None):
                if others and _inside(s, e, others):
                    dropped_words += 1
                    continue
                new.words.append((text, s + shift, e + shift))
        placed.append(new)
        shift_of.append((turn, shift))
        own_end[turn.speaker] = max(own_end.get(turn.speaker, 0), new.end_ms)
        prev_new = new

    dropped_bc = 0
    for bc in backchannels:
        host = next(((t, sh) for t, sh in shift_of if t.speaker != bc.speaker
                     and t.start_ms <= bc.start_ms and bc.end_ms <= t.end_ms), None)
        if not per_speaker or host is None:
            dropped_bc += 1
            dropped_words += sum(1 for spk, _, s, e in words if spk == bc.speaker and bc.start_ms <= s < bc.end_ms)
            continue
        shift = host[1]
        new = PlacedTurn(speaker=bc.speaker, act="backchannel", pieces=[(bc.start_ms + shift, source_wave(bc))])
        new.words.extend((text, s + shift, e + shift) for spk, text, s, e in words
                         if spk == bc.speaker and s >= bc.start_ms and e <= bc.end_ms)
        placed.append(new)
    if not placed:
        raise ValueError("no turn of the conversation has audio to remix")
    layout = Layout(turns=tuple(placed), events=(), transitions_ms=tuple(transitions))
    roles: dict[str, str | None] = {s: None for s in speakers}
    # Remixed turns come from real speech: their interruptions are measured, like real records'.
    conv = assemble(layout, roles, mix, rng, scripted=False)
    return RemixResult(conversation=conv, dropped_backchannels=dropped_bc, dropped_words=dropped_words)
