"""Configuration of the ingest pipeline (one keyword-only dataclass; TOML-loadable)."""

from __future__ import annotations

from dataclasses import dataclass

from microturn.pipelines.backends.base import SpeakerCount
from microturn.pipelines.config_io import check_numbers
from microturn.pipelines.ingest.channels import LAYOUTS

DIARIZERS = ("embedded", "pyannote")
TRANSCRIBERS = ("sidecar", "whisperx", "none")


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
        video_max_side: normalised video is scaled down when a side exceeds this many pixels.
        language: transcript language (used by the whisperx backend).
        table_shards: Parquet files per table (1 keeps small tables in one file).
    """

    inputs: tuple[str, ...]
    output: str
    diarizer: str = "embedded"
    transcriber: str = "sidecar"
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    model_dir: str | None = None
    license_manifest: str | None = None
    max_duration_s: float = 4 * 3600.0
    channel_layout: str = "auto"
    video_max_side: int = 1280
    language: str = "en"
    table_shards: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)  # integers where integers belong, no inf / nan
        if not self.inputs:
            raise ValueError("give at least one --input pattern")
        if not self.output:
            raise ValueError("--output is required")
        if self.diarizer not in DIARIZERS:
            raise ValueError(f"--diarizer must be one of {DIARIZERS}, got {self.diarizer!r}")
        if self.transcriber not in TRANSCRIBERS:
            raise ValueError(f"--transcriber must be one of {TRANSCRIBERS}, got {self.transcriber!r}")
        if self.channel_layout not in LAYOUTS:
            raise ValueError(f"--channel-layout must be one of {LAYOUTS}, got {self.channel_layout!r}")
        if not self.max_duration_s > 0:
            raise ValueError(f"--max-duration-s must be positive, got {self.max_duration_s}")
        if not self.table_shards >= 1:
            raise ValueError(f"--table-shards must be at least 1, got {self.table_shards}")
        if not self.video_max_side >= 40:
            raise ValueError(f"--video-max-side must be at least 40, got {self.video_max_side}")
        if (self.diarizer == "pyannote" or self.transcriber == "whisperx") and not self.model_dir:
            raise ValueError(
                f"--diarizer {self.diarizer} / --transcriber {self.transcriber} need --model-dir "
                "pointing at local weights (see `microturn ingest --help`)"
            )
        self.speaker_count  # validates the count constraints

    @property
    def speaker_count(self) -> SpeakerCount:
        return SpeakerCount(num_speakers=self.num_speakers, min_speakers=self.min_speakers,
                            max_speakers=self.max_speakers)
