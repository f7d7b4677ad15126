"""pad_batch pads exactly the per-position tensors ``batch.PAD_VALUES`` lists, with the values
collate itself pads rows with, and leaves everything else alone."""

from __future__ import annotations

import numpy as np
import torch

from microturn.trainer.batch import PAD_VALUES, build_sequence, collate
from microturn.trainer.loop import pad_batch
from microturn.trainer.tokenizer import ByteTokenizer


def _sample(key: str, K: int, video: bool) -> dict:
    rng = np.random.default_rng(K)
    return {"key": key, "meta": {"chunks": K, "key": key},
            "dmel": {r: rng.integers(0, 16, (4 * K, 80), dtype=np.uint8) for r in ("user", "model")},
            "logmel_TM": rng.normal(-3, 1, (4 * K, 80)).astype(np.float16),
            "labels": {r: np.zeros(K, np.uint16) for r in ("user", "model")},
            "words": {"user": [{"text": "hi", "start_ms": 10, "end_ms": 90, "chunk": 0}], "model": [],
                      "background": [{"text": "It is sunny.", "start_ms": 0, "end_ms": 0, "chunk": 0}]},
            "events": [],
            "video_KPFHWC": rng.integers(0, 256, (K, 2, 2, 40, 40, 3), dtype=np.uint8) if video else None}


def _batch() -> dict:
    seqs = [build_sequence(_sample("a", 3, True), ByteTokenizer()), build_sequence(_sample("b", 1, False),
                                                                                   ByteTokenizer())]
    return collate(seqs, max_len=1000, pack=False)  # two rows, the second one shorter


def test_the_list_names_every_per_position_tensor_with_the_value_collate_pads_with():
    batch = _batch()
    B, L = batch["kind_BL"].shape
    per_position = {k for k, v in batch.items() if isinstance(v, torch.Tensor) and tuple(v.shape[:2]) == (B, L)}
    assert per_position == set(PAD_VALUES)
    short = int((batch["segment_BL"][1] > 0).sum())
    assert 0 < short < L
    for name, fill in PAD_VALUES.items():
        assert (batch[name][1, short:] == fill).all(), name


def test_pad_batch_pads_positions_and_rows_with_those_values_only():
    batch = _batch()
    B, L = batch["kind_BL"].shape
    padded = pad_batch(batch, L + 5, rows=B + 2)
    for name, fill in PAD_VALUES.items():
        value = padded[name]
        assert value.shape[:2] == (B + 2, L + 5) and value.shape[2:] == batch[name].shape[2:]
        assert torch.equal(value[:B, :L], batch[name])
        assert (value[:, L:] == fill).all() and (value[B:] == fill).all(), name
    others = set(batch) - set(PAD_VALUES)
    assert others and all(padded[k] is batch[k] for k in others)  # patches and keys are not per position
    assert pad_batch(batch, L) is batch  # nothing to pad
