"""The layout of ``--model-dir DIR``: local weights for the standard (pyannote / whisperx) backends.

Machines that run ingest are not expected to reach a model hub, so the standard backends read
every file from one local folder::

    DIR/
      pyannote-diarization/          a pyannote.audio pipeline (pyannote.audio 4)
        config.yaml                  pipeline name, params; "$model/<sub>" names a subfolder
        segmentation/pytorch_model.bin
        embedding/pytorch_model.bin
        plda/xvec_transform.npz, plda/plda.npz      (VBx clustering only)
      whisper/                       a CTranslate2 Whisper model (faster-whisper format)
        model.bin, config.json, vocabulary.json (or vocabulary.txt)
        tokenizer.json               faster-whisper downloads one from the hub when it is missing
        preprocessor_config.json     number of mel bins (128 for large-v3); 80 when missing
      align-<lang>/                  a Hugging Face Wav2Vec2ForCTC + Wav2Vec2Processor, per language
        config.json, model.safetensors (or pytorch_model.bin)
        vocab.json, preprocessor_config.json (tokenizer_config.json, special_tokens_map.json)
      nltk_data/                     NLTK data root; whisperx.align splits sentences with punkt_tab
        tokenizers/punkt_tab/<language>/   collocations.tab, sent_starters.txt,
                                           abbrev_types.txt, ortho_context.tab

``<lang>`` is the transcript language code (``en``, ``fr``, ...); ``<language>`` is NLTK's name
for it (``english``, ``french``; languages without a punkt model use ``english``, as whisperx
does).

Filling the folder on a machine that has network access (the gated pyannote repository needs a
Hugging Face token with its conditions accepted)::

    hf download pyannote/speaker-diarization-community-1 --local-dir DIR/pyannote-diarization
    hf download Systran/faster-whisper-large-v3 --local-dir DIR/whisper
    hf download facebook/wav2vec2-base-960h --local-dir DIR/align-en
    python -m nltk.downloader -d DIR/nltk_data punkt_tab

Only local directories are supported (not ``gs://`` or other Beam filesystem URLs): the
libraries underneath open files by path. Every resolver below raises ``ValueError`` listing all
that is missing, so one run of the command tells the user everything to fetch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: resolving paths should not import the backends
    from microturn.pipelines.backends.pyannote_diarizer import PyannoteDiarizerConfig
    from microturn.pipelines.backends.whisperx_backend import WhisperxConfig

PYANNOTE_SUBDIR = "pyannote-diarization"
WHISPER_SUBDIR = "whisper"
NLTK_SUBDIR = "nltk_data"
ALIGN_PREFIX = "align-"

# Files of one punkt_tab language model, as nltk.tokenize.punkt.load_punkt_params reads them.
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")

_LAYOUT_HINT = (
    "see the layout in the docstring of microturn.pipelines.backends.model_dir "
    "(python -m pydoc microturn.pipelines.backends.model_dir)"
)


def align_subdir(language: str) -> str:
    """Name of the wav2vec2 alignment folder for ``language`` (``align-en`` for ``en``)."""
    return f"{ALIGN_PREFIX}{language}"


def punkt_language(language: str) -> str:
    """NLTK's punkt_tab model name for a language code, falling back to English like whisperx."""
    from whisperx.utils import PUNKT_LANGUAGES  # a plain dict; whisperx.utils imports no torch

    return PUNKT_LANGUAGES.get(language, "english")


def model_root(model_dir: str | os.PathLike[str] | None) -> Path:
    """``model_dir`` as an existing local directory, or a ``ValueError`` saying what to pass."""
    if model_dir is None or str(model_dir) == "":
        raise ValueError(
            "the pyannote / whisperx backends need --model-dir DIR with local weights; "
            + _LAYOUT_HINT
        )
    text = str(model_dir)
    if "://" in text:
        raise ValueError(
            f"--model-dir must be a local directory, got the URL {text!r}: pyannote, "
            "faster-whisper and transformers open model files by path; copy the folder locally"
        )
    root = Path(text).expanduser()
    if not root.exists():
        raise ValueError(f"--model-dir {text!r} does not exist; " + _LAYOUT_HINT)
    if not root.is_dir():
        raise ValueError(f"--model-dir {text!r} is not a directory; " + _LAYOUT_HINT)
    return root


