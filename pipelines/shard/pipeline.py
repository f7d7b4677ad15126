"""The shard pipeline as composite PTransforms.

::

    OUT₁..OUTₙ ─ ReadRecords ─ PickFirst ─ MakeSamples ─ Spool ─┬─ Sizes ─ SplitPayload ─┐ (a sum per split and set)
                │                            │              └─────── Bucket ◄───────┘
                │                            │                 ├─ GroupSizes ─ CountParts ─┐ (a count per bucket)
                │                            │           GroupByBucket ─ WriteBucket ◄─────┘
                │                            │                          ├─ Figures ─ WriteCard (README.md)
                └─ rejects ──────────────────┴──────────────────────────┴─ samples, shards, rejects tables

Written under SHARDS: ``{split}/{split}-{index:06d}.tar`` (audio-only samples) and
``{split}/{split}-video-{index:06d}.tar`` (samples with a clip), each with a Parquet manifest
beside it, the tables ``samples``, ``shards`` and ``rejects``, and the dataset card
``README.md``, all under pending names that the run publishes when it succeeded
(:func:`microturn.pipelines.outputs.commit`, which also removes the
shards of an earlier run that this one superseded).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquet
from apache_beam.pvalue import AsDict

from microturn.pipelines.shard import card, dofns
from microturn.pipelines.shard.config import ShardConfig
from microturn.pipelines.shard.plan import bucket_count, bucket_of, member_set
from microturn.pipelines.tables import REJECTS, store_tables

ROW_TABLES = ("conversations", "segments", "words", "events")
# The samples table grows with the corpus (a row per sample, 1-2 KB as a Python dict): one
# table file per 50,000 rows (about 420 h of 30 s samples) keeps a table writer near 100 MB.
TABLE_ROWS_PER_PART = 50_000


def shard_group(sample: dict) -> tuple[str, str]:
    """``(split, shard set)`` of a sample (``{"split", "row": {"has_video", ...}, ...}``): the
    samples that share one shard numbering (:mod:`microturn.pipelines.shard.plan`)."""
    return sample["split"], member_set(bool(sample["row"]["has_video"]))


def has_table(root: str, table: str) -> bool:
    return bool(FileSystems.match([FileSystems.join(root, table, "*.parquet")])[0].metadata_list)


class ReadRecords(beam.PTransform):
    """Record directories → one dict per conversation: ``{"root", "conversations", "segments",
    "words", "events"}`` (rows of one input), plus rejects for conversations found twice."""

    def __init__(self, inputs: tuple[str, ...]):
        super().__init__()
        self.inputs = inputs

    def expand(self, pbegin):
        per_input = []
        for i, root in enumerate(self.inputs):
            keyed = {}
            for table in ROW_TABLES:
                if not has_table(root, table):
                    keyed[table] = pbegin | f"No{table.title()}{i}" >> beam.Create([]).with_output_types(
                        tuple[str, dict])
                    continue
                keyed[table] = (
                    pbegin
                    | f"Read{table.title()}{i}" >> ReadFromParquet(FileSystems.join(root, table, "*.parquet"))
                    | f"Key{table.title()}{i}" >> beam.Map(lambda r: (r["conversation_id"], r)).with_output_types(
                        tuple[str, dict])
                )
            per_input.append(
                keyed
                | f"Group{i}" >> beam.CoGroupByKey()
                # Rows whose conversation has no conversations row still reach PickFirst and
                # become a bad_record reject there.
                | f"Tag{i}" >> beam.Map(lambda kv, i=i: (kv[0], (i, {t: list(v) for t, v in kv[1].items()})))
                .with_output_types(tuple[str, tuple[int, dict]])
            )
        picked = (
            tuple(per_input)
            | "AllInputs" >> beam.Flatten()
            | "GroupByConversation" >> beam.GroupByKey()
            | "PickFirst" >> beam.ParDo(dofns.PickFirst(self.inputs)).with_outputs(REJECTS, main="records")
        )
        return picked.records, picked[REJECTS]


class WriteShards(beam.PTransform):
    """Samples (``{"key", "split", "blob", "size", "row"}``) → tars and manifests; returns the
    ``shards`` rows and the ``samples`` rows.

    No step sees every sample of a split (see :mod:`microturn.pipelines.shard.plan`): the payload
    of each shard set of a split (audio-only, video) is summed by a combiner, samples are grouped
    by bucket (a few shards each), and the only state every writer reads is one payload total per
    (split, shard set) and one shard count per bucket.
    Sample bytes never go through the shuffle: the worker that made a sample writes them to the
    run's spool (``SHARDS/.spool``, removed when the run commits or fails) and the shard writer
    reads them from there.
    """

    def __init__(self, output: str, *, shard_bytes: int, bucket_shards: int = 4):
        super().__init__()
        if bucket_shards < 1:
            raise ValueError(f"bucket_shards must be at least 1, got {bucket_shards}")
        self.output, self.shard_bytes, self.bucket_bytes = output, shard_bytes, bucket_shards * shard_bytes

    def expand(self, samples):
        bucket_bytes = self.bucket_bytes
        samples = samples | "Spool" >> beam.ParDo(dofns.SpoolSample(self.output))
        payload = (
            samples
            | "Sizes" >> beam.Map(lambda s: (shard_group(s), s["size"])).with_output_types(
                tuple[tuple[str, str], int])
            | "SplitPayload" >> beam.CombinePerKey(sum)
        )

        def assign(s: dict, totals: dict) -> tuple[tuple[tuple[str, str], int], dict]:
            group = shard_group(s)
            buckets = bucket_count(totals[group], bucket_bytes=bucket_bytes)
            return (group, bucket_of(s["row"]["conversation_id"], buckets)), s

        bucketed = samples | "Bucket" >> beam.Map(assign, AsDict(payload)).with_output_types(
            tuple[tuple[tuple[str, str], int], dict])
        parts = (
            bucketed
            | "KeySizes" >> beam.Map(lambda kv: (kv[0], (kv[1]["key"], kv[1]["size"]))).with_output_types(
                tuple[tuple[tuple[str, str], int], tuple[str, int]])
            | "GroupSizes" >> beam.GroupByKey()
            | "CountParts" >> beam.ParDo(dofns.CountParts(self.shard_bytes))
        )
        written = (
            bucketed
            | "GroupByBucket" >> beam.GroupByKey()
            | "WriteBucket" >> beam.ParDo(dofns.WriteBucket(self.output, target_bytes=self.shard_bytes),
                                          AsDict(parts)).with_outputs("samples", main="shards")
        )
        return written.shards, written.samples


class WriteDatasetCard(beam.PTransform):
    """``(shards rows, samples rows)`` → ``SHARDS/README.md`` (pending), the dataset card that
    points Hugging Face ``datasets`` at the tars (:mod:`microturn.pipelines.shard.card`). Its
    figures come from one combiner, so no step holds more than a few numbers per split."""

    def __init__(self, output: str, *, window_chunks: int, patch_budget: int | None):
        super().__init__()
        self.output, self.window_chunks, self.patch_budget = output, window_chunks, patch_budget

    def expand(self, pcolls):
        shards, samples = pcolls
        return (
            (shards | "TagShards" >> beam.Map(lambda r: ("shard", r)),
             samples | "TagSamples" >> beam.Map(lambda r: ("sample", r)))
            | "Rows" >> beam.Flatten()
            | "Figures" >> beam.CombineGlobally(card.CardFigures())
            | "WriteCard" >> beam.ParDo(card.WriteCard(self.output, window_chunks=self.window_chunks,
                                                       patch_budget=self.patch_budget))
        )


class Shard(beam.PTransform):
    """The whole shard job: record directories in; tars, manifests and tables out."""

    def __init__(self, cfg: ShardConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, pbegin):
        c = self.cfg
        records, dup_rejects = pbegin | "ReadRecords" >> ReadRecords(c.inputs)
        made = records | "MakeSamples" >> beam.ParDo(dofns.MakeSamples(
            window=c.window_spec, splits=c.split_ratios, video=c.video_spec if c.video else None,
        )).with_outputs(REJECTS, main="samples")
        shards, samples = made.samples | "Write" >> WriteShards(
            c.output, shard_bytes=c.shard_bytes, bucket_shards=c.bucket_shards)
        _ = (shards, samples) | "Card" >> WriteDatasetCard(
            c.output, window_chunks=c.window_chunks, patch_budget=c.patch_budget if c.video else None)
        store_tables({"samples": samples, "shards": shards}, [dup_rejects, made[REJECTS]], output=c.output,
                     num_shards=c.table_shards, rows_per_part=TABLE_ROWS_PER_PART)
