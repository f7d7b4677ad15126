"""Forced alignment of sidecar transcripts with pocketsphinx 5 (the offline word-timing backend).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz (one
conversation, or one utterance's padded span).

For every sidecar utterance the transcript is aligned against the audio of the utterance's
span, padded by ``pad_ms`` on both sides (clipped to the media and, by default, to the audio
that no other utterance claims). The alignment is a finite-state grammar built per utterance:

    [edge garbage]* w1 w2 ... wk [edge garbage]*

with optional silences between all words (pocketsphinx inserts those), alternative
pronunciations from the dictionary, and a small "garbage" loop of single-phone words at both
edges that soaks up speech of other talkers, breaths and line noise in the padding, so that the
first and last words are not stretched over it. Words the dictionary does not know
(pocketsphinx 5 has no grapheme-to-phoneme model) are replaced in the grammar by a mandatory
placeholder garbage loop, so that their audio is not forced onto their neighbours, and then
placed by interpolation between the aligned neighbours (by character length). Aligned word
edges get a calibrated correction (``start_offset_ms``, ``end_offset_ms``) for the model's
habit of making words too wide.

Output words keep the transcript's surface text ("Hello?"), carry an acoustic confidence in
[0, 1] (None when interpolated), lie inside the media and inside the padded span, have
start_ms < end_ms and are monotone within an utterance. An utterance whose alignment fails
(the search does not reach the end of the grammar, even after a retry over the full padding)
has its words spread over its span in proportion to their character length, with a warning.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from microturn.pipelines.backends.base import SAMPLE_RATE, Turn, Utterance, Word
from microturn.pipelines.backends.configs import PocketsphinxAlignerConfig
from microturn.pipelines.backends.sidecar import SidecarTranscript, spread_words
from microturn.schemas.numbers import number_to_words

__all__ = [
    "PocketsphinxAligner",
    "PocketsphinxAlignerConfig",
    "normalise_token",
    "spread_words",
]

# pocketsphinx's English model computes one feature frame every 10 ms.
FRAME_MS = 10
_SAMPLES_PER_MS = SAMPLE_RATE // 1000

# Seg entries that are not transcript words: silence, fillers, sentence markers, null arcs.
_NON_WORD_PREFIXES = ("<", "[", "(NULL")
_EDGE_PREFIX = "+ge_"
_OOV_PREFIX = "+go_"
_ALT_PRON_RE = re.compile(r"\(\d+\)$")
# Shortest word the boundary offsets may leave: a 3-state HMM phone takes 3 frames.
_MIN_WORD_MS = 30
# Segment scores are in log base 1.0001, shifted right by 10 bits (pocketsphinx SENSCR_SHIFT).
_SENSCR_SCALE = 2.0**10


# --------------------------------------------------------------------------------------------
# text normalisation

# Characters stripped from both ends of a token before dictionary lookup.
_EDGE_PUNCT = "\"“”„«»‹›()[]{}<>.,;:!?¿¡…*_~=+|/\\#^`$§-–—♪"
_SPLIT_RE = re.compile(r"[-–—/]+")


def normalise_token(token: str, lookup: Callable[[str], bool]) -> list[str] | None:
    """Dictionary words for one whitespace-separated transcript token.

    Returns ``[]`` for a token without letters or digits (punctuation, not a word), a list of
    dictionary words when the token can be spoken with them, and None when it is out of
    vocabulary. ``lookup(word)`` tells whether the dictionary knows ``word``.

    The token is lower-cased, curly apostrophes become ``'``, surrounding punctuation is
    stripped (a trailing period is kept when the dictionary knows the dotted form, as in
    ``u.s.``); then, in turn: the word itself, the word without leading/trailing apostrophes
    (``goin'``), numbers spelled out (:func:`microturn.schemas.numbers.number_to_words`),
    hyphen/slash compounds split into parts, accents folded.
    """
    text = unicodedata.normalize("NFKC", token).lower().replace("’", "'").replace("‘", "'")
    if not any(ch.isalnum() for ch in text):
        return []
    core = text.strip(_EDGE_PUNCT)
    candidates = [core]
    if text.rstrip(_EDGE_PUNCT.replace(".", "")).endswith(".") and not core.endswith("."):
        candidates.insert(0, core + ".")
    candidates.append(core.strip("'"))
    for cand in candidates:
        if cand and lookup(cand):
            return [cand]
    bare = core.strip("'")
    spoken = number_to_words(bare)
    if spoken is not None and all(lookup(w) for w in spoken):
        return spoken
    parts = [p for p in _SPLIT_RE.split(bare) if p]
    if len(parts) > 1:
        out: list[str] = []
        for part in parts:
            sub = normalise_token(part, lookup)
            if sub is None:
                return None
            out.extend(sub)
        return out
    folded = unicodedata.normalize("NFKD", bare).encode("ascii", "ignore").decode("ascii")
    if folded and folded != bare and lookup(folded):
        return [folded]
    return None


# --------------------------------------------------------------------------------------------
# the aligner


@dataclass(slots=True)
class _Token:
    """A surface token of an utterance and the dictionary words that speak it."""

    text: str
    words: list[str] | None  # None: out of vocabulary


@dataclass(slots=True)
class _Unit:
    """One element of the grammar: a dictionary word, or a placeholder for an OOV run."""

    word: str | None  # None: OOV placeholder
    token_ids: list[int] = field(default_factory=list)


class PocketsphinxAligner:
    """Sidecar transcript + pocketsphinx forced alignment, behind the ``Transcriber`` interface.

    The pocketsphinx decoder is built once per instance, on first use (about 0.25 s), and
    reused for every utterance; an instance is therefore cheap to create and to ship to Beam
    workers (the decoder is not part of its pickled state). One instance aligns one utterance
    at a time (a lock serialises concurrent calls), each from the decoder's initial front-end
    state, so an utterance's words depend only on its own audio and text, never on which
    utterances or files the instance aligned before.
    """

    name = "sidecar+pocketsphinx"

    def __init__(self, config: PocketsphinxAlignerConfig | None = None) -> None:
        if config is not None and not isinstance(config, PocketsphinxAlignerConfig):
            raise TypeError(
                f"config must be a PocketsphinxAlignerConfig, got {type(config).__name__}"
            )
        self.config = config or PocketsphinxAlignerConfig()
        self._decoder = None
        self._lock = threading.Lock()
        self._known: dict[str, bool] = {}

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    # ---------------------------------------------------------------- decoder

    @property
    def decoder(self):
        """The pocketsphinx ``Decoder`` (built on first access)."""
        if self._decoder is None:
            self._decoder = self._build_decoder()
        return self._decoder

    def _build_decoder(self):
        from pocketsphinx import Decoder, get_model_path

        cfg = self.config
        kwargs: dict[str, object] = dict(
            hmm=cfg.hmm or get_model_path("en-us/en-us"),
            dict=cfg.dictionary or get_model_path("en-us/cmudict-en-us.dict"),
            lm=None,
            samprate=SAMPLE_RATE,
            loglevel=cfg.loglevel,
            # The lattice best-path pass can drop words of a complete alignment (measured: 4
            # of 81 words of the sample call lost); alignment needs only the Viterbi path.
            bestpath=False,
            # The phone-loop lookahead only helps n-gram search; for a grammar it costs time.
            pl_window=0,
            beam=cfg.beam,
            pbeam=cfg.beam,
            wbeam=cfg.word_beam,
        )
        kwargs.update(cfg.decoder_options)
        try:
            decoder = Decoder(**kwargs)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"could not build the pocketsphinx decoder (hmm={kwargs['hmm']!r}, "
                f"dict={kwargs['dict']!r}): {err}; check that pocketsphinx>=5 is installed "
                "with its model files"
            ) from err
        garbage = [
            (f"{prefix}{p.lower()}+", p)
            for prefix in (_EDGE_PREFIX, _OOV_PREFIX)
            for p in self.config.garbage_phones
        ]
        for k, (word, phone) in enumerate(garbage):
            try:
                wid = decoder.add_word(word, phone, update=k == len(garbage) - 1)
            except RuntimeError:
                wid = -1
            if wid is not None and wid < 0:
                raise ValueError(
                    f"garbage phone {phone!r} is not a phone of the acoustic model; "
                    "pick garbage_phones from the model's phone set (e.g. 'AH', 'S', 'N')"
                )
        self._edge_words = [w for w, _ in garbage[: len(self.config.garbage_phones)]]
        self._oov_words = [w for w, _ in garbage[len(self.config.garbage_phones) :]]
        # The cepstral means the model starts from, restored before every utterance (see
        # _fresh_state).
        self._initial_cmn = decoder.get_cmn()
        return decoder

    def _fresh_state(self) -> None:
        """Forget everything earlier utterances taught the front end.

        pocketsphinx adapts its noise-removal estimate across utterances (and, with
        ``cmn=live``, its cepstral means); reusing one decoder then made a word's times depend on
        which files it had aligned before: the same sample-call utterance gave "didn't" ending
        at 9131 ms on a fresh decoder and at 9111 ms after the rest of the call.
        ``reinit_feat`` rebuilds the front end (noise statistics included; 0.05 ms) and
        ``set_cmn`` restores the means, so every utterance is aligned as if it were the first
        (the sample call keeps 81 of 81 words inside their segments).
        """
        self.decoder.reinit_feat()
        self.decoder.set_cmn(self._initial_cmn)

    def _knows(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            known = self.decoder.lookup_word(word) is not None
            if len(self._known) < 200_000:
                self._known[word] = known
        return known

    # ---------------------------------------------------------------- public API

    def __call__(
        self, wave_N: np.ndarray, *, utterances: list[Utterance] | None, turns: list[Turn]
    ) -> list[Word]:
        """Timed words of ``utterances`` aligned against ``wave_N`` (16 kHz mono float32)."""
        if utterances is None:
            raise ValueError(
                "the sidecar+pocketsphinx backend aligns a transcript but none was found: put a "
                ".json/.stm/.vtt/.srt sidecar next to the media (same stem) or choose the "
                "whisperx transcription backend"
            )
        if not all(isinstance(u, Utterance) for u in utterances):
            raise TypeError("utterances must be a list of Utterance")
        pcm_N = _to_pcm16(wave_N)
        duration_ms = len(pcm_N) // _SAMPLES_PER_MS
        spans = _padded_spans(
            utterances, duration_ms, self.config.pad_ms, self.config.pad_into_neighbours
        )
        words: list[Word] = []
        with self._lock:
            for utt, span in zip(utterances, spans, strict=True):
                words.extend(self._align_one(pcm_N, utt, span, duration_ms))
        return self._finish(words, turns, utterances)

    def align_transcript(
        self, wave_N: np.ndarray, transcript: SidecarTranscript, *, turns: list[Turn]
    ) -> list[Word]:
        """Words of a parsed sidecar: its own word times when it has them, else aligned ones.

        Sidecar word times are clipped to the media; words starting after its end are dropped
        with a warning.
        """
        if transcript.words is None:
            return self(wave_N, utterances=transcript.utterances, turns=turns)
        duration_ms = len(np.asarray(wave_N)) // _SAMPLES_PER_MS
        words = [
            replace(w, end_ms=min(w.end_ms, duration_ms))
            for w in transcript.words
            if w.start_ms < duration_ms
        ]
        if len(words) < len(transcript.words):
            warnings.warn(
                f"dropped {len(transcript.words) - len(words)} sidecar word(s) that start after "
                f"the media end ({duration_ms} ms)",
                stacklevel=2,
            )
        return self._finish(words, turns, transcript.utterances)

    def _finish(
        self, words: list[Word], turns: list[Turn], utterances: list[Utterance]
    ) -> list[Word]:
        if self.config.assign_speakers and turns:
            from microturn.pipelines.backends.assign import assign_speakers

            return assign_speakers(words, turns, utterances)
        return words

    # ---------------------------------------------------------------- one utterance

    def _align_one(
        self,
        pcm_N: np.ndarray,
        utt: Utterance,
        span: tuple[int, int, int, int],
        duration_ms: int,
    ) -> list[Word]:
        """Words of one utterance; ``span`` = (limited lo, limited hi, full lo, full hi)."""
        if utt.start_ms >= duration_ms:
            warnings.warn(
                f"utterance at {utt.start_ms} ms starts after the media end ({duration_ms} ms); "
                "skipped it (clip the sidecar with clip_to_media first)",
                stacklevel=3,
            )
            return []
        tokens = [
            _Token(t, normalise_token(t, self._knows)) for t in utt.text.split()
        ]
        tokens = [t for t in tokens if t.words != []]
        if not tokens:
            return []
        units = _units(tokens)
        attempts = [span[:2]] if span[:2] == span[2:] else [span[:2], span[2:]]
        if any(u.word is not None for u in units):
            for lo, hi in attempts:
                words = self._decode(pcm_N, tokens, units, lo, hi, utt.speaker)
                if words is not None:
                    return words
            why = "pocketsphinx did not reach the end of the transcript"
        else:
            why = "none of its words is in the pronunciation dictionary"
        lo = utt.start_ms
        hi = max(min(utt.end_ms, duration_ms), lo + 1)
        warnings.warn(
            f"alignment of the utterance at {utt.start_ms}-{utt.end_ms} ms failed ({why}); "
            f"spread its {len(tokens)} word(s) over the span by character length (score None): "
            f"{utt.text[:60]!r}",
            stacklevel=3,
        )
        return [
            Word(t.text, s, e, None, utt.speaker)
            for t, (s, e) in zip(tokens, spread_words([t.text for t in tokens], lo, hi), strict=True)
        ]

    def _decode(
        self,
        pcm_N: np.ndarray,
        tokens: list[_Token],
        units: list[_Unit],
        lo_ms: int,
        hi_ms: int,
        speaker: str | None,
    ) -> list[Word] | None:
        """Align ``units`` against pcm[lo_ms, hi_ms); None when the search fails."""
        decoder = self.decoder
        fsg = decoder.create_fsg(
            "align", 0, _final_state(units), _transitions(
                units, self._edge_words, self._oov_words, self.config.edge_garbage_prob
            )
        )
        decoder.add_fsg("align", fsg)
        decoder.activate_search("align")
        segment_N = pcm_N[lo_ms * _SAMPLES_PER_MS : hi_ms * _SAMPLES_PER_MS]
        self._fresh_state()
        try:
            decoder.start_utt()
            try:
                # full_utt: the whole span is one utterance, so cepstral mean normalisation
                # uses its own mean (batch CMN) rather than a running estimate.
                decoder.process_raw(segment_N.tobytes(), full_utt=True)
            finally:
                decoder.end_utt()
        except RuntimeError:
            return None
        segs = decoder.seg()
        if segs is None:
            return None
        observed: list[tuple[str | None, int, int, float]] = []
        for seg in segs:
            base = _ALT_PRON_RE.sub("", seg.word)
            if base.startswith(_NON_WORD_PREFIXES) or base.startswith(_EDGE_PREFIX):
                continue
            if base.startswith(_OOV_PREFIX):
                if observed and observed[-1][0] is None:
                    _, sf, _, asc = observed[-1]
                    observed[-1] = (None, sf, seg.end_frame, asc)
                else:
                    observed.append((None, seg.start_frame, seg.end_frame, 0.0))
                continue
            observed.append((base, seg.start_frame, seg.end_frame, seg.ascore))
        if [o[0] for o in observed] != [u.word for u in units]:
            return None
        return self._to_words(tokens, units, observed, lo_ms, hi_ms, speaker)

    def _shift(self, start: int, end: int) -> tuple[int, int]:
        """Apply the calibrated boundary offsets, keeping at least min(30 ms, length)."""
        new_start, new_end = start + self.config.start_offset_ms, end + self.config.end_offset_ms
        keep = min(_MIN_WORD_MS, end - start)
        if new_end - new_start < keep:
            centre = (new_start + new_end) // 2
            new_start = min(max(centre - keep // 2, start), end - keep)
            new_end = new_start + keep
        return new_start, new_end

    def _confidence(self, llr_per_frame: float) -> float:
        """Logistic map of the mean per-frame log-likelihood ratio (nats) to [0, 1]."""
        if llr_per_frame == -math.inf:
            return 0.0
        z = (llr_per_frame - self.config.score_midpoint) / self.config.score_width
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def _to_words(
        self,
        tokens: list[_Token],
        units: list[_Unit],
        observed: list[tuple[str | None, int, int, float]],
        lo_ms: int,
        hi_ms: int,
        speaker: str | None,
    ) -> list[Word]:
        # Frame times of each token: first frame of its first word, last frame of its last.
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        loglik: dict[int, float] = {}
        n_frames: dict[int, int] = {}
        oov_spans: list[tuple[list[int], int, int]] = []
        for unit, (_, sf, ef, ascore) in zip(units, observed, strict=True):
            if unit.word is None:
                oov_spans.append((unit.token_ids, sf, ef))
                continue
            tid = unit.token_ids[0]
            first.setdefault(tid, sf)
            last[tid] = ef
            # ascore is exp() of the word's acoustic score relative to the best senone of every
            # frame, in pocketsphinx's scaled log domain: log base 1.0001, right-shifted by
            # SENSCR_SHIFT = 10 bits. ln(ascore) * 2**10 is therefore the log-likelihood ratio
            # in nats. It underflows to 0 only for absurdly bad words.
            llr = math.log(ascore) * _SENSCR_SCALE if ascore > 0 else -math.inf
            loglik[tid] = loglik.get(tid, 0.0) + llr
            n_frames[tid] = n_frames.get(tid, 0) + (ef - sf + 1)
        timed: dict[int, tuple[int, int, float | None]] = {}
        for tid in first:
            start, end = self._shift(
                lo_ms + first[tid] * FRAME_MS, lo_ms + (last[tid] + 1) * FRAME_MS
            )
            timed[tid] = (start, end, self._confidence(loglik[tid] / max(n_frames[tid], 1)))
        for token_ids, sf, ef in oov_spans:
            # Interpolate between the aligned neighbours: the run's audio is the placeholder
            # loop plus any silence the search put around it (a silence loop is cheaper than
            # garbage, so on espeak speech the placeholder took only 110 ms of a 560 ms word).
            before, after = token_ids[0] - 1, token_ids[-1] + 1
            start = timed[before][1] if before in timed else lo_ms + sf * FRAME_MS
            end = timed[after][0] if after in timed else lo_ms + (ef + 1) * FRAME_MS
            end = max(end, start + len(token_ids))
            for tid, (s, e) in zip(
                token_ids, spread_words([tokens[t].text for t in token_ids], start, end), strict=True
            ):
                timed[tid] = (s, e, None)
        out: list[Word] = []
        prev_end = lo_ms
        for tid, token in enumerate(tokens):
            s, e, score = timed[tid]
            # Keep inside the padded span and monotone; frames are 10 ms, so a valid alignment
            # never needs this, but rounding in the interpolation can.
            s = min(max(s, lo_ms, prev_end), hi_ms - 1)
            e = min(max(e, s + 1), hi_ms)
            out.append(Word(token.text, s, e, score, speaker))
            prev_end = e
        return out


# --------------------------------------------------------------------------------------------
# helpers


def _to_pcm16(wave_N: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] to little-endian int16 samples, as pocketsphinx wants them."""
    wave_N = np.asarray(wave_N)
    if wave_N.ndim != 1:
        raise ValueError(
            f"wave_N must be mono audio of shape [N], got shape {wave_N.shape}; mix or pick a "
            "channel first"
        )
    if not np.issubdtype(wave_N.dtype, np.floating):
        raise TypeError(
            f"wave_N must be float audio in [-1, 1] (16 kHz), got dtype {wave_N.dtype}"
        )
    return (np.clip(wave_N, -1.0, 1.0) * 32767.0).astype("<i2")


def _units(tokens: list[_Token]) -> list[_Unit]:
    """Grammar units: one per dictionary word; one placeholder per run of OOV tokens."""
    units: list[_Unit] = []
    for tid, token in enumerate(tokens):
        if token.words is None:
            if units and units[-1].word is None:
                units[-1].token_ids.append(tid)
            else:
                units.append(_Unit(None, [tid]))
        else:
            units.extend(_Unit(w, [tid]) for w in token.words)
    return units


def _final_state(units: list[_Unit]) -> int:
    return len(units) + 2


def _transitions(
    units: list[_Unit], edge_words: list[str], oov_words: list[str], edge_prob: float
) -> list[tuple]:
    """Transitions of the alignment grammar.

    States: 0 (leading garbage loop) -> 1 -> ... -> len(units)+1 (trailing garbage loop) ->
    final. A placeholder unit enters a fresh state through one mandatory garbage word and may
    loop there, so every OOV run takes at least one phone (30 ms) of audio.
    """
    out: list[tuple] = []
    n = len(units)
    for w in edge_words:
        out.append((0, 0, edge_prob / len(edge_words), w))
        out.append((n + 1, n + 1, edge_prob / len(edge_words), w))
    out.append((0, 1, 1.0 - edge_prob))
    for k, unit in enumerate(units, start=1):
        if unit.word is not None:
            out.append((k, k + 1, 1.0, unit.word))
        else:
            for w in oov_words:
                out.append((k, k + 1, 1.0 / len(oov_words), w))
                out.append((k + 1, k + 1, 0.5 / len(oov_words), w))
    out.append((n + 1, n + 2, 1.0 - edge_prob))
    return out


def _padded_spans(
    utterances: list[Utterance], duration_ms: int, pad_ms: int, into_neighbours: bool
) -> list[tuple[int, int, int, int]]:
    """Per utterance: (lo, hi) limited by neighbours, then (lo, hi) with the full padding.

    Padding on the left stops at the latest end of the utterances that start before this one
    (never moving past its own start); on the right at the earliest start of those that end
    after it. Both are clipped to [0, duration_ms].
    """
    full = [
        (max(0, u.start_ms - pad_ms), min(duration_ms, max(u.end_ms + pad_ms, u.start_ms + 1)))
        for u in utterances
    ]
    if into_neighbours or len(utterances) < 2:
        return [(lo, hi, lo, hi) for lo, hi in full]
    by_start = sorted(utterances, key=lambda u: u.start_ms)
    starts = [u.start_ms for u in by_start]
    prefix_max_end = list(np.maximum.accumulate([u.end_ms for u in by_start]))
    by_end = sorted(utterances, key=lambda u: u.end_ms)
    ends = [u.end_ms for u in by_end]
    suffix_min_start = list(np.minimum.accumulate([u.start_ms for u in by_end][::-1]))[::-1]
    out = []
    for u, (lo, hi) in zip(utterances, full, strict=True):
        k = bisect_left(starts, u.start_ms)  # utterances starting strictly before u
        lim_lo = lo if k == 0 else max(lo, min(int(prefix_max_end[k - 1]), u.start_ms))
        j = bisect_right(ends, u.end_ms)  # utterances ending strictly after u
        lim_hi = hi if j == len(ends) else min(hi, max(int(suffix_min_start[j]), u.end_ms))
        lim_hi = max(lim_hi, min(lim_lo + 1, duration_ms))
        out.append((lim_lo, lim_hi, lo, hi))
    return out
