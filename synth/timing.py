"""Timing model of turn-taking: parametric duration distributions, literature defaults, and a
fit on ingested conversations.

The model says how long the silence (gap) or the overlap is when the floor changes hands, how
long a speaker pauses inside a turn, how fast an interrupted speaker yields, and when and how
often listeners backchannel. :func:`fit` measures real ``segments`` (and ``words``) rows with
the record contract's own definitions, :func:`microturn.schemas.turns.turn_stats` and
:func:`microturn.schemas.turns.turn_events`, so that what is fitted here and what is later
measured on synthesized dialogues are the same quantities.

All durations are integer milliseconds.

Array legend: ``_N`` = one entry per value, draw or observation.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
from scipy import stats

from microturn.schemas.turns import Turn, turn_events, turn_stats

# Parameters of each family, in the order of ``Duration.params``:
# - lognormal: (median_ms, sigma): log(duration) ~ Normal(log(median_ms), sigma).
# - gamma:     (shape, scale_ms):  mean = shape * scale_ms.
# - weibull:   (shape, scale_ms):  P(duration > x) = exp(-(x / scale_ms) ** shape).
FAMILIES: dict[str, tuple[str, str]] = {
    "lognormal": ("median_ms", "sigma"),
    "gamma": ("shape", "scale_ms"),
    "weibull": ("shape", "scale_ms"),
}

# Two-parameter MLE needs some data: below 10 values a fit follows the noise, not the shape.
MIN_FIT_VALUES = 10

# A silence inside one speaker's speech counts as a pause from 150 ms on: stop closures and
# other articulation gaps between words last up to ~100-120 ms, while Campione & Veronis
# (2002, Speech Prosody, 5 languages) find a class of "brief" pauses below 200 ms that the
# classic 250 ms cut-off (Goldman-Eisler 1968) would miss.
PAUSE_MIN_MS = 150


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def _scipy_dist(family: str, params: tuple[float, ...]):
    a, b = params
    if family == "lognormal":
        return stats.lognorm(s=b, scale=a)
    if family == "gamma":
        return stats.gamma(a, scale=b)
    return stats.weibull_min(a, scale=b)


@dataclass(frozen=True, kw_only=True)
class Duration:
    """A distribution of positive durations in ms.

    ``family`` is one of :data:`FAMILIES`; ``params`` are its two parameters in the order given
    there: lognormal ``(median_ms, sigma)``, gamma ``(shape, scale_ms)``, weibull
    ``(shape, scale_ms)``. Samples are rounded to whole ms and are at least 1 ms.
    """

    family: str
    params: tuple[float, ...]

    def __post_init__(self):
        if not isinstance(self.family, str):
            raise TypeError(f"family must be a string, got {type(self.family).__name__}")
        if self.family not in FAMILIES:
            raise ValueError(f"unknown duration family {self.family!r}; known: {', '.join(FAMILIES)}")
        if isinstance(self.params, (str, bytes)) or not isinstance(self.params, Iterable):
            raise TypeError(f"params must be a sequence of numbers, got {type(self.params).__name__}")
        try:
            params = tuple(float(p) for p in self.params)
        except (TypeError, ValueError):
            raise TypeError(f"params must be numbers, got {self.params!r}") from None
        names = FAMILIES[self.family]
        if len(params) != len(names):
            raise ValueError(f"{self.family} takes {len(names)} params {names}, got {len(params)}: {params}")
        if not all(math.isfinite(p) and p > 0 for p in params):
            raise ValueError(f"{self.family} params {names} must be finite and positive, got {params}")
        object.__setattr__(self, "params", params)

    def sample(self, rng: np.random.Generator, size: int | None = None) -> int | np.ndarray:
        """Draw durations: an ``int`` when ``size`` is None, else an int64 array of ``size``."""
        _check_rng(rng)
        a, b = self.params
        if self.family == "lognormal":
            draws_N = rng.lognormal(mean=math.log(a), sigma=b, size=size)
        elif self.family == "gamma":
            draws_N = rng.gamma(a, b, size=size)
        else:
            draws_N = b * rng.weibull(a, size=size)
        ms_N = np.maximum(1, np.rint(draws_N)).astype(np.int64)
        return int(ms_N) if size is None else ms_N

    def cdf(self, x_ms) -> np.ndarray:
        """P(duration <= x_ms) of the continuous distribution (before rounding to whole ms)."""
        return np.asarray(_scipy_dist(self.family, self.params).cdf(x_ms), dtype=np.float64)

    def log_likelihood(self, values_ms) -> float:
        """Sum of the log densities of ``values_ms`` (the criterion :meth:`fit` compares)."""
        values_N = np.asarray(values_ms, dtype=np.float64)
        return float(np.sum(_scipy_dist(self.family, self.params).logpdf(values_N)))

    @property
    def median_ms(self) -> float:
        a, b = self.params
        if self.family == "lognormal":
            return a
        if self.family == "weibull":
            return b * math.log(2.0) ** (1.0 / a)
        return float(_scipy_dist(self.family, self.params).median())

    def to_dict(self) -> dict:
        """JSON-able form: ``{"family": str, "params": [float, ...]}``."""
        return {"family": self.family, "params": list(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Duration:
        """Inverse of :meth:`to_dict`; ``ValueError`` on unknown or missing keys or families."""
        _check_keys(d, {"family", "params"}, "Duration")
        return cls(family=d["family"], params=d["params"])

    @classmethod
    def fit(cls, values_ms, *, families: Sequence[str] = tuple(FAMILIES)) -> Duration:
        """Maximum-likelihood fit of each family in ``families``; returns the one with the
        highest log-likelihood (all families have two parameters, so this is also the best by
        AIC). ``ValueError`` on fewer than :data:`MIN_FIT_VALUES` values, on non-positive or
        non-finite values, and on values that are all equal."""
        values_N = np.asarray(values_ms, dtype=np.float64).ravel()
        if values_N.size < MIN_FIT_VALUES:
            raise ValueError(f"fitting a duration needs at least {MIN_FIT_VALUES} values, "
                             f"got {values_N.size}")
        bad = int(np.sum(~np.isfinite(values_N) | (values_N <= 0)))
        if bad:
            raise ValueError(f"durations must be finite and positive: {bad} of the {values_N.size} "
                             f"values given are not (drop zeros and negatives before fitting)")
        if np.all(values_N == values_N[0]):
            raise ValueError(f"all {values_N.size} values equal {values_N[0]:g} ms; a distribution "
                             f"cannot be fitted without spread")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"families must be a non-empty choice of {', '.join(FAMILIES)}, got {families}")
        candidates = [cls(family=f, params=_mle(f, values_N)) for f in families]
        return max(candidates, key=lambda d: d.log_likelihood(values_N))


def _mle(family: str, values_N: np.ndarray) -> tuple[float, float]:
    if family == "lognormal":
        logs_N = np.log(values_N)
        return float(np.exp(logs_N.mean())), float(logs_N.std())
    with warnings.catch_warnings():
        # The optimiser may probe invalid shapes on its way to the optimum; the result is checked.
        warnings.simplefilter("ignore", RuntimeWarning)
        if family == "gamma":
            shape, _, scale = stats.gamma.fit(values_N, floc=0)
        else:
            shape, _, scale = stats.weibull_min.fit(values_N, floc=0)
    return float(shape), float(scale)


def _check_keys(d, expected: set[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{what}.from_dict takes a mapping, got {type(d).__name__}")
    unknown, missing = set(d) - expected, expected - set(d)
    if unknown or missing:
        raise ValueError(f"{what}.from_dict: unknown keys {sorted(unknown)}, missing keys "
                         f"{sorted(missing)}; expected exactly {sorted(expected)}")


@dataclass(frozen=True, kw_only=True)
class TimingModel:
    """Turn-taking timing of two-or-more-party dialogue.

    - gap: silence at a change of speaker (next start - previous end > 0).
    - overlap_prob: share of speaker changes where the next turn starts before the previous ends.
    - overlap: magnitude of that overlap (> 0).
    - pause: silence inside one speaker's turn, at a phrase or sentence break.
    - reaction: at an interruption, from the interrupter's onset until the interrupted speaker
      stops (a synthesizer then snaps the stop to the next word boundary).
    - backchannel_delay: from the start of the speaker's pause until the listener's
      backchannel starts.
    - backchannel_rate: listener backchannels per minute of the other speaker's main-turn speech.
    """

    gap: Duration
    overlap_prob: float
    overlap: Duration
    pause: Duration
    reaction: Duration
    backchannel_delay: Duration
    backchannel_rate: float

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("overlap_prob", "backchannel_rate"):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                    raise TypeError(f"{f.name} must be a number, got {type(value).__name__}")
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, Duration):
                raise TypeError(f"{f.name} must be a Duration, got {type(value).__name__}")
        if not 0.0 <= self.overlap_prob <= 1.0:
            raise ValueError(f"overlap_prob must lie in [0, 1], got {self.overlap_prob}")
        if not (math.isfinite(self.backchannel_rate) and self.backchannel_rate >= 0):
            raise ValueError(f"backchannel_rate must be finite and >= 0 per minute, "
                             f"got {self.backchannel_rate}")

    def sample_transitions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` offsets (int64 ms) from the end of the previous turn to the start of the next:
        a gap (> 0) or, with probability ``overlap_prob``, minus an overlap (< 0).

        Never 0: both durations are at least 1 ms, so exact latching comes out as a 1 ms gap;
        the sign alone tells a gap from an overlap."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        _check_rng(rng)
        is_overlap_N = rng.random(n) < self.overlap_prob
        gaps_N = self.gap.sample(rng, n)
        overlaps_N = self.overlap.sample(rng, n)
        return np.where(is_overlap_N, -overlaps_N, gaps_N).astype(np.int64)

    def sample_transition(self, rng: np.random.Generator) -> int:
        """One offset as in :meth:`sample_transitions`."""
        return int(self.sample_transitions(rng, 1)[0])

    def sample_pause(self, rng: np.random.Generator) -> int:
        return self.pause.sample(rng)

    def sample_reaction(self, rng: np.random.Generator) -> int:
        return self.reaction.sample(rng)

    def sample_backchannel_delay(self, rng: np.random.Generator) -> int:
        return self.backchannel_delay.sample(rng)

    @property
    def median_gap_ms(self) -> float:
        return self.gap.median_ms

    def to_dict(self) -> dict:
        """JSON-able form: one key per field, durations as :meth:`Duration.to_dict`."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Duration) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> TimingModel:
        """Inverse of :meth:`to_dict`; ``ValueError`` on unknown or missing keys."""
        _check_keys(d, {f.name for f in fields(cls)}, "TimingModel")
        return cls(**{k: (v if k in ("overlap_prob", "backchannel_rate") else Duration.from_dict(v))
                      for k, v in d.items()})


