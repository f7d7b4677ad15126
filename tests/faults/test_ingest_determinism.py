"""Ingest gives the same tables whichever other files share the run, in whatever order, on one
process or two.

Three pieces of the pyannote sample call, each with the STM lines that fall inside it (times
shifted to the piece), are ingested with the real models and the real DirectRunner: all in one
run from a glob, all in one run listed in another order, all in one run on two worker
processes, and each piece alone. The pocketsphinx aligner used to carry its front-end state
from one file to the next, so the same word ended 10 ms apart alone and in a batch.

Runs over the same inputs must give byte-identical Parquet files; a piece alone must give
exactly the rows it has in a batch (the tables are written sorted, so rows are compared per
conversation).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from microturn.pipelines.ingest.run import run
from microturn.pipelines.tables import read_table
from microturn.schemas import TABLE_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the media corpus
from media_corpus import SAMPLE_STM, SAMPLE_WAV, ffmpeg  # noqa: E402

pytestmark = pytest.mark.slow

# (name, start s, end s): cut between STM lines, so every line lies inside one piece.
PIECES = [("a", 6.0, 10.9), ("b", 12.5, 17.78), ("c", 17.78, 21.6)]


def _cut(root: Path) -> None:
    lines = [ln.split(None, 5) for ln in Path(SAMPLE_STM).read_text().splitlines() if ln.strip()]
    for name, t0, t1 in PIECES:
        ffmpeg("-ss", str(t0), "-t", f"{t1 - t0:.3f}", "-i", SAMPLE_WAV, str(root / f"{name}.wav"))
        inside = [f for f in lines if t0 <= float(f[3]) and float(f[4]) <= t1]
        assert inside
        (root / f"{name}.stm").write_text("".join(
            f"{name} {f[1]} {f[2]} {float(f[3]) - t0:.3f} {float(f[4]) - t0:.3f} {f[5]}\n"
            for f in inside))


def _ingest(out: Path, *inputs: str, beam: tuple[str, ...] = ()) -> str:
    run([a for i in inputs for a in ("--input", i)] + ["--output", str(out), *beam],
        print_summary=False)
    return str(out)


def _parquet_digests(out: str) -> dict[str, str]:
    digests = {}
    for table in TABLE_NAMES:
        folder = Path(out) / table
        for part in sorted(folder.glob("*.parquet")) if folder.exists() else []:
            digests[f"{table}/{part.name}"] = hashlib.sha256(part.read_bytes()).hexdigest()
    return digests


def _media_digests(out: str) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((Path(out) / "media").rglob("*")) if p.is_file()}


def _rows_by_conversation(out: str) -> dict[str, dict[str, list[str]]]:
    """{table: {conversation id (or reject input): sorted JSON rows}}."""
    tables: dict[str, dict[str, list[str]]] = {}
    for table in TABLE_NAMES:
        groups: dict[str, list[str]] = {}
        for r in read_table(out, table).to_pylist():
            key = r.get("conversation_id") or r.get("input") or ""
            groups.setdefault(key, []).append(json.dumps(r, sort_keys=True, default=str))
        tables[table] = {k: sorted(v) for k, v in groups.items()}
    return tables


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    src = root / "in"
    src.mkdir()
    _cut(src)
    wavs = [str(src / f"{name}.wav") for name, _, _ in PIECES]
    return {
        "batch": _ingest(root / "batch", f"{src}/*"),
        "listed": _ingest(root / "listed", *reversed(wavs)),
        "two_processes": _ingest(root / "two", f"{src}/*", beam=(
            "--direct_running_mode=multi_processing", "--direct_num_workers=2")),
        **{f"alone_{Path(w).stem}": _ingest(root / f"alone_{Path(w).stem}", w) for w in wavs},
    }


def test_every_piece_gives_words(outputs):
    words = read_table(outputs["batch"], "words").to_pylist()
    assert len({w["conversation_id"] for w in words}) == len(PIECES)
    assert len(read_table(outputs["batch"], "rejects")) == 0


@pytest.mark.parametrize("other", ["listed", "two_processes"])
def test_the_same_inputs_give_the_same_bytes(outputs, other):
    batch = _parquet_digests(outputs["batch"])
    assert batch and _parquet_digests(outputs[other]) == batch
    assert _media_digests(outputs[other]) == _media_digests(outputs["batch"])


def test_a_file_alone_gives_the_rows_it_has_in_a_batch(outputs):
    batch = _rows_by_conversation(outputs["batch"])
    merged: dict[str, dict[str, list[str]]] = {t: {} for t in TABLE_NAMES}
    for key, out in outputs.items():
        if key.startswith("alone_"):
            for table, groups in _rows_by_conversation(out).items():
                assert not set(groups) & set(merged[table]), (table, key)
                merged[table].update(groups)
    for table in TABLE_NAMES:
        assert merged[table] == batch[table], table
