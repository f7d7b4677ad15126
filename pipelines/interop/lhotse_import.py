"""``microturn import lhotse``: Lhotse cuts with supervisions as conversation records.

Each cut of a cuts manifest (``.jsonl`` or ``.jsonl.gz``) with supervisions becomes one
conversation under OUT, in the tables and media layout of ingest (:mod:`.cut_records` says how a
cut maps to streams, times and ids); events and turn-taking statistics are computed from its
turns as ingest computes them. A cut that cannot become a record (no supervisions, a supervision
or word outside the cut, no speaker, audio Lhotse cannot load, a line that is not a cut) is a
``rejects`` row (stage ``import``, its reason as ``error_type``) and never stops the others; when
every cut fails, the run is an error and OUT stays as it was.

Why a Beam pipeline rather than a plain loop: the tables must be written exactly as the stages
write them, and that code is the stages' Beam transforms: every row validated
(:class:`~microturn.pipelines.tables.ValidateRows`; a bad row becomes a reject), tables sorted
into parts with pending names (:func:`~microturn.pipelines.tables.store_tables`), published by
:func:`~microturn.pipelines.outputs.finish` only when a conversation was made, inside
:func:`~microturn.pipelines.outputs.stage_output` (checked, locked, claimed). The per-cut work
(decode, resample, FLAC) then runs on any Beam runner, as ingest's does. OUT is claimed as an
``ingest`` output: it holds ingest's tables, ``sources`` included, so shard, catalog and audit
read it as one, and a rerun replaces it the way an ingest rerun does.

::

    CUTS ─ ReadFromText ─ ReadCut ─ GroupByConversation ─ KeepFirstCopy ─ WriteMedia ─ tables
                            └──────────────── rejects ───────────┴─────────────┘

``ReadCut`` loads each cut's audio to hash it (the conversation id) and computes its rows
without writing; ``WriteMedia`` loads the kept copy again and writes its 16 kHz FLAC streams, so
two copies of one conversation never write the same media file at once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import ReadFromText
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from microturn.pipelines import media
from microturn.pipelines.dead_letter import RejectingStep
from microturn.pipelines.ingest.dofns import KeepFirstCopy
from microturn.pipelines.interop.cut_records import CUT_TYPES, CutError, load_cut, parse_cut, record_rows, resample_16k
from microturn.pipelines.outputs import finish, stage_output
from microturn.pipelines.tables import REJECTS, read_table, store_tables
from microturn.schemas.config import setting, validate

__all__ = ["ImportConfig", "ImportCuts", "ImportSummary", "check_cuts", "run_import"]

STAGE = "import"
SUFFIXES = (".jsonl", ".jsonl.gz")
ROW_TABLES = ("sources", "segments", "words", "events")


@dataclass(frozen=True, kw_only=True)
class ImportConfig:
    """What ``microturn import lhotse`` needs besides Beam's pipeline options.

    Attributes:
        cuts: the Lhotse cuts manifest (``.jsonl`` / ``.jsonl.gz``; local or any Beam filesystem).
        output: the record output OUT.
        license: the license of cuts whose ``custom`` names none.
        table_shards: Parquet files per table.
    """

    cuts: str = setting(flag="CUTS")
    output: str = setting(flag="--output")
    license: str = setting("unknown", flag="--license")
    table_shards: int = setting(1, ge=1, flag="--table-shards")

    def __post_init__(self) -> None:
        validate(self)
        if not self.cuts:
            raise ValueError("give the Lhotse cuts manifest to import (CUTS)")
        if not self.output:
            raise ValueError("--output is required")
        if not self.license.strip():
            raise ValueError("--license must not be empty")


def check_cuts(path: str) -> None:
    """``ValueError`` before any work unless ``path`` is a ``.jsonl[.gz]`` file whose first
    line is a Lhotse cut (a recordings or supervisions manifest is named as such)."""
    if not path.lower().endswith(SUFFIXES):
        raise ValueError(f"CUTS {path}: give a Lhotse cuts manifest in JSON lines ({' or '.join(SUFFIXES)})")
    if "://" not in path and os.path.isdir(path):
        raise ValueError(f"CUTS {path}: is a folder, not a cuts manifest")
    if not FileSystems.exists(path):
        raise ValueError(f"CUTS {path}: no such file")
    first = ""
    with FileSystems.open(path) as f:  # decompresses .gz by its name
        for raw in iter(f.readline, b""):
            first = raw.decode("utf-8", "replace").strip()
            if first:
                break
    if not first:
        raise ValueError(f"CUTS {path}: holds no cuts")
    try:
        data = json.loads(first)
    except json.JSONDecodeError:
        raise ValueError(f"CUTS {path}: the first line is not JSON; give a Lhotse cuts manifest") from None
    if not isinstance(data, dict) or data.get("type") not in CUT_TYPES:
        what = ("a recordings manifest" if isinstance(data, dict) and "sources" in data else
                "a supervisions manifest" if isinstance(data, dict) and "recording_id" in data else "not cuts")
        raise ValueError(f"CUTS {path}: is {what}; give the cuts manifest (e.g. *_cuts.jsonl.gz, "
                         "CutSet.from_manifests(...).to_file(...))")


def _key(cuts: str, line: str) -> str:
    """The ``rejects.input`` of a line: ``CUTS#cut_id`` (``CUTS#?`` when it names no id)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        data = None
    cut_id = data.get("id") if isinstance(data, dict) else None
    return f"{cuts}#{cut_id if isinstance(cut_id, str) else '?'}"


