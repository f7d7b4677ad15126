"""Word-to-speaker assignment: give each timed word the speaker of the diarization turn it
overlaps most.

Shape legend (suffixes on array names):
    W  words of one chunk (at most ``_CHUNK`` at a time)
    T  turns
    U  utterances
    K  candidate turns of one word

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

# Words per vectorised block: a [1024, T] float64 matrix stays small (8 MB at T = 1000).
_CHUNK = 1024


def _utterance_speakers(words: list[Word], utterances: list[Utterance] | None) -> list[str | None]:
    """The speaker label of each word's utterance (most overlap, else nearest)."""
    if utterances is None:
        return [w.speaker for w in words]
    if not utterances:
        return [None] * len(words)
    u_start_U = np.array([u.start_ms for u in utterances], dtype=np.float64)
    u_end_U = np.array([u.end_ms for u in utterances], dtype=np.float64)
    labels = [u.speaker for u in utterances]
    out: list[str | None] = []
    for lo in range(0, len(words), _CHUNK):
        chunk = words[lo : lo + _CHUNK]
        ws_W = np.array([w.start_ms for w in chunk], dtype=np.float64)[:, None]
        we_W = np.array([max(w.end_ms, w.start_ms + 1) for w in chunk], dtype=np.float64)[:, None]
        inter_WU = np.minimum(we_W, u_end_U) - np.maximum(ws_W, u_start_U)
        # Positive: overlap in ms; negative: minus the gap, so argmax picks most overlap, else
        # the nearest utterance.
        out.extend(labels[k] for k in np.argmax(inter_WU, axis=1))
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
        return [replace(w, speaker=s) for w, s in zip(words, utt_speakers)]

    t_start_T = np.array([t.start_ms for t in good], dtype=np.float64)
    t_end_T = np.array([t.end_ms for t in good], dtype=np.float64)
    t_centre_T = (t_start_T + t_end_T) / 2
    t_speaker = [t.speaker for t in good]
    t_speaker_T = np.array(t_speaker, dtype=object)

    out: list[Word] = []
    for lo in range(0, len(words), _CHUNK):
        chunk = words[lo : lo + _CHUNK]
        ws_W = np.array([w.start_ms for w in chunk], dtype=np.float64)
        # A zero-length word is treated as 1 ms long so that it can overlap a turn.
        we_W = np.array([max(w.end_ms, w.start_ms + 1) for w in chunk], dtype=np.float64)
        inter_WT = np.minimum(we_W[:, None], t_end_T) - np.maximum(ws_W[:, None], t_start_T)
        centre_dist_WT = np.abs((ws_W + we_W)[:, None] / 2 - t_centre_T)
        best_W = inter_WT.max(axis=1)
        for k, word in enumerate(chunk):
            utt_speaker = utt_speakers[lo + k]
            # Positive: the longest overlap. Otherwise inter is minus the gap, so the maximum
            # is the nearest turn, used when it is close enough.
            if best_W[k] <= 0 and -best_W[k] > NEAREST_TURN_MS:
                out.append(replace(word, speaker=utt_speaker))
                continue
            cand_K = np.nonzero(inter_WT[k] == best_W[k])[0]
            if len(cand_K) > 1 and utt_speaker is not None:
                same_K = cand_K[t_speaker_T[cand_K] == utt_speaker]
                if len(same_K):
                    cand_K = same_K
            if len(cand_K) > 1:
                dist_K = centre_dist_WT[k, cand_K]
                cand_K = cand_K[dist_K == dist_K.min()]
            # Earliest turn among those left, so that the result never depends on input order.
            pick = cand_K[np.argmin(t_start_T[cand_K])]
            out.append(replace(word, speaker=t_speaker[pick]))
    return out
