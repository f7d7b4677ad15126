"""Fixtures of the Lhotse interop tests, shared by the session so each costs one run.

- ``records``: a record output written with the project's schemas and FLAC writer
  (:mod:`microturn.testing.records`): the pyannote sample call as one mixed channel with its
  reference turns and words (real, 30 s), and a per-speaker two-stream conversation (synthetic,
  41.3 s, two FLAC streams, words in every turn);
- ``exported``: ``microturn export lhotse`` of those records.
"""

from __future__ import annotations

import pytest

from microturn.testing.records import real_call, two_streams, write_records


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("interop") / "records"
    return write_records(str(root), [real_call(), two_streams()])


@pytest.fixture(scope="session")
def exported(records, tmp_path_factory) -> str:
    from microturn.cli.interop import export_main

    out = str(tmp_path_factory.mktemp("interop") / "lhotse")
    assert export_main(["lhotse", records, "--output", out]) == 0
    return out
