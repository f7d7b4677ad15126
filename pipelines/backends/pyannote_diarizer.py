"""Diarization with a pyannote.audio pipeline (the field's standard), from local weights.

``PyannoteDiarizerConfig.pipeline`` is a local pipeline folder holding ``config.yaml`` (the
``DIR/pyannote-diarization`` of ``--model-dir``, see :mod:`.model_dir`) or, where the Hugging Face
hub is reachable or its cache is filled, a hub id such as
``pyannote/speaker-diarization-community-1``. pyannote.audio and torch are imported when the
diarizer is built, so importing this module is cheap.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from microturn.pipelines.backends.base import SAMPLE_RATE, Region, SpeakerCount, Turn, validate_wave
from microturn.schemas.config import validate

if TYPE_CHECKING:
    from pyannote.core import Segment
    from pyannote.core.utils.types import Label, TrackName

# A hub id is "owner/name": exactly one slash, no path-like prefix.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, kw_only=True)
class PyannoteDiarizerConfig:
    """How to build a :class:`PyannoteDiarizer`.

    Attributes:
        pipeline: local folder with ``config.yaml`` (or the ``config.yaml`` itself), or a hub id.
        device: torch device for the pipeline (``cpu``, ``cuda``, ``cuda:1``).
        token: Hugging Face token, only used when ``pipeline`` is a hub id.
        cache_dir: Hugging Face cache folder, only used when ``pipeline`` is a hub id.
        telemetry: pyannote.audio 4 sends usage metrics to otel.pyannote.ai unless told not to;
            False (the default) switches them off for this process (``PYANNOTE_METRICS_ENABLED``).
    """

    pipeline: str
    device: str = "cpu"
    token: str | None = None
    cache_dir: str | None = None
    telemetry: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.pipeline, (str, os.PathLike)) or not str(self.pipeline):
            raise TypeError(
                "PyannoteDiarizerConfig.pipeline must be a local pipeline folder (--model-dir "
                f"DIR/pyannote-diarization) or a hub id, got {self.pipeline!r}"
            )
        object.__setattr__(self, "pipeline", str(self.pipeline))
        validate(self)  # types: token and cache_dir strings or None, telemetry a bool
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")


class PyannoteDiarizer:
    """:class:`~.base.Diarizer` running a pyannote.audio speaker-diarization pipeline.

    Turns keep pyannote's overlap (two speakers may talk at once); speakers are relabelled
    ``SPEAKER_00``, ``SPEAKER_01``, ... in order of first appearance. The ``speech`` regions of
    the caller are not used: the pipeline runs its own segmentation model.
    """

    name = "pyannote"

    def __init__(self, config: PyannoteDiarizerConfig) -> None:
        if not isinstance(config, PyannoteDiarizerConfig):
            raise TypeError(f"expected a PyannoteDiarizerConfig, got {type(config).__name__}")
        self.config = config
        if not config.telemetry:
            disable_pyannote_telemetry()
        import torch

        self._pipeline = load_pyannote_pipeline(
            config.pipeline, token=config.token, cache_dir=config.cache_dir
        )
        self._pipeline.to(torch.device(config.device))

    def __call__(
        self, wave_N: np.ndarray, *, speech: list[Region], count: SpeakerCount
    ) -> list[Turn]:
        """Diarize 16 kHz mono float audio; return turns sorted by start, in integer ms."""
        import torch

        wave_N = validate_wave(wave_N, who=self.name, allow_empty=True)
        if not isinstance(count, SpeakerCount):
            raise TypeError(f"count must be a SpeakerCount, got {type(count).__name__}")
        duration_ms = round(1000 * wave_N.shape[0] / SAMPLE_RATE)
        if duration_ms == 0:
            warnings.warn("pyannote diarizer: empty audio, no turns", stacklevel=2)
            return []
        # In memory, so pyannote neither decodes files nor resamples: [channel=1, samples].
        audio = {"waveform": torch.from_numpy(wave_N)[None, :], "sample_rate": SAMPLE_RATE}
        output = self._pipeline(
            audio,
            num_speakers=count.num_speakers,
            min_speakers=count.min_speakers,
            max_speakers=count.max_speakers,
        )
        return annotation_to_turns(output, duration_ms=duration_ms)


def disable_pyannote_telemetry() -> None:
    """Switch off pyannote.audio's usage metrics (sent to otel.pyannote.ai) for this process."""
    try:
        from pyannote.audio.telemetry import set_telemetry_metrics
    except ImportError:  # pyannote.audio < 4 has no telemetry
        return
    set_telemetry_metrics(False, save_choice_as_default=False)


