"""Record tables are inputs too: a hand-made or tampered ``conversations`` row must not point a
reader (remix, shard) at a file outside the conversation's media folder.

Readers join ``media_dir`` and the media file names onto an output root; each must be one plain
path component, or the row is refused (a reject, never a read of another file).
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from microturn.pipelines.synthesize.run import run as synthesize
from microturn.pipelines.tables import read_table
from microturn.schemas import RowError, check_media_paths

GOOD = {"media_dir": "media/c-0123abcd", "audio_files": ["ch0.flac", "ch1.flac"], "video_file": "video.mp4"}

BAD = [
    {"media_dir": "../../etc"},
    {"media_dir": "/abs/media"},
    {"media_dir": "media/../../x"},
    {"media_dir": "media/a/b"},
    {"media_dir": "media/"},
    {"media_dir": "media/.hidden"},
    {"media_dir": "media/-rf"},
    {"media_dir": "other/c-1"},
    {"media_dir": "media/concat:x"},
    {"audio_files": ["../c-2/ch0.flac"]},
    {"audio_files": ["/etc/passwd"]},
    {"audio_files": ["-report"]},
    {"audio_files": ["ch0.flac", "sub/ch1.flac"]},
    {"audio_files": ["a\x1b.flac"]},
    {"audio_files": [""]},
    {"video_file": "../video.mp4"},
    {"video_file": "pipe:1"},
    {"video_file": "x" * 201},
]


def test_plain_media_paths_pass():
    check_media_paths(GOOD)
    check_media_paths({**GOOD, "video_file": None})


@pytest.mark.parametrize("change", BAD, ids=[json.dumps(c)[:40] for c in BAD])
def test_paths_that_leave_the_media_folder_are_refused(change):
    with pytest.raises(RowError, match="media"):
        check_media_paths({**GOOD, **change})


def _tamper(output: str, **change) -> str:
    """Rewrite the first conversations row of ``output`` in place; return its id."""
    folder = os.path.join(output, "conversations")
    (part,) = [n for n in os.listdir(folder) if n.endswith(".parquet")]
    table = pq.read_table(os.path.join(folder, part))
    rows = table.to_pylist()
    rows[0].update(change)
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), os.path.join(folder, part))
    return rows[0]["conversation_id"]


@pytest.mark.slow
def test_remix_refuses_a_row_that_points_outside_its_media(tmp_path):
    scripts = tmp_path / "s.jsonl"
    lines = [{"id": f"d{i}", "speakers": {"A": {}, "B": {"voice": "en-gb"}},
              "turns": [{"speaker": "A", "text": "shall we start"}, {"speaker": "B", "text": "yes please"}]}
             for i in range(2)]
    scripts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = str(tmp_path / "synth")
    synthesize(["--scripts", str(scripts), "--output", out, "--seed", "1"], print_summary=False)
    source = str(tmp_path / "source")
    shutil.copytree(out, source)
    # The tampered row names the other conversation's audio through "..": a real, readable file.
    convs = read_table(source, "conversations").to_pylist()
    other = convs[1]
    tampered = _tamper(source, audio_files=[f"../{other['media_dir'].split('/')[1]}/{other['audio_files'][0]}"])
    remixed = str(tmp_path / "remix")
    synthesize(["--remix", source, "--output", remixed, "--seed", "1"], print_summary=False)
    (rej,) = read_table(remixed, "rejects").to_pylist()
    assert (rej["input"], rej["stage"], rej["error_type"]) == (tampered, "remix", "bad_media_path")
    assert read_table(remixed, "conversations").num_rows == 1


@pytest.mark.slow
def test_shard_refuses_a_row_that_points_outside_its_media(tmp_path):
    from microturn.pipelines.shard.run import run as shard

    scripts = tmp_path / "s.jsonl"
    lines = [{"id": f"d{i}", "speakers": {"A": {}, "B": {"voice": "en-gb"}},
              "turns": [{"speaker": "A", "text": "shall we start the meeting now"},
                        {"speaker": "B", "text": "yes please go ahead"}]} for i in range(2)]
    scripts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = str(tmp_path / "synth")
    synthesize(["--scripts", str(scripts), "--output", out, "--seed", "1"], print_summary=False)
    convs = read_table(out, "conversations").to_pylist()
    tampered = _tamper(out, media_dir=f"media/../{convs[1]['media_dir']}")
    shards = str(tmp_path / "shards")
    shard(["--input", out, "--output", shards, "--window-chunks", "10"], print_summary=False)
    rejects = read_table(shards, "rejects").to_pylist()
    assert [(r["input"], r["stage"], r["error_type"]) for r in rejects] == [(tampered, "shard", "bad_media_path")]
    assert read_table(shards, "samples").num_rows > 0  # the other conversation is sharded