DEFAULT_TIMING = TimingModel(
    # Stivers et al. 2009 (PNAS 106:10587): across 10 languages the modal response offset lies
    # at 0-200 ms; Levinson & Torreira 2015 (Front. Psychol. 6:731) review gaps "of the order of
    # 200 ms"; Heldner & Edlund 2010 (J. Phonetics 38:555) measure right-skewed gap
    # distributions in the Spoken Dutch Corpus, Switchboard and Map Task. Log-normal with a
    # 230 ms median and sigma 0.7: mode 140 ms, mean 290 ms, 90% below 570 ms.
    gap=Duration(family="lognormal", params=(230.0, 0.7)),
    # Heldner & Edlund 2010: overlaps make up roughly 30-40% of speaker changes across their
    # three corpora; 0.35 is the middle of that range.
    overlap_prob=0.35,
    # Laskowski, Heldner & Edlund 2012 (Interspeech): overlap duration is approximately
    # log-normal; Weingartova et al. 2014 (Speech Prosody, Czech) find a median near 360 ms for
    # overlaps and gaps alike. Median 300 ms, sigma 0.8.
    overlap=Duration(family="lognormal", params=(300.0, 0.8)),
    # Campione & Veronis 2002 (Speech Prosody, 5 languages): silent pauses fall in three
    # classes, brief < 200 ms, medium 200-1000 ms (the bulk), long > 1000 ms, each about
    # log-normal. Median 450 ms, sigma 0.6 (90% within 170-1210 ms).
    pause=Duration(family="lognormal", params=(450.0, 0.6)),
    # Schegloff 2000 (Language in Society 29:1): overlapping talk is mostly resolved within one
    # to two syllables (beats) of the overlap onset; at ~200 ms a syllable that is ~200-600 ms.
    # Median 400 ms, sigma 0.4 (90% within 210-770 ms).
    reaction=Duration(family="lognormal", params=(400.0, 0.4)),
    # Ward & Tsukahara 2000 (J. Pragmatics 32:1177): their English rule places a backchannel
    # 700 ms after a low-pitch region (>= 110 ms) begins; that region starts inside speech,
    # before the pause, so counted from the pause start a few hundred ms remain. Median 300 ms,
    # sigma 0.5.
    backchannel_delay=Duration(family="lognormal", params=(300.0, 0.5)),
    # Stolcke et al. 2000 (Computational Linguistics 26:339, Switchboard): backchannels are 19%
    # of utterances, ~0.23 per other utterance; Knudsen, Creemers & Meyer 2020 (Front. Psychol.
    # 11:593671) count 19% (Dutch) and 16% (German) of contributions. With main utterances of
    # ~2-2.5 s that is ~6 per minute of the other speaker's speech.
    backchannel_rate=6.0,
)


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    a_N, b_N = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a_N.size == 0 or b_N.size == 0:
        raise ValueError(f"ks_statistic needs two non-empty samples, got {a_N.size} and {b_N.size} values")
    return float(stats.ks_2samp(a_N, b_N).statistic)


