"""Configuration of the ingest pipeline (one keyword-only dataclass; TOML-loadable).

A named config (``--config ingest.toml``) sets any field but ``inputs`` and ``output`` at its top
level, and the embedded backends' settings in tables of their own::

    diarizer = "embedded"
    max_duration_s = 7200

    [vad]                  # SileroVadConfig
    threshold = 0.6

    [embedded_diarizer]    # EmbeddedDiarizerConfig
    cluster_threshold = 0.28

    [aligner]              # PocketsphinxAlignerConfig (transcriber = "sidecar")
    pad_ms = 100
"""

from __future__ import annotations

from dataclasses import dataclass

from microturn.pipelines.backends.base import SpeakerCount
from microturn.pipelines.backends.configs import EmbeddedDiarizerConfig, PocketsphinxAlignerConfig, SileroVadConfig
from microturn.pipelines.ingest.names import DIARIZERS, LAYOUTS, TRANSCRIBERS
from microturn.schemas.config import setting, validate

# Fields a named config may not set: the command line gives them.
CLI_ONLY = ("inputs", "output")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Everything the ingest job needs besides Beam's own pipeline options.

    Attributes:
        inputs: file patterns (local paths or any Beam filesystem URL, globs allowed).
        output: the output directory OUT (local or any Beam filesystem URL).
        diarizer: ``embedded`` (offline default) or ``pyannote`` (needs a pipeline in model_dir).
        transcriber: ``sidecar`` (align sidecar transcripts with pocketsphinx), ``whisperx``
            (ASR + wav2vec2 alignment; aligns sidecars when present), or ``none``.
        num_speakers, min_speakers, max_speakers: speaker count constraints for diarization.
        model_dir: folder of local model weights for the standard backends
            (see :mod:`microturn.pipelines.backends.model_dir`).
        license_manifest: CSV with columns ``uri,license,origin``.
        max_duration_s: inputs longer than this are rejected (default 4 h).
        channel_layout: ``auto`` (detect one speaker per channel), ``mixed`` or ``per_speaker``.
        video_max_side: normalised video is scaled down when a side exceeds this many pixels;
            at least 40, one video patch.
        language: transcript language (used by the whisperx backend).
        table_shards: Parquet files per table (1 keeps small tables in one file).
        vad: settings of the silero VAD (TOML table ``[vad]``); None: its defaults.
        embedded_diarizer: settings of the embedded diarizer (``[embedded_diarizer]``), only
            with ``diarizer = "embedded"``; None: its defaults.
        aligner: settings of the pocketsphinx aligner (``[aligner]``), only with
            ``transcriber = "sidecar"``; None: its defaults.
    """

    inputs: tuple[str, ...] = setting(flag="--input")
    output: str = setting(flag="--output")
    diarizer: str = setting("embedded", choices=DIARIZERS, flag="--diarizer")
    transcriber: str = setting("sidecar", choices=TRANSCRIBERS, flag="--transcriber")
    # Counts are checked by SpeakerCount, whose messages every diarizer shares.
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    model_dir: str | None = None
    license_manifest: str | None = None
    max_duration_s: float = setting(4 * 3600.0, gt=0, flag="--max-duration-s")
    channel_layout: str = setting("auto", choices=LAYOUTS, flag="--channel-layout")
    video_max_side: int = setting(1280, ge=40, flag="--video-max-side")
    language: str = "en"
    table_shards: int = setting(1, ge=1, flag="--table-shards")
    vad: SileroVadConfig | None = None
    embedded_diarizer: EmbeddedDiarizerConfig | None = None
    aligner: PocketsphinxAlignerConfig | None = None

    def __post_init__(self) -> None:
        validate(self)
        if not self.inputs:
            raise ValueError("give at least one --input pattern")
        if not self.output:
            raise ValueError("--output is required")
        if (self.diarizer == "pyannote" or self.transcriber == "whisperx") and not self.model_dir:
            raise ValueError(
                f"--diarizer {self.diarizer} / --transcriber {self.transcriber} need --model-dir "
                "pointing at local weights (see `microturn ingest --help`)"
            )
        # Settings for a backend the run does not build would be silently ignored.
        if self.embedded_diarizer is not None and self.diarizer != "embedded":
            raise ValueError(f"[embedded_diarizer] settings are for diarizer = 'embedded'; this run uses "
                             f"diarizer = {self.diarizer!r}: remove the table or the --diarizer flag")
        if self.aligner is not None and self.transcriber != "sidecar":
            raise ValueError(f"[aligner] settings are for transcriber = 'sidecar'; this run uses "
                             f"transcriber = {self.transcriber!r}: remove the table or the --transcriber flag")
        _ = self.speaker_count  # validates the count constraints

    @property
    def speaker_count(self) -> SpeakerCount:
        return SpeakerCount(num_speakers=self.num_speakers, min_speakers=self.min_speakers,
                            max_speakers=self.max_speakers)
