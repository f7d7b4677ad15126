"""Building the backends an ingest run asked for. Imports are lazy: a run that uses the
embedded defaults never imports whisperx, and one that uses pyannote never builds resemblyzer."""

from __future__ import annotations

from microturn.pipelines.backends.base import Diarizer, Transcriber, VoiceActivity


def make_vad() -> VoiceActivity:
    from microturn.pipelines.backends.silero import SileroVad, SileroVadConfig

    return SileroVad(SileroVadConfig())


def make_diarizer(kind: str, model_dir: str | None) -> Diarizer:
    if kind == "embedded":
        from microturn.pipelines.backends.embedded_diarizer import (
            EmbeddedDiarizer, EmbeddedDiarizerConfig)

        return EmbeddedDiarizer(EmbeddedDiarizerConfig())
    if kind == "pyannote":
        from microturn.pipelines.backends.model_dir import pyannote_pipeline_dir
        from microturn.pipelines.backends.pyannote_diarizer import (
            PyannoteDiarizer, PyannoteDiarizerConfig)

        return PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=pyannote_pipeline_dir(model_dir)))
    raise ValueError(f"unknown diarizer {kind!r}; choose embedded or pyannote")


def make_transcriber(kind: str, model_dir: str | None, language: str) -> Transcriber | None:
    if kind == "none":
        return None
    if kind == "sidecar":
        from microturn.pipelines.backends.align_sphinx import (
            PocketsphinxAligner, PocketsphinxAlignerConfig)

        return PocketsphinxAligner(PocketsphinxAlignerConfig())
    if kind == "whisperx":
        from microturn.pipelines.backends.model_dir import whisperx_config
        from microturn.pipelines.backends.whisperx_backend import WhisperxTranscriber

        return WhisperxTranscriber(whisperx_config(model_dir, language=language))
    raise ValueError(f"unknown transcriber {kind!r}; choose sidecar, whisperx or none")
