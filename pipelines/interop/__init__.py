"""Interop with the field's data tools: conversation records to and from Lhotse manifests.

- :mod:`.lhotse_export`: records (an ingest or synthesize output) → Lhotse recordings,
  supervisions and cuts, checked with Lhotse's own validators (``microturn export lhotse``);
- :mod:`.lhotse_import`: Lhotse cuts with supervisions → conversation records that the shard
  stage takes (``microturn import lhotse``), through :mod:`.cut_records`;
- :mod:`.export_dir`: the folder an export writes, owned by a marker, replaced atomically.

Lhotse is an optional dependency (the ``lhotse`` extra); these modules import it, so the command
line imports them only when a command runs.
"""
