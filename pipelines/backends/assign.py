"""Word-to-speaker assignment: give each timed word the speaker of the diarization turn it
overlaps most.

Arrays here run over words (at most ``_CHUNK`` at a time), turns, utterances and a word's candidate
turns, none of which has a letter in :mod:`microturn.schemas.legend`; they are named in words, and
2-D ones say their axes where they are made.

Rules, in order, for one word:

1. Among the turns it overlaps, the one with the longest intersection (ms) wins.
2. Ties on intersection go to a tied turn whose speaker equals the word's utterance speaker
   (the sidecar label), then to the tied turn whose centre is nearest the word's centre, then
   to the earliest such turn.
3. A word that overlaps no turn takes the speaker of the nearest turn (gap between the
   intervals) when that gap is at most ``NEAREST_TURN_MS`` = 500 ms (same tie-breaks), else
   its utterance's speaker, else None.

A word's utterance is the utterance it overlaps most, else the nearest one; without
``utterances`` the word's current ``speaker`` (the aligner copies the sidecar label there)
stands in for the utterance speaker. Applying the function twice gives the same result.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from microturn.pipelines.backends.base import Turn, Utterance, Word

__all__ = ["NEAREST_TURN_MS", "assign_speakers"]

# A word outside every turn still belongs to a turn this close: diarization turn edges are
# typically 100-300 ms off word edges, and 500 ms is shorter than a usual inter-turn gap.
NEAREST_TURN_MS = 500

# Words per vectorised block: a [1024 words, turns] float64 matrix stays small (8 MB at 1000 turns).
_CHUNK = 1024


def _utterance_speakers(words: list[Word], utterances: list[Utterance] | None) -> list[str | None]:
    """The speaker label of each word's utterance (most overlap, else nearest)."""
    if utterances is None:
        return [w.speaker for w in words]
    if not utterances:
        return [None] * len(words)
    utt_start_ms = np.array([u.start_ms for u in utterances], dtype=np.float64)
    utt_end_ms = np.array([u.end_ms for u in utterances], dtype=np.float64)
    labels = [u.speaker for u in utterances]
    out: list[str | None] = []
    for lo in range(0, len(words), _CHUNK):
        chunk = words[lo : lo + _CHUNK]
        word_start_ms = np.array([w.start_ms for w in chunk], dtype=np.float64)[:, None]
        word_end_ms = np.array([max(w.end_ms, w.start_ms + 1) for w in chunk], dtype=np.float64)[:, None]
        overlap_ms = np.minimum(word_end_ms, utt_end_ms) - np.maximum(word_start_ms, utt_start_ms)  # [word, utt]
        # Positive: overlap in ms; negative: minus the gap, so argmax picks most overlap, else
        # the nearest utterance.
        out.extend(labels[k] for k in np.argmax(overlap_ms, axis=1))
    return out


def assign_speakers(
    words: list[Word], turns: list[Turn], utterances: list[Utterance] | None = None
) -> list[Word]:
    """Copies of ``words`` (same order) with ``speaker`` set from the diarization ``turns``.

    See the module docstring for the rules. Turns with end_ms <= start_ms are ignored with a
    warning. With no usable turn, words take their utterance's speaker.
    """
    if not isinstance(words, list) or not all(isinstance(w, Word) for w in words):
        raise TypeError("words must be a list of Word")
    if not isinstance(turns, list) or not all(isinstance(t, Turn) for t in turns):
        raise TypeError("turns must be a list of Turn")
    if not words:
        return []
    good = [t for t in turns if t.end_ms > t.start_ms]
    if len(good) < len(turns):
        warnings.warn(
            f"ignored {len(turns) - len(good)} diarization turn(s) with end_ms <= start_ms",
            stacklevel=2,
        )
    utt_speakers = _utterance_speakers(words, utterances)
    if not good:
        return [replace(w, speaker=s) for w, s in zip(words, utt_speakers, strict=True)]

    turn_start_ms = np.array([t.start_ms for t in good], dtype=np.float64)
    turn_end_ms = np.array([t.end_ms for t in good], dtype=np.float64)
    turn_centre_ms = (turn_start_ms + turn_end_ms) / 2
    t_speaker = [t.speaker for t in good]
    turn_speakers = np.array(t_speaker, dtype=object)

    out: list[Word] = []
    for lo in range(0, len(words), _CHUNK):
        chunk = words[lo : lo + _CHUNK]
        word_start_ms = np.array([w.start_ms for w in chunk], dtype=np.float64)
        # A zero-length word is treated as 1 ms long so that it can overlap a turn.
        word_end_ms = np.array([max(w.end_ms, w.start_ms + 1) for w in chunk], dtype=np.float64)
        # [word, turn]
        overlap_ms = np.minimum(word_end_ms[:, None], turn_end_ms) - np.maximum(word_start_ms[:, None], turn_start_ms)
        centre_dist_ms = np.abs((word_start_ms + word_end_ms)[:, None] / 2 - turn_centre_ms)
        best_ms = overlap_ms.max(axis=1)
        for k, word in enumerate(chunk):
            utt_speaker = utt_speakers[lo + k]
            # Positive: the longest overlap. Otherwise inter is minus the gap, so the maximum
            # is the nearest turn, used when it is close enough.
            if best_ms[k] <= 0 and -best_ms[k] > NEAREST_TURN_MS:
                out.append(replace(word, speaker=utt_speaker))
                continue
            candidates = np.nonzero(overlap_ms[k] == best_ms[k])[0]
            if len(candidates) > 1 and utt_speaker is not None:
                same_speaker = candidates[turn_speakers[candidates] == utt_speaker]
                if len(same_speaker):
                    candidates = same_speaker
            if len(candidates) > 1:
                dist_ms = centre_dist_ms[k, candidates]
                candidates = candidates[dist_ms == dist_ms.min()]
            # Earliest turn among those left, so that the result never depends on input order.
            pick = candidates[np.argmin(turn_start_ms[candidates])]
            out.append(replace(word, speaker=t_speaker[pick]))
    return out
