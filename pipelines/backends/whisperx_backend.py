"""Timed words with whisperx: faster-whisper ASR, wav2vec2 forced alignment, speaker assignment.

Everything is read from local folders (see :mod:`.model_dir` for the ``--model-dir`` layout):

- ASR: ``whisperx.load_model`` on a CTranslate2 Whisper folder with ``tokenizer.json`` (without
  it faster-whisper downloads one), voice activity from the pyannote segmentation model that
  ships inside the whisperx wheel (``vad_method="pyannote"``; silero would go through
  ``torch.hub`` and download);
- alignment: ``whisperx.load_align_model`` on a Hugging Face Wav2Vec2ForCTC folder, then
  ``whisperx.align``, which splits sentences with NLTK's ``punkt_tab`` and downloads it when it is
  missing, so the folder holding it is put on ``nltk.data.path`` and checked up front;
- speakers: ``whisperx.assign_word_speakers`` against the diarization turns.

With a sidecar transcript the ASR step is skipped and its utterances are aligned instead. whisperx,
faster-whisper, torch and nltk are imported when the transcriber is built.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microturn.pipelines.backends.base import SAMPLE_RATE, Turn, Utterance, Word, validate_wave
from microturn.schemas.config import setting, validate
from microturn.synth.word_timing import split_span


@dataclass(frozen=True, kw_only=True)
class WhisperxConfig:
    """How to build a :class:`WhisperxTranscriber`.

    Attributes:
        whisper_model: CTranslate2 Whisper folder (``DIR/whisper``), or a faster-whisper model
            name / hub id already in the Hugging Face cache (with ``local_files_only``).
        align_model: Hugging Face Wav2Vec2ForCTC folder (``DIR/align-<lang>``); None skips
            forced alignment and spreads each segment's words over it by length (score None).
        language: transcript language code (``en``, ``fr``, ...); also picks the punkt model.
        compute_type: CTranslate2 compute type; None picks float32 on CPU, float16 on CUDA.
        batch_size: ASR batch size (30 s windows per forward pass).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        nltk_data: NLTK data root holding ``tokenizers/punkt_tab/<language>/`` (``DIR/nltk_data``);
            None relies on ``nltk.data.path`` (``NLTK_DATA``, ``~/nltk_data``, ...).
        threads: CPU threads of CTranslate2; 0 uses all cores, capped at 4 (whisperx's default).
        asr_options: overrides of whisperx's ASR options (``beam_size``, ``initial_prompt``, ...).
        vad_options: overrides of whisperx's VAD options (``vad_onset``, ``vad_offset``, ...).
        local_files_only: never download (hub ids resolve from the local cache only).
        download_root: Hugging Face cache folder for hub ids.
        fill_nearest_speaker: give words that no turn overlaps the speaker of the nearest turn
            (whisperx's ``fill_nearest``); False leaves them None for the caller to decide.
        interpolate_method: how whisperx times words with no alignable character (``nearest``,
            ``linear``, ``ignore``).
        telemetry: False (default) switches off pyannote.audio's usage metrics, which the
            whisperx VAD would otherwise send to otel.pyannote.ai.
    """

    whisper_model: str
    align_model: str | None
    language: str = "en"
    compute_type: str | None = None
    batch_size: int = setting(8, ge=1)
    device: str = "cpu"
    nltk_data: str | None = None
    threads: int = setting(0, ge=0)  # 0: automatic
    asr_options: Mapping[str, Any] | None = field(default=None)
    vad_options: Mapping[str, Any] | None = field(default=None)
    local_files_only: bool = True
    download_root: str | None = None
    fill_nearest_speaker: bool = False
    interpolate_method: str = setting("nearest", choices=("nearest", "linear", "ignore"))
    telemetry: bool = False

    def __post_init__(self) -> None:
        for name in ("whisper_model", "align_model", "nltk_data", "download_root"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if not isinstance(self.whisper_model, str) or not self.whisper_model:
            raise TypeError(
                "WhisperxConfig.whisper_model must be a CTranslate2 Whisper folder (--model-dir "
                f"DIR/whisper), got {self.whisper_model!r}"
            )
        if self.align_model is not None and (not isinstance(self.align_model, str) or not self.align_model):
            raise TypeError(
                "WhisperxConfig.align_model must be a wav2vec2 folder (--model-dir DIR/align-<lang>) "
                f"or None, got {self.align_model!r}"
            )
        validate(self)
        from whisperx.utils import LANGUAGES  # a plain dict; whisperx.utils imports no torch

        if self.language not in LANGUAGES:
            raise ValueError(
                f"language must be a Whisper language code ({', '.join(sorted(LANGUAGES))}), "
                f"got {self.language!r}"
            )
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")


class WhisperxTranscriber:
    """:class:`~.base.Transcriber` built on whisperx.

    Words are in integer ms, inside the segment (ASR window or sidecar utterance) they come from
    and inside the media; ``score`` is the aligner's mean character probability in [0, 1], None
    where a word's time was interpolated. Speakers come from the diarization ``turns`` (the turn
    overlapping a word most); without turns, from the sidecar utterance, if it names one.

    The Whisper model is loaded on first use, so a run that only aligns sidecars never loads it;
    its files are checked when the transcriber is built.
    """

    name = "whisperx"

    def __init__(self, config: WhisperxConfig) -> None:
        if not isinstance(config, WhisperxConfig):
            raise TypeError(f"expected a WhisperxConfig, got {type(config).__name__}")
        self.config = config
        if not config.telemetry:
            from microturn.pipelines.backends.pyannote_diarizer import disable_pyannote_telemetry

            disable_pyannote_telemetry()
        self._device, self._device_index = _split_device(config.device)
        self._whisper_path = _resolve_whisper(config)
        self._asr: Any = None
        self._asr_lock = threading.Lock()
        self._align_model: Any = None
        self._align_metadata: dict[str, Any] | None = None
        align_model = config.align_model
        if align_model is None:
            warnings.warn(
                "whisperx transcriber without an align model: word times are spread evenly over "
                "each segment (score None); pass --model-dir DIR with DIR/align-<lang>",
                stacklevel=2,
            )
        else:
            _use_punkt(config.nltk_data, config.language)
            self._align_model, self._align_metadata = _load_align_model(config, align_model)

    # -- the Transcriber interface ------------------------------------------------------------

    def __call__(
        self, wave_N: np.ndarray, *, utterances: list[Utterance] | None, turns: list[Turn]
    ) -> list[Word]:
        """Timed words for 16 kHz mono float audio: sidecar ``utterances`` aligned, else ASR."""
        wave_N = validate_wave(wave_N, who=self.name, allow_empty=True)
        turns = list(turns or [])
        for t in turns:
            if not isinstance(t, Turn):
                raise TypeError(f"turns must be Turn objects, got {type(t).__name__}")
        media_ms = round(1000 * wave_N.shape[0] / SAMPLE_RATE)
        if media_ms == 0:
            warnings.warn("whisperx transcriber: empty audio, no words", stacklevel=2)
            return []
        if utterances is None:
            segments = self._transcribe(wave_N, media_ms)
        else:
            segments = _sidecar_segments(utterances, media_ms)
        aligned = [self._align_segment(wave_N, seg) for seg in segments]
        _assign_speakers(aligned, segments, turns, fill_nearest=self.config.fill_nearest_speaker)
        words: list[Word] = []
        dropped = 0
        for seg, seg_words in zip(segments, aligned, strict=True):
            lo, hi = seg["start_ms"], min(seg["end_ms"], media_ms)
            for w in seg_words:
                word = _to_word(w, lo, hi)
                if word is None:
                    dropped += 1
                else:
                    words.append(word)
        if dropped:
            warnings.warn(
                f"whisperx transcriber: dropped {dropped} word(s) with no room inside their segment",
                stacklevel=2,
            )
        words.sort(key=lambda w: (w.start_ms, w.end_ms))
        return words

    # -- ASR ----------------------------------------------------------------------------------

    def _load_asr(self) -> Any:
        with self._asr_lock:
            if self._asr is None:
                import whisperx

                cfg = self.config
                compute_type = cfg.compute_type or ("float32" if self._device == "cpu" else "float16")
                # CTranslate2 threads: whisperx uses 4; more than the cores only adds contention.
                threads = cfg.threads or max(1, min(4, os.cpu_count() or 1))
                self._asr = whisperx.load_model(
                    self._whisper_path,
                    self._device,
                    device_index=self._device_index,
                    compute_type=compute_type,
                    asr_options=dict(cfg.asr_options) if cfg.asr_options else None,
                    language=cfg.language,
                    vad_method="pyannote",  # its weights ship in the whisperx wheel; silero downloads
                    vad_options=dict(cfg.vad_options) if cfg.vad_options else None,
                    task="transcribe",
                    download_root=cfg.download_root,
                    local_files_only=cfg.local_files_only,
                    threads=threads,
                )
            return self._asr

    def _transcribe(self, wave_N: np.ndarray, media_ms: int) -> list[dict[str, Any]]:
        asr = self._load_asr()
        result = asr.transcribe(wave_N, batch_size=self.config.batch_size, language=self.config.language)
        segments = []
        for seg in result.get("segments", []):
            text = str(seg.get("text", "")).strip()
            start_ms = max(0, round(float(seg["start"]) * 1000))
            end_ms = min(media_ms, round(float(seg["end"]) * 1000))
            if text and end_ms > start_ms:
                segments.append({"start_ms": start_ms, "end_ms": end_ms, "text": text, "speaker": None})
        return segments

    # -- alignment ------------------------------------------------------------------------------

    def _align_segment(self, wave_N: np.ndarray, seg: dict[str, Any]) -> list[dict[str, Any]]:
        """whisperx-style word dicts (``word``, ``start``/``end`` in s, ``score``) for a segment."""
        if self._align_model is None:
            return _spread_words(seg)
        import whisperx

        result = whisperx.align(
            [{"start": seg["start_ms"] / 1000, "end": seg["end_ms"] / 1000, "text": seg["text"]}],
            self._align_model,
            self._align_metadata,
            wave_N,
            self.config.device,
            interpolate_method=self.config.interpolate_method,
            return_char_alignments=False,
        )
        words = [dict(w) for s in result.get("segments", []) for w in s.get("words", [])]
        if not words:
            # whisperx gives up on a segment (nothing alignable, or more characters than frames)
            # and returns it without words; keep its words with interpolated times instead.
            warnings.warn(
                f"whisperx could not align {seg['text'][:40]!r} "
                f"[{seg['start_ms']}, {seg['end_ms']}) ms; its words are spread evenly over it",
                stacklevel=3,
            )
            return _spread_words(seg)
        _fill_missing_times(words, seg["start_ms"] / 1000, seg["end_ms"] / 1000)
        return words


# -- loading ------------------------------------------------------------------------------------


def _split_device(device: str) -> tuple[str, int]:
    """``cuda:1`` -> (``cuda``, 1): CTranslate2 takes the index separately."""
    kind, _, index = device.partition(":")
    return kind, int(index) if index else 0


def _resolve_whisper(config: WhisperxConfig) -> str:
    """A local CTranslate2 folder for ``config.whisper_model``, checked, without any download."""
    from microturn.pipelines.backends.model_dir import missing_whisper_files

    name = config.whisper_model
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        missing = missing_whisper_files(Path(path))
        if missing:
            raise ValueError(
                f"Whisper folder {name!r} is incomplete; missing:\n"
                + "\n".join(f"  - {m}" for m in missing)
                + "\npass --model-dir DIR with a CTranslate2 Whisper model in DIR/whisper"
            )
        return path
    # Not a folder: a faster-whisper size ("large-v3") or hub id ("owner/name") may sit in the
    # Hugging Face cache; anything else that looks like a path simply does not exist.
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith("."):
        raise ValueError(
            f"Whisper folder {name!r} does not exist; pass --model-dir DIR with a CTranslate2 "
            "Whisper model in DIR/whisper"
        )
    from faster_whisper.utils import download_model

    try:
        # With local_files_only this only looks in the Hugging Face cache.
        return download_model(
            name, local_files_only=config.local_files_only, cache_dir=config.download_root
        )
    except Exception as exc:  # noqa: BLE001 - unknown size, not cached, hub unreachable
        raise ValueError(
            f"cannot find the Whisper model {name!r} locally ({type(exc).__name__}: {exc}); "
            "pass --model-dir DIR with a CTranslate2 Whisper model in DIR/whisper"
        ) from exc


def _use_punkt(nltk_data: str | None, language: str) -> None:
    """Put ``nltk_data`` first on ``nltk.data.path`` and check punkt_tab is there.

    whisperx.align calls ``nltk.download('punkt_tab')`` when the model is missing; failing here
    with a clear message beats a network error (or a hang) in the middle of a run.
    """
    import nltk
    from nltk.tokenize.punkt import PunktTokenizer

    from microturn.pipelines.backends.model_dir import punkt_language

    if nltk_data is not None:
        root = os.path.expanduser(nltk_data)
        if not os.path.isdir(root):
            raise ValueError(
                f"nltk_data folder {nltk_data!r} does not exist; pass --model-dir DIR with "
                "DIR/nltk_data/tokenizers/punkt_tab/ "
                "(python -m nltk.downloader -d DIR/nltk_data punkt_tab)"
            )
        # nltk reads NLTK_DATA only when it is imported, so the search path is edited directly.
        if root not in nltk.data.path:
            nltk.data.path.insert(0, root)
    lang = punkt_language(language)
    try:
        # Loading it reads all four files; a partial copy would otherwise fail inside
        # whisperx.align, which answers any LookupError with a download.
        PunktTokenizer(lang)
    except LookupError as exc:
        raise ValueError(
            f"NLTK punkt_tab/{lang} is missing or incomplete and whisperx.align would try to "
            "download it; pass --model-dir DIR with DIR/nltk_data/tokenizers/punkt_tab/"
            f"{lang}/ (python -m nltk.downloader -d DIR/nltk_data punkt_tab on a connected machine)"
        ) from exc


def _load_align_model(config: WhisperxConfig, name: str) -> tuple[Any, dict[str, Any]]:
    """``whisperx.load_align_model`` on a local wav2vec2 folder (or a cached hub id)."""
    import whisperx

    path = os.path.expanduser(name)
    if os.path.isdir(path):
        from microturn.pipelines.backends.model_dir import missing_align_files

        missing = missing_align_files(Path(path))
        if missing:
            raise ValueError(
                f"align model folder {name!r} is incomplete; missing:\n"
                + "\n".join(f"  - {m}" for m in missing)
                + f"\npass --model-dir DIR with a wav2vec2 CTC model in DIR/align-{config.language}"
            )
        name = path
    else:
        import torchaudio

        if name in torchaudio.pipelines.__all__ and config.local_files_only:
            raise ValueError(
                f"align model {name!r} is a torchaudio bundle, which downloads its weights; pass "
                f"--model-dir DIR with a Hugging Face wav2vec2 folder in DIR/align-{config.language}"
            )
    try:
        return whisperx.load_align_model(
            config.language, config.device, model_name=name, model_cache_only=config.local_files_only
        )
    except Exception as exc:  # noqa: BLE001 - whisperx wraps everything in a generic ValueError
        raise ValueError(
            f"cannot load the align model {config.align_model!r} ({type(exc).__name__}: {exc}); "
            "pass --model-dir DIR with a Hugging Face Wav2Vec2ForCTC folder in "
            f"DIR/align-{config.language}"
        ) from exc


# -- segments and words -------------------------------------------------------------------------


def _sidecar_segments(utterances: list[Utterance], media_ms: int) -> list[dict[str, Any]]:
    """Sidecar lines as segments, clipped to the media; unusable lines are skipped, with a warning."""
    segments, skipped = [], 0
    for u in utterances:
        if not isinstance(u, Utterance):
            raise TypeError(f"utterances must be Utterance objects, got {type(u).__name__}")
        start_ms, end_ms = max(0, int(u.start_ms)), min(media_ms, int(u.end_ms))
        text = u.text.strip()
        if not text or end_ms <= start_ms:
            skipped += 1
            continue
        segments.append({"start_ms": start_ms, "end_ms": end_ms, "text": text, "speaker": u.speaker})
    if skipped:
        warnings.warn(
            f"whisperx transcriber: skipped {skipped} sidecar line(s) that are empty or lie "
            f"outside the media (0-{media_ms} ms)",
            stacklevel=3,
        )
    return segments


def _spread_words(seg: dict[str, Any]) -> list[dict[str, Any]]:
    """Words of a segment spread over its span in proportion to their length (no score)."""
    tokens = seg["text"].split()
    # Each word is followed by a gap of one character's share, so short words still get some
    # time: the span is split over (word, gap) pairs, in whole ms, and a word takes its part.
    weights = [w for t in tokens for w in (len(t), 1)]
    bounds = split_span(seg["start_ms"], seg["end_ms"], weights, rounding="nearest", min_part=0)
    return [
        {"word": token, "start": bounds[2 * k] / 1000, "end": bounds[2 * k + 1] / 1000}
        for k, token in enumerate(tokens)
    ]


def _fill_missing_times(words: list[dict[str, Any]], seg_start: float, seg_end: float) -> None:
    """Time the words whisperx left untimed: each run of them shares the gap between its timed
    neighbours (or the segment's edges) evenly; their score is dropped."""
    timed = [_finite(w.get("start")) and _finite(w.get("end")) for w in words]
    i = 0
    while i < len(words):
        if timed[i]:
            i += 1
            continue
        j = i
        while j < len(words) and not timed[j]:
            j += 1
        lo = float(words[i - 1]["end"]) if i > 0 else seg_start
        hi = max(lo, float(words[j]["start"]) if j < len(words) else seg_end)
        step = (hi - lo) / (j - i)
        for k in range(i, j):
            words[k]["start"], words[k]["end"] = lo + (k - i) * step, lo + (k - i + 1) * step
            words[k].pop("score", None)
        i = j


def _assign_speakers(
    aligned: list[list[dict[str, Any]]],
    segments: list[dict[str, Any]],
    turns: list[Turn],
    *,
    fill_nearest: bool,
) -> None:
    """Set ``speaker`` on every word dict: from the turns via whisperx, else from the segment."""
    if not turns:
        for seg, words in zip(segments, aligned, strict=True):
            for w in words:
                w["speaker"] = seg["speaker"]
        return
    import pandas as pd
    import whisperx

    diarize_df = pd.DataFrame(
        {
            "start": [t.start_ms / 1000 for t in turns],
            "end": [t.end_ms / 1000 for t in turns],
            "speaker": [t.speaker for t in turns],
        }
    )
    result = {
        "segments": [
            {"start": s["start_ms"] / 1000, "end": s["end_ms"] / 1000, "text": s["text"], "words": words}
            for s, words in zip(segments, aligned, strict=True)
        ]
    }
    whisperx.assign_word_speakers(diarize_df, result, fill_nearest=fill_nearest)
    for words in aligned:
        for w in words:
            w.setdefault("speaker", None)


def _to_word(w: dict[str, Any], lo_ms: int, hi_ms: int) -> Word | None:
    """A whisperx word dict as a :class:`Word` inside ``[lo_ms, hi_ms]``; None when it cannot fit."""
    text = str(w.get("word", "")).strip()
    if not text or hi_ms - lo_ms < 1:
        return None
    start_ms = min(max(round(float(w["start"]) * 1000), lo_ms), hi_ms)
    end_ms = min(max(round(float(w["end"]) * 1000), lo_ms), hi_ms)
    if end_ms <= start_ms:  # a 0-length word after rounding gets the 1 ms it needs
        if start_ms < hi_ms:
            end_ms = start_ms + 1
        else:
            start_ms, end_ms = hi_ms - 1, hi_ms
    score = w.get("score")
    score = min(1.0, max(0.0, float(score))) if score is not None and _finite(score) else None
    speaker = w.get("speaker")
    return Word(text=text, start_ms=start_ms, end_ms=end_ms, score=score,
                speaker=None if speaker is None else str(speaker))


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