# ---------------------------------------------------------------------------------------------
# Fitting on ingested records


@dataclass(frozen=True, kw_only=True)
class TimingObservations:
    """What :func:`measure` found in a set of conversations (the data :func:`fit` fits)."""

    gaps_ms: tuple[int, ...]  # >= 0 at each change of speaker, as turn_stats reports them
    overlaps_ms: tuple[int, ...]  # > 0 at each change of speaker
    pauses_ms: tuple[int, ...]  # >= PAUSE_MIN_MS inside one speaker's main turn
    reactions_ms: tuple[int, ...]  # overlap of each interruption event
    backchannel_delays_ms: tuple[int, ...]  # pause start to backchannel start
    backchannels: int
    main_turns: int
    main_turn_ms: int  # summed durations of the main turns

    @property
    def speaker_changes(self) -> int:
        return len(self.gaps_ms) + len(self.overlaps_ms)


@dataclass
class _Observations:
    """Accumulator behind :class:`TimingObservations`."""

    gaps: list[int] = field(default_factory=list)
    overlaps: list[int] = field(default_factory=list)
    pauses: list[int] = field(default_factory=list)
    reactions: list[int] = field(default_factory=list)
    backchannel_delays: list[int] = field(default_factory=list)
    backchannels: int = 0
    main_turns: int = 0
    main_turn_ms: int = 0