class ReadCut(RejectingStep):
    """A manifest line → the cut's record (rows, content hash, the line itself), not yet written."""

    namespace = STAGE
    stage = STAGE

    def __init__(self, *, cuts: str, license: str):
        super().__init__()
        self.cuts, self.license = cuts, license
        self.version = ""

    def setup(self):
        import lhotse

        self.version = lhotse.__version__

    def process(self, line: str):
        if not line.strip():
            return
        key = _key(self.cuts, line)
        try:
            cut = parse_cut(line)
            loaded = load_cut(cut)
            rows = record_rows(cut, loaded, uri=key, license=self.license, lhotse_version=self.version)
        except CutError as exc:
            yield self._reject(key, exc, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - one cut's failure is a reject, not a crash
            yield self._reject(key, exc)
            return
        self.done.inc()
        yield {"uri": key, "conversation_id": rows["conversation"]["conversation_id"], "sha256": loaded.sha256,
               "cut": line, "rows": rows}


class WriteMedia(RejectingStep):
    """The kept copy of a conversation → its 16 kHz FLAC streams under ``OUT/media/{id}/``, then
    its rows (the ``conversations`` row as the main output, the others tagged)."""

    namespace = STAGE
    stage = STAGE
    rejected_metric = "write_rejected"

    def __init__(self, *, output: str):
        super().__init__()
        self.output = output  # also tells _reject which faults are the output's

    def process(self, rec: dict):
        conv = rec["rows"]["conversation"]
        try:
            loaded = load_cut(parse_cut(rec["cut"]))
            if loaded.sha256 != rec["sha256"]:
                raise CutError("audio_changed", "the cut's audio changed between two reads of it")
            wave_CN = resample_16k(loaded.wave_CN, loaded.sampling_rate)
            for name, wave_N in zip(conv["audio_files"], wave_CN, strict=True):
                media.write_bytes(FileSystems.join(self.output, conv["media_dir"], name), media.encode_flac(wave_N))
        except CutError as exc:
            yield self._reject(rec["uri"], exc, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - output faults are raised again by _reject
            yield self._reject(rec["uri"], exc)
            return
        yield conv
        yield TaggedOutput("sources", rec["rows"]["source"])
        for table in ("segments", "words", "events"):
            for row in rec["rows"][table]:
                yield TaggedOutput(table, row)


class ImportCuts(beam.PTransform):
    """The whole import: a cuts manifest in, record tables and media written under ``cfg.output``."""

    def __init__(self, cfg: ImportConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, pbegin):
        c = self.cfg
        read = (pbegin
                | "ReadCuts" >> ReadFromText(c.cuts)
                | "ReadCut" >> beam.ParDo(ReadCut(cuts=c.cuts, license=c.license)).with_outputs(REJECTS, main="ok"))
        keyed = beam.Map(lambda r: (r["conversation_id"], r)).with_output_types(tuple[str, dict])
        kept = (read.ok
                | "KeyByConversation" >> keyed
                | "GroupCopies" >> beam.GroupByKey()
                | "KeepFirstCopy" >> beam.ParDo(KeepFirstCopy()).with_outputs(REJECTS, main="ok"))
        written = kept.ok | "WriteMedia" >> beam.ParDo(WriteMedia(output=c.output)).with_outputs(
            REJECTS, *ROW_TABLES, main="conversations")
        rows = {"conversations": written.conversations, **{t: written[t] for t in ROW_TABLES}}
        store_tables(rows, [read[REJECTS], kept[REJECTS], written[REJECTS]], output=c.output,
                     num_shards=c.table_shards)
        return rows


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    """Figures of an import, from the tables it wrote."""

    cuts: str
    output: str
    conversations: int
    layouts: dict[str, int]
    hours: float
    segments: int
    words: int
    events: int
    rejects: dict[str, int]

    def render(self) -> str:
        layouts = ", ".join(f"{k}: {v}" for k, v in sorted(self.layouts.items()))
        lines = [f"microturn import lhotse: {self.cuts} -> {self.output}",
                 f"  {self.conversations} conversations ({layouts}; {self.hours:.3f} h), {self.segments} segments, "
                 f"{self.words} words, {self.events} events",
                 "  rejects: " + (", ".join(f"{k}: {v}" for k, v in sorted(self.rejects.items())) or "none")]
        return "\n".join(lines)


def summarise(cfg: ImportConfig) -> ImportSummary:
    convs = read_table(cfg.output, "conversations").to_pylist()
    rejects = read_table(cfg.output, "rejects").to_pylist()
    return ImportSummary(
        cuts=cfg.cuts, output=cfg.output, conversations=len(convs),
        layouts=dict(Counter(c["channel_layout"] for c in convs)),
        hours=sum(c["duration_ms"] for c in convs) / 3.6e6,
        segments=read_table(cfg.output, "segments").num_rows, words=read_table(cfg.output, "words").num_rows,
        events=read_table(cfg.output, "events").num_rows,
        rejects=dict(Counter(f"{r['stage']}/{r['error_type']}" for r in rejects)))


def run_import(cfg: ImportConfig, beam_args: list[str]) -> ImportSummary:
    """Run the import pipeline (Beam options from ``beam_args``) and return its summary.

    Checked before any work: CUTS (:func:`check_cuts`) and OUT (not a file, not another
    stage's output, not around the manifest). Raises ``ValueError``, ``OutputError``,
    ``OutputInUse`` or ``NothingWritten`` (every cut failed: OUT left as it was)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    check_cuts(cfg.cuts)
    options = PipelineOptions(beam_args, save_main_session=False)
    with stage_output(cfg.output, "ingest", inputs=[cfg.cuts]):
        with beam.Pipeline(options=options) as p:
            _ = p | "Import" >> ImportCuts(cfg)
        finish(cfg.output, "ingest", made_table="conversations", what="conversations")
    return summarise(cfg)
