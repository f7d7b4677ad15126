"""Beam pipelines of microturn (ingest, synthesize, shard, catalog), their media I/O and the
model backends they call."""