def _columns(data, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> dict[str, list]:
    """Columns of a pyarrow Table or of an iterable of row mappings, as Python lists."""
    if isinstance(data, pa.Table):
        missing = [c for c in required if c not in data.column_names]
        if missing:
            raise ValueError(f"{what} table lacks columns {missing}; it has {data.column_names}")
        return {c: (data.column(c).to_pylist() if c in data.column_names else [None] * data.num_rows)
                for c in required + optional}
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise TypeError(f"{what} must be a pyarrow Table or an iterable of row dicts, "
                        f"got {type(data).__name__}")
    cols: dict[str, list] = {c: [] for c in required + optional}
    for i, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise TypeError(f"{what} row {i} is a {type(row).__name__}, not a mapping")
        missing = [c for c in required if c not in row]
        if missing:
            raise ValueError(f"{what} row {i} lacks {missing}; rows need {list(required)}")
        for c in required + optional:
            cols[c].append(row.get(c))
    return cols


def _turns_by_conversation(segments) -> dict[str, list[Turn]]:
    cols = _columns(segments, ("conversation_id", "speaker", "start_ms", "end_ms"), ("channel",),
                    "segments")
    out: dict[str, list[Turn]] = defaultdict(list)
    skipped = 0
    for cid, spk, s, e, ch in zip(cols["conversation_id"], cols["speaker"], cols["start_ms"],
                                  cols["end_ms"], cols["channel"]):
        if cid is None or spk is None or s is None or e is None:
            skipped += 1
            continue
        out[cid].append(Turn(str(spk), int(s), int(e), 0 if ch is None else int(ch)))
    if skipped:
        warnings.warn(f"timing measure: skipped {skipped} segment rows with a null conversation_id, "
                      f"speaker, start_ms or end_ms", stacklevel=3)
    return out


def _words_by_conversation(words) -> dict[str, dict[str, list[tuple[int, int]]]]:
    cols = _columns(words, ("conversation_id", "speaker", "start_ms", "end_ms"), (), "words")
    out: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    skipped = 0
    for cid, spk, s, e in zip(cols["conversation_id"], cols["speaker"], cols["start_ms"], cols["end_ms"]):
        if cid is None or spk is None or s is None or e is None:
            skipped += 1  # ingest leaves speaker null where no segment covers the word
            continue
        out[cid][str(spk)].append((int(s), int(e)))
    if skipped:
        warnings.warn(f"timing measure: skipped {skipped} word rows without a speaker or times "
                      f"(they cannot be placed in a turn)", stacklevel=3)
    return out


def _main_turns(turns: list[Turn], backchannel_events) -> tuple[list[Turn], list[tuple[str, int, int]]]:
    """The main turns of turn_stats (backchannels left out, consecutive turns of one speaker
    merged) and the silences (speaker, start, end) bridged by those merges."""
    bc_left = Counter((e.speaker, e.t_ms, e.t_ms + e.payload["duration_ms"]) for e in backchannel_events)
    merged: list[Turn] = []
    silences: list[tuple[str, int, int]] = []
    for t in sorted((t for t in turns if t.end_ms > t.start_ms),
                    key=lambda t: (t.start_ms, t.end_ms, t.speaker)):
        key = (t.speaker, t.start_ms, t.end_ms)
        if bc_left[key] > 0:
            bc_left[key] -= 1
            continue
        if merged and merged[-1].speaker == t.speaker:
            last = merged[-1]
            if t.start_ms > last.end_ms:
                silences.append((t.speaker, last.end_ms, t.start_ms))
            merged[-1] = Turn(last.speaker, last.start_ms, max(last.end_ms, t.end_ms), last.channel)
        else:
            merged.append(t)
    return merged, silences


def _word_silences(main: list[Turn], words: dict[str, list[tuple[int, int]]]) -> list[tuple[str, int, int]]:
    """Silences (speaker, start, end) between consecutive words of one speaker that lie inside
    one of that speaker's main turns."""
    spans: dict[str, list[Turn]] = defaultdict(list)
    for t in main:
        spans[t.speaker].append(t)
    out = []
    for spk, spk_words in words.items():
        turns = spans.get(spk, [])
        starts = [t.start_ms for t in turns]
        last_end = None
        for s, e in sorted(spk_words):
            if last_end is not None and s > last_end:
                i = bisect.bisect_right(starts, last_end) - 1
                if i >= 0 and turns[i].end_ms >= s:
                    out.append((spk, last_end, s))
            last_end = e if last_end is None else max(last_end, e)
    return out


def _measure(turns: list[Turn], words: dict[str, list[tuple[int, int]]] | None, obs: _Observations) -> bool:
    """Add one conversation's observations to ``obs``; False when it has no speech to measure."""
    duration_ms = max((t.end_ms for t in turns), default=0)
    if duration_ms <= 0:
        return False
    st = turn_stats(turns, duration_ms)
    events = turn_events(turns)
    backchannels = [e for e in events if e.type == "backchannel"]
    main, segment_silences = _main_turns(turns, backchannels)
    assert len(main) == st.turns and len(backchannels) == st.backchannels, "out of step with turn_stats"
    obs.gaps += st.gaps_ms
    obs.overlaps += st.overlaps_ms
    obs.reactions += [int(e.payload["overlap_ms"]) for e in events if e.type == "interruption"]
    obs.backchannels += st.backchannels
    obs.main_turns += len(main)
    obs.main_turn_ms += sum(t.end_ms - t.start_ms for t in main)
    # Word times resolve pauses that a diarizer bridges; segment breaks are the fallback for
    # speakers without words.
    words = words or {}
    word_pauses = [p for p in _word_silences(main, words) if p[2] - p[1] >= PAUSE_MIN_MS]
    segment_pauses = [p for p in segment_silences
                      if p[0] not in words and p[2] - p[1] >= PAUSE_MIN_MS]
    obs.pauses += [e - s for _, s, e in word_pauses + segment_pauses]
    # A backchannel that starts inside another speaker's (word-timed) pause is timed from the
    # pause start; one that starts over speech has no pause to be timed from.
    for bc in backchannels:
        delays = [bc.t_ms - s for spk, s, e in word_pauses if spk != bc.speaker and s < bc.t_ms < e]
        obs.backchannel_delays += delays[:1]
    return True


def _fit_quantity(name: str, values: list[int], base: Duration, min_values: int) -> Duration:
    if len(values) < min_values:
        warnings.warn(f"timing fit: {name}: found {len(values)} values, need {min_values}; "
                      f"keeping the base model's {name}", stacklevel=3)
        return base
    try:
        return Duration.fit(values)
    except ValueError as exc:
        warnings.warn(f"timing fit: {name}: {exc}; keeping the base model's {name}", stacklevel=3)
        return base


def measure(segments, words=None) -> TimingObservations:
    """Measure the turn-taking quantities of ingested conversations.

    ``segments``: rows of the ``segments`` table (conversation_id, speaker, start_ms, end_ms,
    channel); ``words`` (optional): rows of the ``words`` table (conversation_id, speaker, text,
    start_ms, end_ms, score). Each is a pyarrow Table or an iterable of dicts.

    Per conversation (duration = last segment end), :func:`turn_stats` gives gaps, overlaps,
    backchannels and main turns, and :func:`turn_events` the interruptions (their overlap is the
    reaction time). Pauses are silences of at least :data:`PAUSE_MIN_MS` between consecutive
    words of a speaker inside that speaker's main turn; for a speaker without words, between
    consecutive segments of that speaker merged into one main turn. Backchannel delays
    need words: a backchannel that starts in another speaker's pause is timed from the pause
    start. Rows that cannot be used are skipped with a warning.
    """
    by_conversation = _turns_by_conversation(segments)
    words_by_conversation = None if words is None else _words_by_conversation(words)
    if words_by_conversation is not None:
        orphans = set(words_by_conversation) - set(by_conversation)
        if orphans:
            warnings.warn(f"timing measure: skipped the words of {len(orphans)} conversations that have "
                          f"no segments (e.g. {sorted(orphans)[0]!r})", stacklevel=2)
    obs = _Observations()
    empty = 0
    for cid in sorted(by_conversation):
        conv_words = None if words_by_conversation is None else words_by_conversation.get(cid)
        empty += not _measure(by_conversation[cid], conv_words, obs)
    if empty:
        warnings.warn(f"timing measure: skipped {empty} conversations whose segments hold no speech",
                      stacklevel=2)
    return TimingObservations(
        gaps_ms=tuple(obs.gaps), overlaps_ms=tuple(obs.overlaps), pauses_ms=tuple(obs.pauses),
        reactions_ms=tuple(obs.reactions), backchannel_delays_ms=tuple(obs.backchannel_delays),
        backchannels=obs.backchannels, main_turns=obs.main_turns, main_turn_ms=obs.main_turn_ms)


def fit(segments, words=None, *, base: TimingModel = DEFAULT_TIMING, min_values: int = 20) -> TimingModel:
    """Fit a :class:`TimingModel` on ingested conversations (``segments`` and optional
    ``words`` rows, as :func:`measure` takes them).

    overlap_prob = overlaps / speaker changes; backchannel_rate = backchannels per minute of
    main-turn speech; the durations are :meth:`Duration.fit` on what :func:`measure` found.
    Zero gaps (exact latching) count as speaker changes but are left out of the gap fit, which
    needs positive values. A quantity with fewer than ``min_values`` observations (speaker
    changes for overlap_prob, main turns for backchannel_rate) keeps ``base``'s value, with a
    warning naming it and the count found.
    """
    if not isinstance(base, TimingModel):
        raise TypeError(f"base must be a TimingModel, got {type(base).__name__}")
    if isinstance(min_values, bool) or not isinstance(min_values, int) or min_values < MIN_FIT_VALUES:
        raise ValueError(f"min_values must be an integer >= {MIN_FIT_VALUES}, got {min_values!r}")
    obs = measure(segments, words)
    zeros = sum(1 for g in obs.gaps_ms if g == 0)
    if zeros:
        warnings.warn(f"timing fit: {zeros} of {len(obs.gaps_ms)} gaps are 0 ms; they count as speaker "
                      f"changes but are left out of the gap distribution", stacklevel=2)
    changes = obs.speaker_changes
    if changes < min_values:
        warnings.warn(f"timing fit: overlap_prob: found {changes} speaker changes, need {min_values}; "
                      f"keeping the base model's overlap_prob", stacklevel=2)
        overlap_prob = base.overlap_prob
    else:
        overlap_prob = len(obs.overlaps_ms) / changes
    if obs.main_turns < min_values or obs.main_turn_ms <= 0:
        warnings.warn(f"timing fit: backchannel_rate: found {obs.main_turns} main turns, need "
                      f"{min_values}; keeping the base model's backchannel_rate", stacklevel=2)
        backchannel_rate = base.backchannel_rate
    else:
        backchannel_rate = obs.backchannels / (obs.main_turn_ms / 60_000)
    return TimingModel(
        gap=_fit_quantity("gap", [g for g in obs.gaps_ms if g > 0], base.gap, min_values),
        overlap_prob=overlap_prob,
        overlap=_fit_quantity("overlap", obs.overlaps_ms, base.overlap, min_values),
        pause=_fit_quantity("pause", obs.pauses_ms, base.pause, min_values),
        reaction=_fit_quantity("reaction", obs.reactions_ms, base.reaction, min_values),
        backchannel_delay=_fit_quantity("backchannel_delay", obs.backchannel_delays_ms,
                                        base.backchannel_delay, min_values),
        backchannel_rate=backchannel_rate,
    )
