"""The dataset card's parts without a pipeline: its features follow the sample contract, its YAML
reads back, shard sets are named and recognised, and the card is published, kept and cleared
like the stage's other outputs."""

from __future__ import annotations

import os

import pytest
import yaml

from microturn.pipelines import outputs
from microturn.pipelines.shard import card
from microturn.pipelines.shard.plan import members_of, shard_name
from microturn.pipelines.shard.samples import _sample_event
from microturn.schemas.sample import Label, make_meta

FIGURES = {"groups": {("audio", "train"): [10, 300_000, 2, 4_000_000], ("audio", "valid"): [2, 60_000, 1, 900_000],
                      ("video", "train"): [4, 120_000, 1, 3_000_000]},
           "licenses": {"CC-BY-4.0": [12, 360_000], "": [4, 120_000]}, "origins": {"real": [16, 480_000]}}


def _names(fields) -> list[str]:
    return [name for name, _ in fields]


def test_features_follow_the_sample_contract():
    meta = make_meta(key="k", conversation_id="c", window=0, chunks=5, window_chunks=5, model_speaker="A",
                     user_speakers=["B"], origin="real", license=None, split="train", channel_layout="mixed",
                     conversation_ms=1000)
    assert _names(card.META_FEATURES) == list(meta)
    event = _sample_event({"type": "turn_end", "speaker": "A", "t_ms": 400, "payload": "{}"}, 0, "A")
    assert _names(card.EVENT_FEATURES) == list(event)
    assert set(_names(card.WORD_FEATURES)) == {"text", "start_ms", "end_ms", "chunk"}
    assert [str(b.name) for b in Label] == list(card._LABELS)
    audio, video = _names(card.features("audio")), _names(card.features("video"))
    assert video == [*audio[:-2], "video.mp4", "__key__", "__url__"]
    with pytest.raises(ValueError, match="shard set"):
        card.features("images")


def test_yaml_reads_back_with_awkward_strings():
    value = {"a": ["x: y", "# not a comment", "quote \" and \\ back", "é ü 中", "|pipe|", "", "- dash"],
             "b": [{"name": "n", "list": {"list": "uint8"}}, {"empty": [], "none": {}}], "flag": True, "n": 0}
    assert yaml.safe_load("\n".join(card.to_yaml(value))) == value


def test_front_matter_has_a_config_per_shard_set_with_tar_patterns():
    meta = yaml.safe_load("\n".join(card.to_yaml(card.front_matter(FIGURES))))
    assert [(c["config_name"], c.get("default")) for c in meta["configs"]] == [("audio", True), ("video", None)]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "train/train-[0-9]*.tar"},
                                                {"split": "valid", "path": "valid/valid-[0-9]*.tar"}]
    assert meta["configs"][1]["data_files"] == [{"split": "train", "path": "train/train-video-[0-9]*.tar"}]
    assert meta["dataset_info"][1]["splits"] == [{"name": "train", "num_bytes": 3_000_000, "num_examples": 4}]
    # Only video samples: the video config is the only one, and the default.
    only = {**FIGURES, "groups": {k: v for k, v in FIGURES["groups"].items() if k[0] == "video"}}
    meta = yaml.safe_load("\n".join(card.to_yaml(card.front_matter(only))))
    assert [(c["config_name"], c.get("default")) for c in meta["configs"]] == [("video", True)]


def test_card_text_is_a_function_of_the_figures():
    text = card.render_card(FIGURES, window_chunks=150, patch_budget=48)
    assert text == card.render_card(FIGURES, window_chunks=150, patch_budget=48)
    assert text.startswith("---\n") and card.CARD_MARK in text
    assert "| `audio` | `valid` | 2 | 1 | 0.017 |" in text and "| (none) | 4 | 0.033 |" in text
    assert "/tmp" not in text and "/work" not in text


def test_shard_sets_are_named_and_recognised():
    assert shard_name("train", 3) == "train/train-000003.tar"
    assert shard_name("train", 3, "video") == "train/train-video-000003.tar"
    for members in ("audio", "video"):
        path = shard_name("my_split", 12, members)
        assert members_of(path) == members
        assert outputs.SHARD_FILE.match(os.path.basename(path))
        assert outputs.SHARD_FILE.match(os.path.basename(path)[: -len(".tar")] + ".parquet")
    assert not outputs.SHARD_FILE.match("train-audio-000000.tar")
    with pytest.raises(ValueError, match="shard set"):
        shard_name("train", 0, "images")


def test_the_card_is_published_by_commit_cleared_by_discard_and_a_foreign_readme_refused(tmp_path):
    out = str(tmp_path / "out")
    readme = tmp_path / "out" / "README.md"
    outputs.publish(b"card 1 " + card.CARD_MARK.encode(), outputs.pending_name(str(readme)))
    assert outputs.discard(out, "shard") == 1 and not os.listdir(out)
    outputs.publish(b"card 2 " + card.CARD_MARK.encode(), outputs.pending_name(str(readme)))
    outputs.commit(out, "shard")
    assert sorted(os.listdir(out)) == ["README.md"] and readme.read_bytes().startswith(b"card 2")
    outputs.check_output(out, "shard")  # the stage's own card: the output is fine
    outputs.commit(out, "shard")  # a run that wrote no card leaves the last one
    assert readme.read_bytes().startswith(b"card 2")
    readme.write_text("# my own notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds a README.md that shard did not write"):
        outputs.check_output(out, "shard")
    outputs.check_output(out, "ingest")  # other stages write no card
