"""Writing systems' answers as Full-Duplex-Bench item trees (pipelines/duplex/systems.py).

* Items are found by their audio and typed by their one annotation file; anything else is an
  error naming the folder.
* A system's folder holds the item's files but its answer; output.wav is exactly as long as the
  input; output.json is Full-Duplex-Bench's format, cropped after the interrupt's end for
  user_interruption items (absolute times, as its asr.py shifts them back; a straddling word's
  start clipped).
* The reference system writes the item's second speaker and its words.

Shape suffixes follow microturn.schemas.legend: N audio samples, C channels.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.duplex import systems
from microturn.pipelines.duplex.audio import SAMPLE_RATE, read_mono_N
from microturn.testing.duplex_items import DURATION_S, write_items


@pytest.fixture(scope="module")
def items_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("items"))
    write_items(root)
    return root


def test_items_are_found_sorted_with_their_task(items_root):
    found = systems.find_items(items_root)
    assert [(i.rel, i.task) for i in found] == [("pause_handling/b-0", "pause_handling"),
                                                 ("smooth_turn_taking/a-0", "smooth_turn_taking"),
                                                 ("user_interruption/c-0", "user_interruption")]
    assert all(os.path.isabs(i.path) for i in found)


def test_item_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        systems.find_items(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="holds no item"):
        systems.find_items(str(tmp_path))
    bad = tmp_path / "x"
    bad.mkdir()
    sf.write(str(bad / "input.wav"), np.zeros(1600, np.float32), SAMPLE_RATE)
    with pytest.raises(ValueError, match=f"{bad}.*holds none"):
        systems.find_items(str(tmp_path))
    (bad / "pause.json").write_text("[]")
    (bad / "turn_taking.json").write_text("[]")
    with pytest.raises(ValueError, match="turn_taking.json and pause.json"):
        systems.find_items(str(tmp_path))


def test_a_systems_folder_holds_the_item_and_its_answer(items_root, tmp_path):
    item = {i.rel: i for i in systems.find_items(items_root)}["user_interruption/c-0"]
    dest = str(tmp_path / "cascade" / item.rel)
    # An answer left in the item set is not copied as if it were the system's.
    stale = os.path.join(item.path, "output.wav")
    sf.write(stale, np.ones(100, np.float32) * 0.5, SAMPLE_RATE)
    try:
        samples = systems.prepare_item(item, dest)
    finally:
        os.remove(stale)
    assert samples == round(DURATION_S * SAMPLE_RATE)
    assert sorted(os.listdir(dest)) == ["input.wav", "interrupt.json", "item.json", "reference.json", "reference.wav"]
    with open(os.path.join(item.path, "input.wav"), "rb") as a, open(os.path.join(dest, "input.wav"), "rb") as b:
        assert a.read() == b.read()
    # Too long an answer is cut, too short padded; words cropped at the interrupt's end (3.2 s).
    systems.write_answer(item, dest, np.full(samples + 999, 0.25, np.float32), samples=samples,
                         words=[("over", 2.9, 3.5), ("early", 1.0, 1.5), ("late", 4.0, 4.25)])
    out_N = read_mono_N(os.path.join(dest, "output.wav"))
    assert out_N.shape == (samples,)
    np.testing.assert_allclose(out_N, 0.25, atol=1 / 32768)
    with open(os.path.join(dest, "output.json")) as f:
        data = json.load(f)
    assert data == {"text": "over late", "chunks": [{"text": "over", "timestamp": [3.2, 3.5]},
                                                    {"text": "late", "timestamp": [4.0, 4.25]}]}
    systems.write_answer(item, dest, np.zeros(10, np.float32), samples=samples)
    assert read_mono_N(os.path.join(dest, "output.wav")).shape == (samples,)


def test_the_reference_system_is_the_second_speaker(items_root, tmp_path):
    by_rel = {i.rel: i for i in systems.find_items(items_root)}
    item = by_rel["smooth_turn_taking/a-0"]
    dest = str(tmp_path / item.rel)
    samples = systems.prepare_item(item, dest)
    systems.write_reference(item, dest, samples)
    np.testing.assert_array_equal(read_mono_N(os.path.join(dest, "output.wav")),
                                  read_mono_N(os.path.join(item.path, "reference.wav")))
    with open(os.path.join(dest, "output.json")) as f:
        assert [c["timestamp"] for c in json.load(f)["chunks"]] == [[3.0, 3.4], [3.5, 3.6], [3.6, 4.0], [4.2, 5.0]]
    # user_interruption: the reference's words after the interrupt (2.0-3.2 s).
    item = by_rel["user_interruption/c-0"]
    dest = str(tmp_path / item.rel)
    systems.write_reference(item, dest, systems.prepare_item(item, dest))
    with open(os.path.join(dest, "output.json")) as f:
        assert json.load(f)["chunks"] == [{"text": "oh", "timestamp": [3.8, 4.2]},
                                          {"text": "sorry", "timestamp": [4.3, 5.5]}]


def test_a_stereo_conversation_item_gives_its_left_channel_as_input(tmp_path):
    folder = tmp_path / "items" / "one"
    folder.mkdir(parents=True)
    left_N = np.linspace(-0.5, 0.5, 3200, dtype=np.float32)
    sf.write(str(folder / "conversation.wav"), np.stack([left_N, -left_N], axis=1), SAMPLE_RATE, subtype="FLOAT")
    (folder / "turn_taking.json").write_text(json.dumps([{"timestamp": [0.1, 0.2]}]))
    (item,) = systems.find_items(str(tmp_path / "items"))
    dest = str(tmp_path / "out")
    assert systems.prepare_item(item, dest) == 3200
    assert "conversation.wav" not in os.listdir(dest)
    np.testing.assert_allclose(read_mono_N(os.path.join(dest, "input.wav")), left_N, atol=1 / 32768)
