"""Diarization scoring: RTTM reading and DER / JER with :mod:`pyannote.metrics`.

A small library, no command line (the ``microturn`` CLI wires it). Typical use::

    from microturn.pipelines.eval_diarization import evaluate_diarization

    report = evaluate_diarization("refs/", {"call1": [("SPEAKER_00", 0, 1500), ...]})
    print(report.total.der, [f.der for f in report.files])

Conventions: hypothesis rows are ``(speaker, start_ms, end_ms)`` in integer milliseconds (the
unit of every record in microturn); RTTM and :class:`pyannote.core.Annotation` use seconds.
DER is computed with overlap scored (``skip_overlap=False``) and an optional forgiveness collar;
JER with the same collar. Both are ratios (0.12 means 12 %). The scored time of a file is its UEM
(``read_uem``) when one is given, else from the first to the last turn of reference or hypothesis
(pyannote's default without a UEM).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

__all__ = [
    "DiarizationReport",
    "DiarizationScore",
    "annotation_from_rows",
    "evaluate_diarization",
    "read_rttm",
    "read_uem",
]

HypothesisRows = Iterable[tuple[str, int, int]]


@dataclass(frozen=True, kw_only=True, slots=True)
class DiarizationScore:
    """Scores of one file (or of all files together for ``DiarizationReport.total``).

    Durations are seconds of reference speech time counted with overlap (two reference
    speakers talking for 1 s count 2 s), the denominator of DER. ``reference_speakers`` and
    ``hypothesis_speakers`` count the speakers heard in the scored region (summed in the
    total); ``reference_overlap`` and ``hypothesis_overlap`` are the shares of speech time
    where two or more speakers talk (the total weights files by reference speech). A
    hypothesis that never overlaps cannot score below its reference's overlap share.
    """

    uri: str
    der: float
    jer: float
    reference_s: float
    missed_s: float
    false_alarm_s: float
    confusion_s: float
    reference_speakers: int = 0
    hypothesis_speakers: int = 0
    reference_overlap: float = 0.0
    hypothesis_overlap: float = 0.0


def overlap_share(annotation: Annotation, uem: Timeline | None = None) -> float:
    """Share of the speech time (inside ``uem`` when given) where two or more speakers talk."""
    if uem is not None:
        annotation = annotation.crop(uem)
    timelines = [annotation.label_timeline(label).support() for label in annotation.labels()]
    speech = Timeline(segments=[s for t in timelines for s in t]).support().duration()
    pieces: list[Segment] = []
    for i, a in enumerate(timelines):
        for b in timelines[i + 1 :]:
            pieces += [x & y for x in a for y in b if x.intersects(y)]
    return Timeline(segments=pieces).support().duration() / speech if speech > 0 else 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class DiarizationReport:
    """Per-file scores, in reference order, and the corpus-level total.

    The total DER is the duration-weighted DER over all files (sum of errors over sum of
    reference speech), the usual corpus DER; the total JER is pyannote's aggregate (the mean
    over all reference speakers of all files).
    """

    files: list[DiarizationScore]
    total: DiarizationScore
    collar_s: float


def _files(path: str | os.PathLike[str], suffix: str, what: str) -> list[Path]:
    """``path`` itself, or the ``*suffix`` files of the directory ``path`` in name order."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix.lower() == suffix and p.is_file())
        if not files:
            raise FileNotFoundError(f"no {suffix} file in directory {str(root)!r}")
        return files
    if root.is_file():
        return [root]
    raise FileNotFoundError(f"{what} path {str(root)!r} does not exist")


