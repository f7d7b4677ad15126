"""Building the backends an ingest run asked for, with the settings of its config. Imports are
lazy: a run that uses the embedded defaults never imports whisperx, and one that uses pyannote
never builds resemblyzer."""

from __future__ import annotations

from microturn.pipelines.backends.base import Diarizer, Transcriber, VoiceActivity
from microturn.pipelines.backends.configs import EmbeddedDiarizerConfig, PocketsphinxAlignerConfig, SileroVadConfig


def make_vad(config: SileroVadConfig | None = None) -> VoiceActivity:
    """The silero VAD with ``config`` (None: its defaults)."""
    from microturn.pipelines.backends.silero import SileroVad

    return SileroVad(config or SileroVadConfig())


def make_diarizer(kind: str, model_dir: str | None, *,
                  embedded: EmbeddedDiarizerConfig | None = None) -> Diarizer:
    """The diarizer ``kind`` (``embedded`` with ``embedded`` settings, or ``pyannote`` from
    ``model_dir``)."""
    if kind == "embedded":
        from microturn.pipelines.backends.embedded_diarizer import EmbeddedDiarizer

        return EmbeddedDiarizer(embedded or EmbeddedDiarizerConfig())
    if embedded is not None:
        raise ValueError(f"embedded diarizer settings were given for diarizer {kind!r}")
    if kind == "pyannote":
        from microturn.pipelines.backends.model_dir import pyannote_pipeline_dir
        from microturn.pipelines.backends.pyannote_diarizer import PyannoteDiarizer, PyannoteDiarizerConfig

        return PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=pyannote_pipeline_dir(model_dir)))
    raise ValueError(f"unknown diarizer {kind!r}; choose embedded or pyannote")


def make_transcriber(kind: str, model_dir: str | None, language: str, *,
                     aligner: PocketsphinxAlignerConfig | None = None) -> Transcriber | None:
    """The transcriber ``kind`` (``sidecar``: pocketsphinx with ``aligner`` settings;
    ``whisperx`` from ``model_dir``; ``none``: None)."""
    if aligner is not None and kind != "sidecar":
        raise ValueError(f"aligner settings were given for transcriber {kind!r}")
    if kind == "none":
        return None
    if kind == "sidecar":
        from microturn.pipelines.backends.align_sphinx import PocketsphinxAligner

        return PocketsphinxAligner(aligner or PocketsphinxAlignerConfig())
    if kind == "whisperx":
        from microturn.pipelines.backends.model_dir import whisperx_config
        from microturn.pipelines.backends.whisperx_backend import WhisperxTranscriber

        return WhisperxTranscriber(whisperx_config(model_dir, language=language))
    raise ValueError(f"unknown transcriber {kind!r}; choose sidecar, whisperx or none")