def missing_pyannote_files(pipeline_dir: Path) -> list[str]:
    """What a pyannote pipeline folder lacks: ``config.yaml`` and the subfolders it names."""
    config = pipeline_dir / "config.yaml"
    if not pipeline_dir.is_dir():
        return [f"{config} (a pyannote.audio pipeline folder, e.g. "
                "pyannote/speaker-diarization-community-1)"]
    if not config.is_file():
        return [f"{config} (the pyannote.audio pipeline definition)"]
    import yaml

    try:
        with open(config, encoding="utf-8") as f:
            parsed = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        return [f"{config} is not readable YAML ({exc})"]
    if not isinstance(parsed, dict) or not isinstance(parsed.get("pipeline"), dict):
        return [f"{config} has no 'pipeline:' section naming the pipeline class"]
    missing: list[str] = []
    for key, sub in _model_references(parsed):
        folder = pipeline_dir / sub
        # PLDA folders hold two numpy files; every other "$model/" reference is a Model checkpoint.
        needed = ("xvec_transform.npz", "plda.npz") if key == "plda" else ("pytorch_model.bin",)
        for name in needed:
            if not (folder / name).is_file():
                missing.append(f"{folder / name} (named by {key}: $model/{sub} in config.yaml)")
    return missing


def _model_references(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every ``key: $model/<sub>[@revision]`` in a parsed pipeline config, as (key, sub)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _model_references(v, str(k))
    elif isinstance(node, list):
        for v in node:
            found += _model_references(v, key)
    elif isinstance(node, str) and node.startswith("$model/"):
        found.append((key, node[len("$model/"):].split("@")[0].strip("/")))
    return found


def missing_whisper_files(whisper_dir: Path) -> list[str]:
    """What a CTranslate2 Whisper folder lacks to load without any download."""
    if not whisper_dir.is_dir():
        return [f"{whisper_dir}/ (a CTranslate2 Whisper model: model.bin, config.json, "
                "vocabulary.json, tokenizer.json, preprocessor_config.json; e.g. "
                "Systran/faster-whisper-large-v3)"]
    missing = [
        f"{whisper_dir / name}{why}"
        for name, why in (
            ("model.bin", " (the CTranslate2 weights)"),
            ("config.json", " (the CTranslate2 model config)"),
            ("tokenizer.json", " (without it faster-whisper downloads one from the hub)"),
        )
        if not (whisper_dir / name).is_file()
    ]
    if not any((whisper_dir / v).is_file() for v in ("vocabulary.json", "vocabulary.txt")):
        missing.append(f"{whisper_dir / 'vocabulary.json'} (or vocabulary.txt)")
    return missing


def missing_align_files(align_dir: Path) -> list[str]:
    """What a Hugging Face Wav2Vec2ForCTC + processor folder lacks."""
    if not align_dir.is_dir():
        return [f"{align_dir}/ (a Hugging Face Wav2Vec2ForCTC model with its processor: "
                "config.json, model.safetensors, vocab.json, preprocessor_config.json; e.g. "
                "facebook/wav2vec2-base-960h for English)"]
    missing = [
        str(align_dir / name)
        for name in ("config.json", "preprocessor_config.json", "vocab.json")
        if not (align_dir / name).is_file()
    ]
    if not any((align_dir / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append(f"{align_dir / 'model.safetensors'} (or pytorch_model.bin)")
    return missing


def missing_punkt_files(nltk_dir: Path, language: str) -> list[str]:
    """What an NLTK data root lacks for the punkt_tab model of ``language`` (a code, e.g. en)."""
    lang_dir = nltk_dir / "tokenizers" / "punkt_tab" / punkt_language(language)
    if not lang_dir.is_dir():
        return [f"{lang_dir}/ (NLTK punkt_tab; whisperx.align would try to download it)"]
    return [str(lang_dir / name) for name in PUNKT_FILES if not (lang_dir / name).is_file()]


def _raise_missing(root: Path, purpose: str, missing: list[str]) -> None:
    if missing:
        listing = "\n".join(f"  - {m}" for m in missing)
        raise ValueError(
            f"--model-dir {str(root)!r} is incomplete for {purpose}; missing:\n{listing}\n"
            + _LAYOUT_HINT
        )


def pyannote_pipeline_dir(model_dir: str | os.PathLike[str] | None) -> str:
    """``DIR/pyannote-diarization`` for ``--diarizer pyannote``, checked to be complete."""
    root = model_root(model_dir)
    path = root / PYANNOTE_SUBDIR
    _raise_missing(root, "--diarizer pyannote", missing_pyannote_files(path))
    return str(path)


def whisper_dir(model_dir: str | os.PathLike[str] | None) -> str:
    """``DIR/whisper``, checked to load without downloads; warns when the mel count is implicit."""
    root = model_root(model_dir)
    path = root / WHISPER_SUBDIR
    _raise_missing(root, "the whisperx transcriber", missing_whisper_files(path))
    _warn_without_preprocessor(path)
    return str(path)


def align_dir(model_dir: str | os.PathLike[str] | None, language: str) -> str:
    """``DIR/align-<language>``, checked to hold a wav2vec2 CTC model and its processor."""
    root = model_root(model_dir)
    path = root / align_subdir(language)
    _raise_missing(root, f"word alignment in {language!r}", missing_align_files(path))
    return str(path)


def nltk_data_dir(model_dir: str | os.PathLike[str] | None, language: str) -> str:
    """``DIR/nltk_data``, checked to hold the punkt_tab model whisperx.align uses for ``language``."""
    root = model_root(model_dir)
    path = root / NLTK_SUBDIR
    _raise_missing(root, f"sentence splitting in {language!r}", missing_punkt_files(path, language))
    return str(path)


def _warn_without_preprocessor(path: Path) -> None:
    if not (path / "preprocessor_config.json").is_file():
        warnings.warn(
            f"{path} has no preprocessor_config.json: faster-whisper assumes 80 mel bins, which is "
            "wrong for large-v3 models (128); copy the file from the model's repository",
            stacklevel=3,
        )


def check_model_dir(
    model_dir: str | os.PathLike[str] | None,
    *,
    diarization: bool = True,
    transcription: bool = True,
    language: str = "en",
) -> dict[str, str]:
    """Check everything the requested backends need at once; return the resolved paths.

    Keys of the result: ``pyannote`` (when ``diarization``), ``whisper``, ``align`` and
    ``nltk_data`` (when ``transcription``). Raises ``ValueError`` listing every missing file.
    """
    root = model_root(model_dir)
    missing: list[str] = []
    paths: dict[str, str] = {}
    if diarization:
        paths["pyannote"] = str(root / PYANNOTE_SUBDIR)
        missing += missing_pyannote_files(root / PYANNOTE_SUBDIR)
    if transcription:
        paths["whisper"] = str(root / WHISPER_SUBDIR)
        paths["align"] = str(root / align_subdir(language))
        paths["nltk_data"] = str(root / NLTK_SUBDIR)
        missing += missing_whisper_files(root / WHISPER_SUBDIR)
        missing += missing_align_files(root / align_subdir(language))
        missing += missing_punkt_files(root / NLTK_SUBDIR, language)
    purposes = [p for p, on in (("--diarizer pyannote", diarization),
                                ("--transcriber whisperx", transcription)) if on]
    _raise_missing(root, " and ".join(purposes) or "nothing", missing)
    if transcription:
        _warn_without_preprocessor(root / WHISPER_SUBDIR)
    return paths


def whisperx_config(
    model_dir: str | os.PathLike[str] | None,
    *,
    language: str = "en",
    device: str = "cpu",
    **overrides: Any,
) -> WhisperxConfig:
    """A :class:`WhisperxConfig` reading every file from ``model_dir``.

    ``overrides`` are further ``WhisperxConfig`` fields (``batch_size``, ``compute_type``, ...).
    Raises ``ValueError`` listing everything missing from ``DIR/whisper``, ``DIR/align-<lang>``
    and ``DIR/nltk_data``.
    """
    from microturn.pipelines.backends.whisperx_backend import WhisperxConfig

    paths = check_model_dir(model_dir, diarization=False, transcription=True, language=language)
    return WhisperxConfig(
        whisper_model=paths["whisper"],
        align_model=paths["align"],
        nltk_data=paths["nltk_data"],
        language=language,
        device=device,
        **overrides,
    )


def pyannote_config(
    model_dir: str | os.PathLike[str] | None, *, device: str = "cpu", **overrides: Any
) -> PyannoteDiarizerConfig:
    """A ``PyannoteDiarizerConfig`` for ``DIR/pyannote-diarization`` (checked to be complete)."""
    from microturn.pipelines.backends.pyannote_diarizer import PyannoteDiarizerConfig

    return PyannoteDiarizerConfig(
        pipeline=pyannote_pipeline_dir(model_dir), device=device, **overrides
    )
