"""The micro-turn sample contract: keys, encode/decode round trip, validation."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.schemas.sample import (
    Label,
    Sample,
    SampleError,
    decode_sample,
    encode_sample,
    make_meta,
    npy_bytes,
    sample_key,
    validate_sample,
)


def _sample(k: int = 3, **kw) -> Sample:
    key = sample_key("c-0123456789abcdef", "SPEAKER_00", 2)
    rng = np.random.default_rng(0)
    labels = {"user": np.zeros(k, np.uint16), "model": np.zeros(k, np.uint16)}
    labels["model"][1] |= Label.WORD_START | Label.VOICED
    base: dict[str, Any] = dict(
        key=key,
        meta=make_meta(key=key, conversation_id="c-0123456789abcdef", window=2, chunks=k, window_chunks=150,
                       model_speaker="SPEAKER_00", user_speakers=["SPEAKER_01"], origin="real", license="CC0-1.0",
                       split="train", channel_layout="mixed", conversation_ms=10**7),
        dmel={r: rng.integers(0, 16, (4 * k, 80), dtype=np.uint8) for r in ("user", "model")},
        logmel_TM=rng.uniform(-7, 2, (4 * k, 80)).astype(np.float16),
        labels=labels,
        words={"user": [], "model": [{"text": "hi", "start_ms": 250, "end_ms": 390, "chunk": 1}], "background": []},
        events=[{"type": "turn_end", "speaker": "SPEAKER_00", "role": "model", "t_ms": 399, "chunk": 1,
                 "payload": {"gap_ms": 120}}],
    )
    base.update(kw)
    return Sample(**base)


def _words(*model: dict) -> dict[str, list[dict]]:
    """words.json with these model words, no user words and no background results."""
    return {"user": [], "model": list(model), "background": []}


def test_round_trip_through_tar_fields():
    s = _sample()
    fields = {name.split(".", 1)[1]: data for name, data in encode_sample(s)}
    d = decode_sample(fields)
    assert d["key"] == s.key and d["meta"] == s.meta and d["words"] == s.words and d["events"] == s.events
    for r in ("user", "model"):
        assert np.array_equal(d["dmel"][r], s.dmel[r]) and np.array_equal(d["labels"][r], s.labels[r])
    assert np.array_equal(d["logmel_TM"], s.logmel_TM) and d["video_KPFHWC"] is None
    assert encode_sample(s) == encode_sample(_sample())  # same sample, same bytes


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80), st.integers(0, 99_999))
def test_keys_are_tar_and_webdataset_safe(cid, role, window):
    key = sample_key(cid, role, window)
    assert "." not in key and "/" not in key and key.isascii() and len(key) <= 16 + 80 + 32
    assert key.endswith(f"_{window:05d}")


@pytest.mark.parametrize("change, message", [
    (lambda s: dataclasses.replace(s, key="a.b"), "tar-safe"),
    (lambda s: dataclasses.replace(s, dmel={**s.dmel, "user": s.dmel["user"][:-1]}), "shape"),
    (lambda s: dataclasses.replace(s, dmel={**s.dmel, "user": s.dmel["user"] + 16}), "bin >= 16"),
    (lambda s: dataclasses.replace(s, logmel_TM=s.logmel_TM.astype(np.float32)), "float16"),
    (lambda s: dataclasses.replace(s, words=_words({"text": "x", "start_ms": 700, "end_ms": 800, "chunk": 3})),
     "inside the window"),
    (lambda s: dataclasses.replace(s, words=_words({"text": "x", "start_ms": 250, "end_ms": 300, "chunk": 0})),
     "does not hold"),
    (lambda s: dataclasses.replace(s, words=_words()), "WORD_START"),
    (lambda s: dataclasses.replace(s, events=[{"type": "laugh", "t_ms": 0, "chunk": 0, "role": "user"}]), "event"),
    (lambda s: dataclasses.replace(s, meta={**s.meta, "schema_version": 99}), "schema_version"),
    (lambda s: dataclasses.replace(s, meta={**s.meta, "extra": 1}), "meta keys"),
    (lambda s: dataclasses.replace(s, video=b"x"), "given together"),
])
def test_invalid_samples_are_refused(change, message):
    with pytest.raises(SampleError, match=message):
        validate_sample(change(_sample()))


def test_pickled_arrays_and_wrong_field_types_are_refused():
    fields = {name.split(".", 1)[1]: data for name, data in encode_sample(_sample())}
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SampleError, match="plain .npy"):
        decode_sample({**fields, "user.labels.npy": buf.getvalue()})
    with pytest.raises(SampleError, match="raw bytes"):
        decode_sample({**fields, "json": json.loads(fields["json"])})
    with pytest.raises(SampleError, match="no 'model.dmel.npy'"):
        decode_sample({k: v for k, v in fields.items() if k != "model.dmel.npy"})
    assert npy_bytes(np.arange(3)) == npy_bytes(np.arange(3))
