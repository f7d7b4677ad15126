"""Timing model of turn-taking: parametric duration distributions, literature defaults, and
sampling.

The model says how long the silence (gap) or the overlap is when the floor changes hands, how
long and how often a speaker pauses inside a turn, how fast an interrupted speaker yields, and when and how
often listeners backchannel. :data:`DEFAULT_TIMING` holds values from the literature;
:func:`microturn.synth.timing_fit.fit` fits one on ingested conversations (reading their
``segments`` and ``words`` rows), and :mod:`microturn.synth.layout` samples from it.

All durations are integer milliseconds.

Arrays here hold one duration per draw or observation, an axis without a letter in the
project's shape legend (:mod:`microturn.schemas.legend`), so they are named in words.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, overload

import numpy as np
from scipy import stats

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


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def _scipy_dist(family: str, params: tuple[float, ...]) -> Any:  # scipy's frozen distributions are untyped
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

    @overload
    def sample(self, rng: np.random.Generator, size: None = None) -> int: ...
    @overload
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray: ...

    def sample(self, rng: np.random.Generator, size: int | None = None) -> int | np.ndarray:
        """Draw durations: an ``int`` when ``size`` is None, else an int64 array of ``size``."""
        _check_rng(rng)
        a, b = self.params
        if self.family == "lognormal":
            draws = rng.lognormal(mean=math.log(a), sigma=b, size=size)
        elif self.family == "gamma":
            draws = rng.gamma(a, b, size=size)
        else:
            draws = b * rng.weibull(a, size=size)
        draws_ms = np.maximum(1, np.rint(draws)).astype(np.int64)
        return int(draws_ms) if size is None else draws_ms

    def cdf(self, x_ms) -> np.ndarray:
        """P(duration <= x_ms) of the continuous distribution (before rounding to whole ms)."""
        return np.asarray(_scipy_dist(self.family, self.params).cdf(x_ms), dtype=np.float64)

    def log_likelihood(self, values_ms) -> float:
        """Sum of the log densities of ``values_ms`` (the criterion :meth:`fit` compares)."""
        values = np.asarray(values_ms, dtype=np.float64)
        return float(np.sum(_scipy_dist(self.family, self.params).logpdf(values)))

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
        values = np.asarray(values_ms, dtype=np.float64).ravel()
        if values.size < MIN_FIT_VALUES:
            raise ValueError(f"fitting a duration needs at least {MIN_FIT_VALUES} values, "
                             f"got {values.size}")
        bad = int(np.sum(~np.isfinite(values) | (values <= 0)))
        if bad:
            raise ValueError(f"durations must be finite and positive: {bad} of the {values.size} "
                             f"values given are not (drop zeros and negatives before fitting)")
        if np.all(values == values[0]):
            raise ValueError(f"all {values.size} values equal {values[0]:g} ms; a distribution "
                             f"cannot be fitted without spread")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"families must be a non-empty choice of {', '.join(FAMILIES)}, got {families}")
        candidates = [cls(family=f, params=_mle(f, values)) for f in families]
        return max(candidates, key=lambda d: d.log_likelihood(values))


def _mle(family: str, values: np.ndarray) -> tuple[float, float]:
    if family == "lognormal":
        logs = np.log(values)
        return float(np.exp(logs.mean())), float(logs.std())
    with warnings.catch_warnings():
        # The optimiser may probe invalid shapes on its way to the optimum; the result is checked.
        warnings.simplefilter("ignore", RuntimeWarning)
        if family == "gamma":
            shape, _, scale = stats.gamma.fit(values, floc=0)
        else:
            shape, _, scale = stats.weibull_min.fit(values, floc=0)
    # scipy's stubs type fit()'s results as optional; both are floats after a fit with floc=0.
    return float(shape), float(scale)  # pyright: ignore[reportArgumentType]


def _check_keys(d, expected: set[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{what}.from_dict takes a mapping, got {type(d).__name__}")
    unknown, missing = set(d) - expected, expected - set(d)
    if unknown or missing:
        raise ValueError(f"{what}.from_dict: unknown keys {sorted(unknown)}, missing keys "
                         f"{sorted(missing)}; expected exactly {sorted(expected)}")


# Pauses per minute of main-turn time, when a fit has not measured them. Campione & Veronis
# 2002 (Speech Prosody, "A large-scale multilingual study of silent pause duration"; abstract
# checked at isca-speech.org/archive/sp2002/sp02_199.html) count "ca. 6000 pauses in 5 1/2 hours
# of read and spontaneous speech in five languages": about 18 per minute of recording, or about
# 23 per minute of speech if a fifth of the time is pause, counting their brief pauses (< 200 ms)
# as well. Without those (a quarter to a third of them, an assumption: the abstract gives the
# classes, not their shares) that is about 12-17 silences of 200 ms or more per minute of a
# speaker's own talk, i.e. one every 3.5-5 s. 12 is the low end of that range: a design choice
# for the bundled scripts' 2-4 s turns (each turn gets its phrase-break pauses plus about one
# more every other turn; bench/turn_taking_data.py measures 15 pauses per minute of generated
# speech with the phrase breaks included). timing_fit.fit measures the real rate (pauses of at
# least PAUSE_MIN_MS per minute of main-turn time).
DEFAULT_PAUSE_RATE = 12.0


# Answering what one sees takes a visual reaction (simple reaction times ~200-250 ms) plus
# planning the words: picture-naming latencies run ~600-1000 ms for common objects (Indefrey &
# Levelt 2004, Cognition 92:101, estimate ~600 ms to articulation). A live assistant answers the
# moment it sees; median 700 ms, sigma 0.3 (90% within 430-1140 ms) keeps answers clearly after
# the cue yet inside the evaluation's 3 s window.
DEFAULT_CUE_REACTION = Duration(family="lognormal", params=(700.0, 0.3))


@dataclass(frozen=True, kw_only=True)
class TimingModel:
    """Turn-taking timing of two-or-more-party dialogue.

    - gap: silence at a change of speaker (next start - previous end > 0).
    - overlap_prob: share of speaker changes where the next turn starts before the previous ends.
    - overlap: magnitude of that overlap (> 0).
    - pause: silence inside one speaker's turn, at a phrase or sentence break.
    - reaction: at an interruption, from the interrupter's onset until the interrupted speaker
      stops (mid-word if need be).
    - backchannel_delay: from the start of the speaker's pause until the listener's
      backchannel starts.
    - backchannel_rate: listener backchannels per minute of the other speaker's main-turn speech.
    - pause_rate: pauses (silences of at least ``timing_fit.PAUSE_MIN_MS`` inside one speaker's
      main turn) per minute of main-turn time. Optional in :meth:`from_dict` (models written
      before it existed take :data:`DEFAULT_PAUSE_RATE`).
    - cue_reaction: from a visual cue (the first video frame that shows it) until the speaker's
      answer starts, with no audio cue to react to. Not fitted (real recordings carry no cue
      times): the default, or what a model file sets. Optional in :meth:`from_dict`.
    """

    gap: Duration
    overlap_prob: float
    overlap: Duration
    pause: Duration
    reaction: Duration
    backchannel_delay: Duration
    backchannel_rate: float
    pause_rate: float = DEFAULT_PAUSE_RATE
    cue_reaction: Duration = DEFAULT_CUE_REACTION

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("overlap_prob", "backchannel_rate", "pause_rate"):
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
        if not (math.isfinite(self.pause_rate) and self.pause_rate >= 0):
            raise ValueError(f"pause_rate must be finite and >= 0 per minute, got {self.pause_rate}")

    def sample_transitions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` offsets (int64 ms) from the end of the previous turn to the start of the next:
        a gap (> 0) or, with probability ``overlap_prob``, minus an overlap (< 0).

        Never 0: both durations are at least 1 ms, so exact latching comes out as a 1 ms gap;
        the sign alone tells a gap from an overlap."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        _check_rng(rng)
        is_overlap = rng.random(n) < self.overlap_prob
        gaps = self.gap.sample(rng, n)
        overlaps = self.overlap.sample(rng, n)
        return np.where(is_overlap, -overlaps, gaps).astype(np.int64)

    def sample_transition(self, rng: np.random.Generator) -> int:
        """One offset as in :meth:`sample_transitions`."""
        return int(self.sample_transitions(rng, 1)[0])

    def sample_pause(self, rng: np.random.Generator) -> int:
        return self.pause.sample(rng)

    def sample_reaction(self, rng: np.random.Generator) -> int:
        return self.reaction.sample(rng)

    def sample_cue_reaction(self, rng: np.random.Generator) -> int:
        return self.cue_reaction.sample(rng)

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
    def from_dict(cls, d: Mapping[str, Any]) -> TimingModel:
        """Inverse of :meth:`to_dict`; ``ValueError`` on unknown or missing keys."""
        if isinstance(d, Mapping) and "pause_rate" not in d:
            d = {"pause_rate": DEFAULT_PAUSE_RATE, **d}  # written before pauses were counted
        if isinstance(d, Mapping) and "cue_reaction" not in d:
            d = {"cue_reaction": DEFAULT_CUE_REACTION.to_dict(), **d}  # written before visual cues
        _check_keys(d, {f.name for f in fields(cls)}, "TimingModel")
        return cls(pause_rate=d["pause_rate"], cue_reaction=Duration.from_dict(d["cue_reaction"]),
                   gap=Duration.from_dict(d["gap"]), overlap_prob=d["overlap_prob"],
                   overlap=Duration.from_dict(d["overlap"]), pause=Duration.from_dict(d["pause"]),
                   reaction=Duration.from_dict(d["reaction"]),
                   backchannel_delay=Duration.from_dict(d["backchannel_delay"]),
                   backchannel_rate=d["backchannel_rate"])


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
    # log-normal. Lundholm Fors 2015 (PhD thesis "Production and perception of pauses in
    # speech", University of Gothenburg; its press release): "a typical pause in speech lasts
    # only about a quarter to half a second". Heldner & Edlund 2010 (J. Phonetics 38:555,
    # "Pauses, gaps and overlaps in conversations") define pauses (silence, same speaker before
    # and after) and gaps (silence at a change of speaker) as the two sides of one decision;
    # a median in the lower half of Lundholm Fors's range keeps pauses of 200 ms and more about
    # as long as gaps of 200 ms and more (median 300 ms, sigma 0.6: 90% within 110-810 ms), so
    # that silence length alone does not tell a hold from a shift (bench/turn_taking_data.py).
    pause=Duration(family="lognormal", params=(300.0, 0.6)),
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
    pause_rate=DEFAULT_PAUSE_RATE,
)


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    sample_a, sample_b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if sample_a.size == 0 or sample_b.size == 0:
        raise ValueError(f"ks_statistic needs two non-empty samples, got {sample_a.size} and {sample_b.size} values")
    # scipy's stubs give ks_2samp's result a generated class without its fields.
    return float(stats.ks_2samp(sample_a, sample_b).statistic)  # pyright: ignore[reportAttributeAccessIssue]
