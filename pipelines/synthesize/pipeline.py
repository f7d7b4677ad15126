"""The synthesize pipeline as composite PTransforms.

::

    script patterns ─ ReadScripts ─┐
    generated dialogues ───────────┴─ ParseScript ─ Dedupe ─ Synthesize ─┐
    ingest OUT ─ ReadRecords ─ GroupByConversation ─ Remix ─────────────┴─ Validate ─ WriteSorted
                     │               │                │       │      │
                     └───────────────┴─── rejects ────┴───────┴──────┘

Tables written under OUT: conversations, segments, words, events, rejects (sorted, so the same
seed gives byte-identical files); stems under OUT/media/{conversation_id}/.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet

from microturn.pipelines.synthesize import dofns
from microturn.pipelines.synthesize.config import SynthesizeConfig
from microturn.pipelines.tables import REJECTS, store_tables
from microturn.synth.timing import TimingModel

TABLES = ("conversations", "segments", "words", "events")


class SynthesizeScripts(beam.PTransform):
    """Script lines (``{"input", "line"}``) → synthetic conversation rows by table, and rejects."""

    def __init__(self, cfg: SynthesizeConfig, timing: TimingModel, timing_source: str):
        super().__init__()
        self.cfg, self.timing, self.timing_source = cfg, timing, timing_source

    def expand(self, lines):
        c = self.cfg
        common = {"tts": c.tts, "seed": c.seed, "timing": self.timing, "timing_source": self.timing_source,
                  "mix": c.mix}
        parsed = lines | "ParseScript" >> beam.ParDo(dofns.ParseScript(**common)).with_outputs(REJECTS, main="ok")
        unique = (
            parsed.ok
            | "GroupById" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(dofns.KeepFirst()).with_outputs(REJECTS, main="ok")
        )
        made = unique.ok | "Synthesize" >> beam.ParDo(
            dofns.Synthesize(output=c.output, license=c.license, **common)).with_outputs(
            REJECTS, *dofns.ROW_OUTPUTS, main="conversations")
        rows = {"conversations": made.conversations, **{t: made[t] for t in dofns.ROW_OUTPUTS}}
        return rows, [parsed[REJECTS], unique[REJECTS], made[REJECTS]]


class RemixRecords(beam.PTransform):
    """An ingest output directory → remixed conversation rows by table, and rejects."""

    def __init__(self, cfg: SynthesizeConfig, timing: TimingModel, timing_source: str):
        super().__init__()
        if not cfg.remix:
            raise ValueError("RemixRecords reads the ingest output named by remix, and the config names none")
        self.cfg, self.timing, self.timing_source = cfg, timing, timing_source
        self.source: str = cfg.remix

    def expand(self, pbegin):
        c = self.cfg
        keyed = {}
        for table in ("conversations", "segments", "words"):
            pattern = FileSystems.join(self.source, table, "*.parquet")
            keyed[table] = (
                pbegin
                | f"Read{table.title()}" >> ReadFromParquet(pattern)
                | f"Key{table.title()}" >> beam.Map(lambda r: (r["conversation_id"], r)).with_output_types(
                    tuple[str, dict])
            )
        made = (
            keyed
            | "GroupByConversation" >> beam.CoGroupByKey()
            | "Remix" >> beam.ParDo(dofns.Remix(source=self.source, output=c.output, seed=c.seed, timing=self.timing,
                                                timing_source=self.timing_source, mix=c.mix)).with_outputs(
                REJECTS, *dofns.ROW_OUTPUTS, main="conversations")
        )
        rows = {"conversations": made.conversations, **{t: made[t] for t in dofns.ROW_OUTPUTS}}
        return rows, [made[REJECTS]]


class Synthesize(beam.PTransform):
    """The whole synthesize job: scripts, generated dialogues and/or a remix source in, tables out."""

    def __init__(self, cfg: SynthesizeConfig, timing: TimingModel, timing_source: str,
                 generated: list[str] | None = None):
        super().__init__()
        self.cfg, self.timing, self.timing_source = cfg, timing, timing_source
        self.generated = generated or []

    def expand(self, pbegin):
        c = self.cfg
        outputs, rejects = [], []
        if c.scripts or self.generated:
            sources = []
            if c.scripts:
                read = (pbegin
                        | "Patterns" >> beam.Create(sorted(set(c.scripts))).with_output_types(str)
                        | "ReadScripts" >> beam.ParDo(dofns.ReadScripts(exclude=c.output)).with_outputs(
                            REJECTS, main="ok"))
                sources.append(read.ok)
                rejects.append(read[REJECTS])
            if self.generated:
                sources.append(pbegin | "Generated" >> beam.Create(
                    [{"input": f"generated:{i}", "line": line} for i, line in enumerate(self.generated)])
                    .with_output_types(dict[str, str]))
            lines = tuple(sources) | "AllScripts" >> beam.Flatten()
            rows, rej = lines | "Scripts" >> SynthesizeScripts(c, self.timing, self.timing_source)
            outputs.append(rows)
            rejects += rej
        if c.remix:
            rows, rej = pbegin | "RemixSource" >> RemixRecords(c, self.timing, self.timing_source)
            outputs.append(rows)
            rejects += rej
        store_tables({t: tuple(o[t] for o in outputs) for t in TABLES}, rejects, output=c.output,
                     num_shards=c.table_shards)
