"""Model-backed steps of ingest behind one interface each (see :mod:`.base`).

Two kinds of backend exist for every step: the field's standard tools (pyannote.audio,
whisperx), used when their weights are available locally, and embedded defaults that run offline
with weights shipped inside registry packages (silero-vad, a local pyannote segmentation model
plus resemblyzer, sidecar transcripts with pocketsphinx alignment).
"""
