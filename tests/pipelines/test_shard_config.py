"""The shard stage's config: TOML, command-line overrides, and actionable errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.pipelines.shard.config import ShardConfig, parse_bytes, parse_splits
from microturn.pipelines.shard.run import parse_args, run
from microturn.pipelines.shard.samples import split_key
from microturn.schemas import split_of


def test_toml_then_flags_and_beam_flags_pass_through(tmp_path):
    toml = tmp_path / "shard.toml"
    toml.write_text('inputs = ["a", "b"]\nwindow_chunks = 100\nshard_bytes = "1GiB"\nsplits = "train=0.9,test=0.1"\n')
    cfg, beam = parse_args(["--config", str(toml), "--output", "o", "--window-chunks", "75", "--no-video",
                            "--direct_num_workers=2"])
    assert cfg.inputs == ("a", "b") and cfg.window_chunks == 75 and cfg.shard_bytes == 1 << 30
    assert cfg.split_ratios == (("train", 0.9), ("test", 0.1)) and cfg.video is False
    assert beam == ["--direct_num_workers=2"]
    cfg, _ = parse_args(["--config", str(toml), "--output", "o", "--input", "c"])
    assert cfg.inputs == ("c",)  # flags replace the config's inputs


@pytest.mark.parametrize("toml, message", [
    ("bogus = 1\n", "unknown key"),
    ("window_chunks = 'ten'\n", "window_chunks must be"),
    ("min_chunks = 500\n", "min-chunks"),
    ("shard_bytes = 10\n", "at least 65536"),
    ("patch_budget = 0\n", "patch_budget"),
])
def test_bad_configs_are_actionable_errors(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text('inputs = ["a"]\n' + toml)
    with pytest.raises(ValueError, match=message):
        parse_args(["--config", str(path), "--output", "o"])


@pytest.mark.parametrize("spec, message", [
    ("train=0.5", "sum to 0.5"), ("train", "name=ratio"), ("train=1,train=0", "positive"),
    ("Train=1", "lowercase"), ("shards=1", "table folder"), ("a=0.5,a=0.5", "each split once"),
])
def test_bad_split_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_splits(spec)


def test_sizes_and_missing_inputs(tmp_path):
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("64k") == 65536 and parse_bytes("4096") == 4096
    with pytest.raises(ValueError, match="512MiB"):
        parse_bytes("1.5G")
    with pytest.raises(ValueError, match="--input"):
        ShardConfig(output="o")
    with pytest.raises(ValueError, match="no conversation records"):
        run(["--input", str(tmp_path), "--output", str(tmp_path / "o")], print_summary=False)


@given(st.text("0123456789abcdef", min_size=16, max_size=16), st.floats(0.05, 0.9))
def test_split_is_a_pure_function_of_the_id_and_a_remix_takes_its_sources(hexid, train):
    cid = f"c-{hexid}"
    splits = parse_splits(f"train={train!r},test={1 - train!r}")
    assert split_of(cid, splits) == split_of(cid, splits)
    remix = {"conversation_id": f"r-{hexid[::-1]}", "origin": "remix", "provenance": f'{{"remix_of": "{cid}"}}'}
    assert split_of(split_key(remix), splits) == split_of(cid, splits)
    assert split_key({"conversation_id": cid, "origin": "real", "provenance": None}) == cid
