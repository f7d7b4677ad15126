"""The ingest pipeline as composite PTransforms, and ``run(argv)``.

::

    patterns ─ Match ─ Probe ─ Dedupe ─ Normalise ─ DetectSpeech ─ Diarize ─ Transcribe ─ Summarise
                 │       │       │          │            │            │          │           │
                 └───────┴───────┴──────────┴─── rejects ┴────────────┴──────────┴───────────┘

Tables written under OUT: sources, conversations, segments, words, events, rejects; media under
OUT/media/{conversation_id}/.
"""

from __future__ import annotations

import csv
import io
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.ingest import dofns, inputs
from microturn.pipelines.ingest.config import IngestConfig
from microturn.pipelines.tables import REJECTS, store_tables

log = logging.getLogger(__name__)


def read_license_manifest(path: str) -> dict[str, tuple[str, str]]:
    """``uri,license,origin`` CSV → {uri: (license, origin)}; ``ValueError`` when malformed."""
    with FileSystems.open(path) as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    need = {"uri", "license"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ValueError(f"{path}: license manifest needs the header 'uri,license[,origin]', "
                         f"found {reader.fieldnames}")
    out = {}
    for i, row in enumerate(reader, start=2):
        if not (row.get("uri") or "").strip() or not (row.get("license") or "").strip():
            raise ValueError(f"{path}:{i}: empty uri or license")
        out[row["uri"].strip()] = (row["license"].strip(), (row.get("origin") or "real").strip() or "real")
    return out


class ProbeSources(beam.PTransform):
    """File patterns → one record per distinct media file, with its ``sources`` row."""

    def __init__(self, cfg: IngestConfig, licenses: dict[str, tuple[str, str]]):
        super().__init__()
        self.cfg, self.licenses = cfg, licenses

    def expand(self, patterns):
        match = dofns.MatchPattern(exclude=self.cfg.output)  # an output inside a recursive glob is not input
        matched = patterns | "Match" >> beam.ParDo(match).with_outputs(REJECTS, main="files")
        probed = (
            matched.files
            | "DistinctPaths" >> beam.Distinct()
            | "Probe" >> beam.ParDo(dofns.Probe(max_duration_s=self.cfg.max_duration_s,
                                                licenses=self.licenses)).with_outputs(REJECTS, main="ok")
        )
        deduped = (
            probed.ok
            | "KeyByConversation" >> beam.Map(lambda r: (r["conversation_id"], r)).with_output_types(tuple[str, dict])
            | "GroupCopies" >> beam.GroupByKey()
            | "KeepFirstCopy" >> beam.ParDo(dofns.KeepFirstCopy()).with_outputs(REJECTS, main="ok")
        )
        rejects = (matched[REJECTS], probed[REJECTS], deduped[REJECTS]) | "FlattenProbeRejects" >> beam.Flatten()
        return deduped.ok, rejects


class Annotate(beam.PTransform):
    """Normalised media, speech, diarization, words and statistics for each conversation."""

    def __init__(self, cfg: IngestConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, records):
        c = self.cfg
        steps = [
            ("Normalise", dofns.Normalise(output=c.output, channel_layout=c.channel_layout,
                                          video_max_side=c.video_max_side,
                                          max_duration_s=c.max_duration_s)),
            ("DetectSpeech", dofns.DetectSpeech(output=c.output, vad=c.vad)),
            ("Diarize", dofns.Diarize(output=c.output, diarizer=c.diarizer, model_dir=c.model_dir,
                                      count=c.speaker_count, embedded=c.embedded_diarizer)),
            ("Transcribe", dofns.Transcribe(output=c.output, transcriber=c.transcriber,
                                            model_dir=c.model_dir, language=c.language,
                                            aligner=c.aligner)),
        ]
        rejects = []
        pcoll = records
        for label, fn in steps:
            res = pcoll | label >> beam.ParDo(fn).with_outputs(REJECTS, main="ok")
            rejects.append(res[REJECTS])
            pcoll = res.ok
        summary = pcoll | "Summarise" >> beam.ParDo(dofns.Summarise(output=c.output)).with_outputs(
            REJECTS, *dofns.Summarise.OUTPUTS, main="conversations")
        rejects.append(summary[REJECTS])
        rows = {"conversations": summary.conversations,
                **{name: summary[name] for name in dofns.Summarise.OUTPUTS}}
        return rows, rejects


class Ingest(beam.PTransform):
    """The whole ingest job: file patterns in, tables written under ``cfg.output``."""

    def __init__(self, cfg: IngestConfig, licenses: dict[str, tuple[str, str]] | None = None):
        super().__init__()
        self.cfg, self.licenses = cfg, licenses or {}

    def expand(self, pbegin):
        c = self.cfg
        for pattern in c.inputs:
            if inputs.display_path(pattern) != pattern:
                raise ValueError(f"--input {inputs.display_path(pattern)!r} is not valid UTF-8; "
                                 "match the file with a glob (it is then rejected with its "
                                 "reason) or rename it")
        patterns = pbegin | "Patterns" >> beam.Create(sorted(set(c.inputs))).with_output_types(str)
        records, probe_rejects = patterns | "ProbeSources" >> ProbeSources(c, self.licenses)
        sources = records | "SourceRows" >> beam.Map(lambda r: r["source"]).with_output_types(dict)
        rows, rejects = records | "Annotate" >> Annotate(c)
        rows = {"sources": sources, **rows}
        rejects = [probe_rejects, *rejects]
        store_tables(rows, rejects, output=c.output, num_shards=c.table_shards)
        return rows
