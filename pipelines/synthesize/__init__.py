"""The synthesize pipeline: dialogue scripts (or ingested records) in, synthetic conversation records out."""
