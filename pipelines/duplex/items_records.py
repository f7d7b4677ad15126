"""Reading conversation records (outputs of ``microturn ingest`` / ``microturn synthesize``) for
evaluation items: their tables, grouped per conversation, and each conversation's split.

Inputs are read in the order given; a conversation found in several of them is kept from the
first (as the shard stage does) with a warning. Missing inputs are errors, never an empty result.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.shard.dofns import to_record
from microturn.pipelines.shard.samples import Record, split_key
from microturn.pipelines.tables import read_table
from microturn.schemas.ids import split_of

log = logging.getLogger(__name__)
TABLES = ("conversations", "segments", "words", "events")


def check_records(root: str) -> None:
    """``ValueError`` unless ``root`` is a records folder with a ``conversations`` table."""
    if "://" not in root and not os.path.isdir(root):
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        raise ValueError(f"--records {root} {what}; give the --output folder of `microturn ingest` or "
                         "`microturn synthesize`")
    pattern = FileSystems.join(root, "conversations", "*.parquet")
    if not FileSystems.match([pattern])[0].metadata_list:
        raise ValueError(f"--records {root} holds no conversations table ({pattern} matches nothing); give the "
                         "--output folder of `microturn ingest` or `microturn synthesize`")


def conversation_split(conversation: dict, splits: tuple[tuple[str, float], ...] | None = None) -> str:
    """The split a conversation's items belong to.

    With ``splits`` (the shard stage's ``--splits`` ratios), the shard stage's own rule: a pure
    function of :func:`split_key` (for a remix, the real conversation it was made from), so items
    and shards agree on every conversation whatever ratios the shards were cut with. Without: its
    ``split`` column (written by ingest / synthesize at the default ratios, which is what the shard
    stage computes at its default); for a remix, the split of the call it was made from, so that a
    remix of a training call never becomes a test item."""
    key = split_key(conversation)
    if splits is not None:
        return split_of(key, splits)
    if key != conversation["conversation_id"]:
        return split_of(key)
    split = conversation.get("split")
    if not isinstance(split, str) or not split:
        raise ValueError(f"conversation {conversation['conversation_id']} has no split; records written by "
                         "ingest or synthesize always have one")
    return split


def read_records(roots: Sequence[str]) -> list[Record]:
    """Every conversation of ``roots`` as a shard-stage :class:`Record` (rows grouped, sorted), in
    conversation id order; duplicates kept from the first root that holds them."""
    for root in roots:
        check_records(root)
    found: dict[str, tuple[int, dict]] = {}
    for i, root in enumerate(roots):
        grouped: dict[str, dict[str, list]] = defaultdict(lambda: {t: [] for t in TABLES})
        for table in TABLES:
            for row in read_table(root, table).to_pylist():
                grouped[row["conversation_id"]][table].append(row)
        for cid in sorted(grouped):
            if not grouped[cid]["conversations"]:
                log.warning("%s: rows of conversation %s without a conversations row are left out", root, cid)
                continue
            if cid in found:
                log.warning("conversation %s is in %s and %s; kept from the first", cid, roots[found[cid][0]], root)
                continue
            found[cid] = (i, {"root": root, **grouped[cid]})
    records = []
    for cid in sorted(found):
        try:
            records.append(to_record(found[cid][1]))
        except ValueError as exc:
            raise ValueError(f"{found[cid][1]['root']}: conversation {cid}: {exc}") from None
    return records

