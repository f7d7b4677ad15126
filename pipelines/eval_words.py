"""Word-timing evaluation: are hypothesis words inside their reference segment, and how far
are their boundaries from word-level references?

Two figures per file and in total:

inside share
    Reference: STM segments (one STM file holding any number of recordings, or a directory of
    ``.stm`` files); the STM file id (first column) is the key of ``hypothesis_words``.
    Hypothesis words are sorted by start time and matched, in order, to the reference words
    (the STM texts concatenated in segment start order) by their normalised text (lower case,
    letters, digits and inner apostrophes only) with ``difflib.SequenceMatcher`` (autojunk
    off). A matched word counts as inside when its [start, end] lies within ITS OWN reference
    segment, widened by ``collar_ms`` on both sides (0, the default, is strict). The share is
    taken over ALL hypothesis words: a word that matches no reference word (an inserted or
    misspelt word, a file with no reference) is never inside. Matching by order rather than
    "any segment whose text contains the word" keeps a frequent word ("yeah", "I") from
    being credited to a segment it does not belong to. ``coverage`` (matched / reference
    words) tells when a hypothesis drops words, which the share alone would not show.

boundary error
    Where word-level references exist (whisperx-style JSON with words, or lists of timed
    words), hypothesis and reference words are matched the same way and the absolute start
    and end differences (ms) of matched pairs are collected; medians are reported for starts,
    ends and both pooled. Totals pool the differences of all files (not a median of medians).

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import statistics
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from microturn.pipelines.backends.base import Word
from microturn.pipelines.backends.sidecar import (
    SidecarError,
    StmSegment,
    decode_sidecar,
    parse_sidecar,
    parse_stm_segments,
)

__all__ = ["WordReport", "WordTimingFigures", "evaluate_words", "normalise_word", "read_stm"]

TimedText = tuple[str, int, int]
WordReference = Sequence[TimedText] | Sequence[Word] | str | os.PathLike | bytes

_KEEP_RE = re.compile(r"[^\w']+")


def normalise_word(text: str) -> str:
    """Matching key of a word: NFKC, lower case, only letters/digits/inner apostrophes."""
    key = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    key = _KEEP_RE.sub("", key).replace("_", "")
    return key.strip("'")


@dataclass(frozen=True, kw_only=True, slots=True)
class WordTimingFigures:
    """Figures of one file, or of all files together.

    n_hypothesis: hypothesis words with a non-empty matching key.
    n_reference: reference STM words of the file(s).
    n_matched: hypothesis words matched to a reference STM word by text order.
    n_inside: matched words inside their own segment (widened by the collar).
    inside_share: n_inside / n_hypothesis (None without hypothesis words).
    coverage: n_matched / n_reference (None without reference words).
    n_boundary_pairs: hypothesis/word-reference pairs behind the boundary figures.
    median_abs_start_ms, median_abs_end_ms, median_abs_boundary_ms: medians of |error| of
        starts, of ends, and of both pooled (None without word-level references).
    """

    n_hypothesis: int
    n_reference: int
    n_matched: int
    n_inside: int
    inside_share: float | None
    coverage: float | None
    n_boundary_pairs: int = 0
    median_abs_start_ms: float | None = None
    median_abs_end_ms: float | None = None
    median_abs_boundary_ms: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WordReport:
    """Per-file and total word-timing figures.

    missing_reference: hypothesis files without any reference STM segment (their words count
        as outside). missing_hypothesis: reference files the hypothesis does not cover (left
        out of the figures).
    """

    files: dict[str, WordTimingFigures]
    total: WordTimingFigures
    collar_ms: int
    missing_reference: list[str] = field(default_factory=list)
    missing_hypothesis: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# reading references


def read_stm(reference: str | os.PathLike) -> dict[str, list[StmSegment]]:
    """STM segments by file id, each file id's segments sorted by start.

    ``reference`` is one STM file (local or any Beam filesystem URL), a local directory, or a
    remote directory URL ending in ``/``; directories are searched recursively for ``*.stm``.
    """
    path = os.fspath(reference)
    if os.path.isdir(path):
        paths = sorted(glob.glob(os.path.join(path, "**", "*.stm"), recursive=True))
    elif "://" in path and path.endswith("/"):
        from apache_beam.io.filesystems import FileSystems

        (result,) = FileSystems.match([path + "**.stm"])
        paths = sorted(m.path for m in result.metadata_list)
    else:
        paths = [path]
    if not paths:
        raise ValueError(f"no .stm file under the reference directory {path!r}")
    by_file: dict[str, list[StmSegment]] = {}
    for p in paths:
        for seg in parse_stm_segments(decode_sidecar(_read_bytes(p), name=p), name=p):
            by_file.setdefault(seg.file, []).append(seg)
    for segs in by_file.values():
        segs.sort(key=lambda s: (s.start_ms, s.end_ms))
    return by_file


def _read_bytes(path: str) -> bytes:
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return fh.read()
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"reference file {path!r} does not exist")
    with FileSystems.open(path) as fh:
        return fh.read()


def _timed_words(ref: WordReference, name: str) -> list[TimedText]:
    """A word-level reference as (text, start_ms, end_ms), from words, tuples or a JSON path."""
    if isinstance(ref, (str, os.PathLike, bytes)):
        data = ref if isinstance(ref, bytes) else _read_bytes(os.fspath(ref))
        transcript = parse_sidecar(data, "json", name=name)
        if transcript.words is None:
            raise SidecarError(
                f"word reference {name} has no word-level times; give a whisperx JSON whose "
                "segments all carry 'words'"
            )
        return [(w.text, w.start_ms, w.end_ms) for w in transcript.words]
    out: list[TimedText] = []
    for item in ref:
        if isinstance(item, Word):
            out.append((item.text, item.start_ms, item.end_ms))
        elif isinstance(item, (tuple, list)) and len(item) == 3:
            out.append((str(item[0]), int(item[1]), int(item[2])))
        else:
            raise TypeError(
                f"word reference {name}: items must be Word or (text, start_ms, end_ms), "
                f"got {item!r}"
            )
    return out


# --------------------------------------------------------------------------------------------
# matching


def _keyed(words: Sequence[TimedText], name: str, what: str) -> list[tuple[str, int, int]]:
    """Words with their matching key, sorted by time; words without a key are dropped."""
    out = []
    n_empty = 0
    for item in words:
        if not (isinstance(item, (tuple, list)) and len(item) == 3):
            raise TypeError(
                f"{what} words of {name!r} must be (text, start_ms, end_ms) tuples, got {item!r}"
            )
        text, start, end = item
        key = normalise_word(str(text))
        if not key:
            n_empty += 1
            continue
        out.append((key, int(start), int(end)))
    if n_empty:
        warnings.warn(
            f"{name}: skipped {n_empty} {what} word(s) without letters or digits", stacklevel=3
        )
    out.sort(key=lambda w: (w[1], w[2]))
    return out


def _match(hyp_keys: list[str], ref_keys: list[str]) -> list[tuple[int, int]]:
    """(hypothesis index, reference index) pairs of equal keys, in order."""
    matcher = difflib.SequenceMatcher(None, hyp_keys, ref_keys, autojunk=False)
    pairs: list[tuple[int, int]] = []
    for block in matcher.get_matching_blocks():
        pairs.extend((block.a + k, block.b + k) for k in range(block.size))
    return pairs


@dataclass(slots=True)
class _Acc:
    n_hyp: int = 0
    n_ref: int = 0
    n_matched: int = 0
    n_inside: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, other: _Acc) -> None:
        self.n_hyp += other.n_hyp
        self.n_ref += other.n_ref
        self.n_matched += other.n_matched
        self.n_inside += other.n_inside
        self.starts.extend(other.starts)
        self.ends.extend(other.ends)

    def figures(self) -> WordTimingFigures:
        pooled = self.starts + self.ends
        return WordTimingFigures(
            n_hypothesis=self.n_hyp,
            n_reference=self.n_ref,
            n_matched=self.n_matched,
            n_inside=self.n_inside,
            inside_share=self.n_inside / self.n_hyp if self.n_hyp else None,
            coverage=self.n_matched / self.n_ref if self.n_ref else None,
            n_boundary_pairs=len(self.starts),
            median_abs_start_ms=float(statistics.median(self.starts)) if self.starts else None,
            median_abs_end_ms=float(statistics.median(self.ends)) if self.ends else None,
            median_abs_boundary_ms=float(statistics.median(pooled)) if pooled else None,
        )


def evaluate_words(
    reference_stm_or_dir: str | os.PathLike,
    hypothesis_words: Mapping[str, Sequence[TimedText]],
    word_reference: Mapping[str, WordReference] | None = None,
    *,
    collar_ms: int = 0,
) -> WordReport:
    """Inside-segment share and boundary errors of ``hypothesis_words`` (see module docstring).

    ``hypothesis_words`` maps an STM file id to its words as (text, start_ms, end_ms).
    ``word_reference`` maps file ids to word-level references: a whisperx JSON (path or
    bytes) or a list of (text, start_ms, end_ms) / :class:`Word`. ``collar_ms`` widens every
    reference segment on both sides for the inside test.
    """
    if not isinstance(collar_ms, int) or isinstance(collar_ms, bool) or collar_ms < 0:
        raise ValueError(f"collar_ms must be a non-negative integer, got {collar_ms!r}")
    if not isinstance(hypothesis_words, Mapping):
        raise TypeError(
            "hypothesis_words must map file ids to lists of (text, start_ms, end_ms), "
            f"got {type(hypothesis_words).__name__}"
        )
    segments_by_file = read_stm(reference_stm_or_dir)
    word_reference = word_reference or {}
    unknown_refs = sorted(set(word_reference) - set(hypothesis_words))
    if unknown_refs:
        warnings.warn(
            f"word references for {len(unknown_refs)} file(s) without hypothesis words were "
            f"ignored: {', '.join(unknown_refs[:5])}",
            stacklevel=2,
        )

    files: dict[str, WordTimingFigures] = {}
    total = _Acc()
    missing_reference: list[str] = []
    for file_id in sorted(hypothesis_words):
        acc = _Acc()
        hyp = _keyed(hypothesis_words[file_id], file_id, "hypothesis")
        acc.n_hyp = len(hyp)
        segments = segments_by_file.get(file_id)
        if not segments:
            missing_reference.append(file_id)
        else:
            ref_keys: list[str] = []
            ref_segment: list[int] = []
            for k, seg in enumerate(segments):
                for token in seg.text.split():
                    key = normalise_word(token)
                    if key:
                        ref_keys.append(key)
                        ref_segment.append(k)
            acc.n_ref = len(ref_keys)
            for h, r in _match([w[0] for w in hyp], ref_keys):
                acc.n_matched += 1
                seg = segments[ref_segment[r]]
                _, start, end = hyp[h]
                if start >= seg.start_ms - collar_ms and end <= seg.end_ms + collar_ms:
                    acc.n_inside += 1
        if file_id in word_reference:
            ref_words = _keyed(
                _timed_words(word_reference[file_id], file_id), file_id, "word-reference"
            )
            for h, r in _match([w[0] for w in hyp], [w[0] for w in ref_words]):
                acc.starts.append(abs(hyp[h][1] - ref_words[r][1]))
                acc.ends.append(abs(hyp[h][2] - ref_words[r][2]))
        files[file_id] = acc.figures()
        total.add(acc)
    if missing_reference:
        warnings.warn(
            f"{len(missing_reference)} hypothesis file(s) have no reference STM segment and "
            f"count as outside: {', '.join(missing_reference[:5])}",
            stacklevel=2,
        )
    missing_hypothesis = sorted(set(segments_by_file) - set(hypothesis_words))
    if missing_hypothesis:
        warnings.warn(
            f"{len(missing_hypothesis)} reference file(s) have no hypothesis words and are left "
            f"out of the figures: {', '.join(missing_hypothesis[:5])}",
            stacklevel=2,
        )
    return WordReport(
        files=files,
        total=total.figures(),
        collar_ms=collar_ms,
        missing_reference=missing_reference,
        missing_hypothesis=missing_hypothesis,
    )