def load_pyannote_pipeline(
    pipeline: str, *, token: str | None = None, cache_dir: str | None = None
) -> Any:
    """``pyannote.audio.Pipeline.from_pretrained`` with a ``ValueError`` that says what to fix."""
    from pyannote.audio import Pipeline

    path = os.path.expanduser(pipeline)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.yaml")):
            raise ValueError(
                f"pyannote pipeline folder {pipeline!r} has no config.yaml; pass --model-dir DIR "
                "with DIR/pyannote-diarization/config.yaml (see microturn.pipelines.backends.model_dir)"
            )
        source, where = path, "local folder"
    elif os.path.isfile(path):
        source, where = path, "local file"
    elif _HUB_ID.match(pipeline) and not pipeline.startswith((".", "~")):
        source, where = pipeline, "hub id"
    else:
        raise ValueError(
            f"pyannote pipeline {pipeline!r} is neither a local folder with config.yaml nor a hub "
            "id; pass --model-dir DIR with DIR/pyannote-diarization/config.yaml "
            "(see microturn.pipelines.backends.model_dir)"
        )
    try:
        loaded = Pipeline.from_pretrained(source, token=token, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - hub, YAML and checkpoint errors all mean "cannot load"
        hint = (
            " It is no local folder, and the hub is unreachable or offline here: download the "
            "pipeline on a connected machine and pass --model-dir DIR with it in "
            "DIR/pyannote-diarization."
            if where == "hub id"
            else " Check the checkpoints that config.yaml names."
        )
        raise ValueError(
            f"cannot load the pyannote pipeline from {where} {pipeline!r}: "
            f"{type(exc).__name__}: {exc}.{hint}"
        ) from exc
    if loaded is None:  # pyannote returns None when a hub download is refused (gated repository)
        raise ValueError(
            f"pyannote could not fetch {pipeline!r} from the hub (gated or private?); pass --model-dir "
            "DIR with the pipeline in DIR/pyannote-diarization"
        )
    return loaded


def annotation_to_turns(output: Any, *, duration_ms: int | None = None) -> list[Turn]:
    """Turns from a pyannote output: a ``DiarizeOutput`` (pyannote 4) or a bare ``Annotation``.

    Times are rounded to integer ms and clipped to ``[0, duration_ms]``; turns that become empty
    are dropped (with a warning). Speakers are relabelled ``SPEAKER_00``... by first appearance.
    Overlapping turns are kept.
    """
    from pyannote.core import Annotation

    annotation = getattr(output, "speaker_diarization", output)
    if not isinstance(annotation, Annotation):
        raise TypeError(
            "expected a pyannote DiarizeOutput or Annotation, got " + type(output).__name__
        )
    # pyannote annotates itertracks() as yielding 2- or 3-tuples whatever yield_label says;
    # with yield_label=True it always yields (segment, track, label).
    tracks = cast("Iterator[tuple[Segment, TrackName, Label]]", annotation.itertracks(yield_label=True))
    raw = []
    for segment, _track, label in tracks:
        start_ms = max(0, round(segment.start * 1000))
        end_ms = round(segment.end * 1000)
        if duration_ms is not None:
            end_ms = min(end_ms, duration_ms)
        raw.append((start_ms, end_ms, str(label)))
    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    names: dict[str, str] = {}
    turns, dropped = [], 0
    for start_ms, end_ms, label in raw:
        if end_ms <= start_ms:
            dropped += 1  # shorter than 1 ms after rounding, or entirely past the media end
            continue
        speaker = names.setdefault(label, f"SPEAKER_{len(names):02d}")
        turns.append(Turn(speaker=speaker, start_ms=start_ms, end_ms=end_ms))
    if dropped:
        warnings.warn(
            f"pyannote diarizer: dropped {dropped} turn(s) that are empty in whole milliseconds "
            "or lie past the end of the audio",
            stacklevel=2,
        )
    return turns
