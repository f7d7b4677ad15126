"""Fixtures for the standard-backend tests: tiny random models in the ``--model-dir`` layout,
built once per session, and an offline guard that turns any network access into an error."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from microturn.pipelines.backends.base import Turn, Utterance
from microturn.pipelines.backends.model_dir import (
    NLTK_SUBDIR,
    PYANNOTE_SUBDIR,
    WHISPER_SUBDIR,
    align_subdir,
)
from microturn.testing.sample_call import sample_path
from microturn.testing.sample_call import sample_wave as call_wave

if __package__:  # collected as a package (tests/.../__init__.py present)
    from .tiny_models import (
        build_tiny_align,
        build_tiny_punkt,
        build_tiny_pyannote_pipeline,
        build_tiny_whisper,
    )
else:  # rootdir-relative collection puts this folder on sys.path
    from tiny_models import (
        build_tiny_align,
        build_tiny_punkt,
        build_tiny_pyannote_pipeline,
        build_tiny_whisper,
    )


class NetworkAccessError(RuntimeError):
    """Raised by the offline guard when code tries to open an internet socket."""


def apply_offline(mp: pytest.MonkeyPatch) -> None:
    """Hub libraries in offline mode and internet sockets refused, undone with ``mp``.

    huggingface_hub and transformers read their offline switches when they are imported, so
    the module constants are patched as well as the environment.
    """
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants

    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and hasattr(hub, "_is_offline_mode"):
        mp.setattr(hub, "_is_offline_mode", True)

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(sock: socket.socket, address, *, real):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkAccessError(f"network access attempted: {address!r}")
        return real(sock, address)

    mp.setattr(socket.socket, "connect", lambda s, a: refuse(s, a, real=real_connect))
    mp.setattr(socket.socket, "connect_ex", lambda s, a: refuse(s, a, real=real_connect_ex))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No downloads and no internet for one test."""
    apply_offline(monkeypatch)


@pytest.fixture(scope="module")
def offline_module():
    """No downloads and no internet for a whole module (for module-scoped loaded backends)."""
    with pytest.MonkeyPatch.context() as mp:
        apply_offline(mp)
        yield


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: on a shared 2-core machine, OpenMP threads waiting on a
    core another process holds make pyannote's LSTMs 10-20x slower than one thread would be."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the tiny models are built into, in the ``--model-dir`` layout."""
    return tmp_path_factory.mktemp("tiny-model-dir")


@pytest.fixture(scope="session")
def tiny_pyannote_pipeline_dir(tiny_models_root: Path) -> Path:
    """A pyannote pipeline folder (config.yaml + segmentation, embedding, plda)."""
    return build_tiny_pyannote_pipeline(tiny_models_root / PYANNOTE_SUBDIR)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tiny_models_root: Path) -> Path:
    """A CTranslate2 Whisper folder with tokenizer.json and preprocessor_config.json."""
    return build_tiny_whisper(tiny_models_root / WHISPER_SUBDIR)


@pytest.fixture(scope="session")
def tiny_align_dir(tiny_models_root: Path) -> Path:
    """A Hugging Face Wav2Vec2ForCTC + processor folder for English."""
    return build_tiny_align(tiny_models_root / align_subdir("en"))


@pytest.fixture(scope="session")
def tiny_nltk_dir(tiny_models_root: Path) -> Path:
    """An NLTK data root with punkt_tab/english."""
    return build_tiny_punkt(tiny_models_root / NLTK_SUBDIR)


@pytest.fixture(scope="session")
def tiny_model_dir(
    tiny_models_root: Path,
    tiny_pyannote_pipeline_dir: Path,
    tiny_whisper_dir: Path,
    tiny_align_dir: Path,
    tiny_nltk_dir: Path,
) -> Path:
    """A complete ``--model-dir`` (English) with every tiny model."""
    return tiny_models_root


@pytest.fixture(scope="session")
def sample_wave() -> np.ndarray:
    """pyannote.audio's 30 s two-person phone call as 16 kHz mono float32, shape [N]."""
    return np.array(call_wave())  # a writeable copy of the cached, read-only recording


@pytest.fixture(scope="session")
def sample_utterances() -> list[Utterance]:
    """The sample's STM transcript as utterances (read with the package's STM reader)."""
    from microturn.pipelines.eval_words import read_stm

    return [Utterance(s.start_ms, s.end_ms, s.text, s.speaker) for s in read_stm(sample_path("stm"))["sample"]]


@pytest.fixture(scope="session")
def sample_turns() -> list[Turn]:
    """The sample's reference diarization as turns, speakers named as the RTTM names them (read with
    the package's RTTM reader)."""
    from microturn.pipelines.eval_diarization import read_rttm

    reference = read_rttm(sample_path("rttm"))["sample"]
    return [Turn(str(entry[-1]), round(entry[0].start * 1000), round(entry[0].end * 1000))
            for entry in reference.itertracks(yield_label=True)]  # (segment, track, label)


@pytest.fixture(scope="session")
def vad():
    """The embedded speech activity detector (silero-vad), built once."""
    from microturn.pipelines.backends.silero import SileroVad

    return SileroVad()