def _fields(file: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, whitespace-split fields)`` of every line of a UTF-8 text file; a file
    that is not UTF-8 text is a ``ValueError`` naming it."""
    try:
        with file.open("r", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line.split()
    except UnicodeDecodeError as error:
        raise ValueError(f"{file}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None


def read_rttm(path: str | os.PathLike[str]) -> dict[str, Annotation]:
    """Read an RTTM file, or every ``*.rttm`` file in a directory, into ``{uri: Annotation}``.

    Only ``SPEAKER`` lines are kept (other RTTM line types such as ``SPKR-INFO`` are ignored);
    ``;;`` comments and blank lines are skipped. Fields used: 2 (file id, the uri), 4 (onset in
    seconds), 5 (duration in seconds) and 8 (speaker name). Files in a directory are read in
    name order; a uri that appears in several files gets the union of their turns.

    Raises:
        FileNotFoundError: the path does not exist, or a directory holds no ``.rttm`` file.
        ValueError: a ``SPEAKER`` line is malformed (the message names file and line).
    """
    files = _files(path, ".rttm", "RTTM")

    annotations: dict[str, Annotation] = {}
    for file in files:
        for line_no, fields in _fields(file):
            if not fields or fields[0].startswith(";;") or fields[0] != "SPEAKER":
                continue
            if len(fields) < 8:
                raise ValueError(
                    f"{file}:{line_no}: a SPEAKER line needs at least 8 fields "
                    f"(SPEAKER uri channel onset duration <NA> <NA> speaker), got {len(fields)}"
                )
            uri, speaker = fields[1], fields[7]
            try:
                onset, duration = float(fields[3]), float(fields[4])
            except ValueError:
                raise ValueError(
                    f"{file}:{line_no}: onset {fields[3]!r} and duration {fields[4]!r} must be "
                    "numbers of seconds"
                ) from None
            if duration < 0:
                raise ValueError(f"{file}:{line_no}: negative duration {duration}")
            annotation = annotations.setdefault(uri, Annotation(uri=uri))
            if duration == 0:
                warnings.warn(f"{file}:{line_no}: zero-length turn skipped", stacklevel=2)
                continue
            segment = Segment(onset, onset + duration)
            annotation[segment, annotation.new_track(segment)] = speaker
    return annotations


def read_uem(path: str | os.PathLike[str]) -> dict[str, Timeline]:
    """Read a UEM file, or every ``*.uem`` file in a directory, into ``{uri: Timeline}``.

    A UEM line is ``uri channel onset offset`` (seconds): the regions to score. Lines of one uri
    add up; ``;;`` comments and blank lines are skipped.

    Raises:
        FileNotFoundError: the path does not exist, or a directory holds no ``.uem`` file.
        ValueError: a malformed line (the message names file and line).
    """
    files = _files(path, ".uem", "UEM")
    regions: dict[str, Timeline] = {}
    for file in files:
        for line_no, fields in _fields(file):
            if not fields or fields[0].startswith(";;"):
                continue
            if len(fields) != 4:
                raise ValueError(f"{file}:{line_no}: a UEM line has 4 fields (uri channel onset offset), "
                                 f"got {len(fields)}")
            try:
                onset, offset = float(fields[2]), float(fields[3])
            except ValueError:
                raise ValueError(f"{file}:{line_no}: onset {fields[2]!r} and offset {fields[3]!r} must be "
                                 "numbers of seconds") from None
            if not 0 <= onset < offset:
                raise ValueError(f"{file}:{line_no}: need 0 <= onset < offset, got {onset} and {offset}")
            regions.setdefault(fields[0], Timeline(uri=fields[0])).add(Segment(onset, offset))
    return {uri: timeline.support() for uri, timeline in regions.items()}


def annotation_from_rows(rows: HypothesisRows, *, uri: str = "") -> Annotation:
    """Build an :class:`Annotation` from ``(speaker, start_ms, end_ms)`` rows.

    Overlapping rows (the same or different speakers) are all kept, each on its own track.
    Rows with ``end_ms <= start_ms`` are skipped with a warning.
    """
    annotation = Annotation(uri=uri)
    skipped = 0
    for speaker, start_ms, end_ms in rows:
        if end_ms <= start_ms:
            skipped += 1
            continue
        segment = Segment(start_ms / 1000.0, end_ms / 1000.0)
        annotation[segment, annotation.new_track(segment)] = str(speaker)
    if skipped:
        warnings.warn(
            f"{skipped} empty or reversed row(s) (end_ms <= start_ms) skipped for uri {uri!r}",
            stacklevel=2,
        )
    return annotation


def _score(uri: str, der_components: Mapping[str, float], der: float, jer: float,
           **counts: float) -> DiarizationScore:
    return DiarizationScore(**counts,  # type: ignore[arg-type]  # speaker counts and overlap shares
        uri=uri,
        der=float(der),
        jer=float(jer),
        reference_s=float(der_components["total"]),
        missed_s=float(der_components["missed detection"]),
        false_alarm_s=float(der_components["false alarm"]),
        confusion_s=float(der_components["confusion"]),
    )


def evaluate_diarization(
    reference: Mapping[str, Annotation] | str | os.PathLike[str],
    hypothesis: Mapping[str, HypothesisRows | Annotation],
    collar_s: float = 0.0,
    uem: Mapping[str, Timeline] | str | os.PathLike[str] | None = None,
) -> DiarizationReport:
    """Score hypothesis diarizations against references with DER and JER.

    Args:
        reference: ``{uri: Annotation}`` or a path to an RTTM file / directory of RTTM files.
        hypothesis: ``{uri: [(speaker, start_ms, end_ms), ...]}`` (an ``Annotation`` is also
            accepted as a value). Speaker names need not match the reference: the metrics find
            the optimal one-to-one mapping.
        collar_s: total width in seconds of the unscored zone centred on every reference
            boundary (pyannote's convention: ``collar_s / 2`` on each side, so NIST md-eval's
            ``-c 0.25`` is ``collar_s=0.5``).
            0.0 (the default) scores every frame.
        uem: the scored regions, ``{uri: Timeline}`` or a UEM file / directory. A reference uri
            without one is an error (its score would silently use another region). None: from
            the first to the last turn of reference or hypothesis.

    Returns:
        One :class:`DiarizationScore` per reference uri (files missing from the hypothesis are
        scored as all missed speech, with a warning) and the corpus total. Hypothesis uris
        absent from the reference are ignored with a warning.

    Raises:
        ValueError: a negative collar, or no reference file at all.
    """
    if collar_s < 0:
        raise ValueError(f"collar_s must be >= 0 seconds, got {collar_s}")
    references = read_rttm(reference) if isinstance(reference, (str, os.PathLike)) else reference
    if not references:
        raise ValueError("the reference holds no file to score against")

    regions = read_uem(uem) if isinstance(uem, (str, os.PathLike)) else uem
    if regions is not None:
        missing = sorted(set(references) - set(regions))
        if missing:
            raise ValueError(f"{len(missing)} reference uri(s) without a UEM region: {missing[:5]}; give every "
                             "scored file a UEM line or leave the UEM out")

    extra = sorted(set(hypothesis) - set(references))
    if extra:
        warnings.warn(
            f"{len(extra)} hypothesis uri(s) without reference ignored: {extra[:5]}", stacklevel=2
        )

    der_metric = DiarizationErrorRate(collar=collar_s, skip_overlap=False)
    jer_metric = JaccardErrorRate(collar=collar_s, skip_overlap=False)
    files: list[DiarizationScore] = []
    for uri, ref in references.items():
        hyp_value = hypothesis.get(uri)
        if hyp_value is None:
            warnings.warn(f"no hypothesis for uri {uri!r}: scored as all missed speech", stacklevel=2)
            hyp = Annotation(uri=uri)
        elif isinstance(hyp_value, Annotation):
            hyp = hyp_value
        else:
            hyp = annotation_from_rows(hyp_value, uri=uri)
        # Scored region: from the earliest to the latest turn of either side, which is what
        # pyannote assumes (with a warning) when no UEM is given.
        if regions is not None:
            scored = regions[uri]
        else:
            extent = ref.get_timeline().extent() | hyp.get_timeline().extent()
            scored = Timeline(segments=[extent] if extent else [], uri=uri)
        components = der_metric(ref, hyp, uem=scored, detailed=True)
        jer = jer_metric(ref, hyp, uem=scored)
        # pyannote returns the components (a dict) when detailed, the rate (a float) otherwise.
        assert isinstance(components, dict) and not isinstance(jer, dict)
        files.append(_score(
            uri, components, components["diarization error rate"], jer,
            reference_speakers=len(ref.crop(scored).labels()), hypothesis_speakers=len(hyp.crop(scored).labels()),
            reference_overlap=overlap_share(ref, scored), hypothesis_overlap=overlap_share(hyp, scored),
        ))

    total_components = {
        key: sum(getattr(f, attr) for f in files)
        for key, attr in (
            ("total", "reference_s"),
            ("missed detection", "missed_s"),
            ("false alarm", "false_alarm_s"),
            ("confusion", "confusion_s"),
        )
    }
    speech = [(f.reference_s, f.reference_overlap, f.hypothesis_overlap) for f in files]
    weight = sum(r for r, _, _ in speech) or 1.0
    total = _score(
        "TOTAL", total_components, abs(der_metric), abs(jer_metric),
        reference_speakers=sum(f.reference_speakers for f in files),
        hypothesis_speakers=sum(f.hypothesis_speakers for f in files),
        # Weighted by each file's reference speech: the share a listener of the whole set hears.
        reference_overlap=sum(r * o for r, o, _ in speech) / weight,
        hypothesis_overlap=sum(r * o for r, _, o in speech) / weight,
    )
    return DiarizationReport(files=files, total=total, collar_s=collar_s)
