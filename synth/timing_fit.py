"""Fitting the turn-taking timing model on ingested conversations.

:func:`measure` reads rows of the ``segments`` (and ``words``) tables and measures gaps,
overlaps, pauses, interruption reactions and backchannel delays with the record contract's own
definitions, :func:`microturn.schemas.turns.turn_stats` and
:func:`microturn.schemas.turns.turn_events`, so that what is fitted here and what is later
measured on synthesized dialogues are the same quantities; :func:`fit` turns those
measurements into a :class:`~microturn.synth.timing.TimingModel` (maximum-likelihood
durations, :meth:`~microturn.synth.timing.Duration.fit`).

All durations are integer milliseconds.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import bisect
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from microturn.schemas.turns import Turn, turn_events, turn_stats
from microturn.synth.timing import DEFAULT_TIMING, MIN_FIT_VALUES, Duration, TimingModel

__all__ = ["PAUSE_MIN_MS", "TimingObservations", "fit", "measure"]

# A silence inside one speaker's speech counts as a pause from 150 ms on: stop closures and
# other articulation gaps between words last up to ~100-120 ms, while Campione & Veronis
# (2002, Speech Prosody, 5 languages) find a class of "brief" pauses below 200 ms that the
# classic 250 ms cut-off (Goldman-Eisler 1968) would miss.
PAUSE_MIN_MS = 150


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
                                  cols["end_ms"], cols["channel"], strict=True):
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
    for cid, spk, s, e in zip(cols["conversation_id"], cols["speaker"], cols["start_ms"], cols["end_ms"],
                              strict=True):
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


def _fit_quantity(name: str, values: Sequence[int], base: Duration, min_values: int) -> Duration:
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
    main-turn speech; pause_rate = pauses (as :func:`measure` finds them, at least
    :data:`PAUSE_MIN_MS`) per minute of main-turn time; the durations are
    :meth:`Duration.fit` on what :func:`measure` found.
    Zero gaps (exact latching) count as speaker changes but are left out of the gap fit, which
    needs positive values. A quantity with fewer than ``min_values`` observations (speaker
    changes for overlap_prob, main turns for backchannel_rate and pause_rate) keeps ``base``'s value, with a
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
    if obs.main_turns < min_values or obs.main_turn_ms <= 0:
        warnings.warn(f"timing fit: pause_rate: found {obs.main_turns} main turns, need {min_values}; "
                      f"keeping the base model's pause_rate", stacklevel=2)
        pause_rate = base.pause_rate
    else:
        pause_rate = len(obs.pauses_ms) / (obs.main_turn_ms / 60_000)
    return TimingModel(
        pause_rate=pause_rate,
        gap=_fit_quantity("gap", [g for g in obs.gaps_ms if g > 0], base.gap, min_values),
        overlap_prob=overlap_prob,
        overlap=_fit_quantity("overlap", obs.overlaps_ms, base.overlap, min_values),
        pause=_fit_quantity("pause", obs.pauses_ms, base.pause, min_values),
        reaction=_fit_quantity("reaction", obs.reactions_ms, base.reaction, min_values),
        backchannel_delay=_fit_quantity("backchannel_delay", obs.backchannel_delays_ms,
                                        base.backchannel_delay, min_values),
        backchannel_rate=backchannel_rate,
    )
