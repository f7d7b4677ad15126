"""The ingest pipeline: conversational media in, diarized and word-timed conversation records out.

Run it with ``microturn ingest`` or ``python -m microturn.pipelines.ingest``.
"""
