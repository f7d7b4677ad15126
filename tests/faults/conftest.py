"""Fixtures of the stage-level fault tests; the helpers they share are in ``stage_runs``.

Inputs are tiny so the tests stay fast: 2 s of the real call shipped with pyannote.audio for
ingest, two short dialogues for synthesize, and two short two-speaker records for shard.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stage_runs import make_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the media corpus
from media_corpus import speech  # noqa: E402


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """A folder holding one 2 s clip of real speech."""
    root = tmp_path_factory.mktemp("speech")
    speech(str(root / "call.wav"), start=6.5, dur=2.0)
    return root


@pytest.fixture(scope="session")
def scripts_file(tmp_path_factory) -> Path:
    """Two short dialogues in one JSONL file."""
    path = tmp_path_factory.mktemp("scripts") / "two.jsonl"
    rows = [{"id": "d1", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "hello there"},
                                                                  {"speaker": "B", "text": "hi"}]},
            {"id": "d2", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "yes"},
                                                                  {"speaker": "B", "text": "good"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> str:
    return make_records(tmp_path_factory.mktemp("records") / "rec")
