"""The loader's state: a loader restored from ``state_dict`` (through JSON) yields the batches the
saved one would have yielded next, decodes only the samples of those batches, reads again only
its shuffle buffer, and refuses a state that does not fit its shards or settings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from microturn.trainer.data import LoaderStateMismatch, make_loader
from microturn.trainer.tokenizer import ByteTokenizer
from trainer_shards import train_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TOK = ByteTokenizer()
BATCH = 3


def _loader(urls=None, **kw):
    opts = {"tokenizer": TOK, "batch_size": BATCH, "max_len": 2000, "buffer": 8, "seed": 5, **kw}
    return make_loader(list(train_shards()) if urls is None else urls, **opts)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x["keys"] == y["keys"] and all(torch.equal(x[k], y[k]) for k in x if k != "keys")
                                    for x, y in zip(a, b, strict=True))


def _take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("opts, taken, more", [
    ({"resampled": True}, 4, 6),  # endless: the resampling generator's state
    ({}, 3, None),  # one pass, saved while the buffer still fills from the shards; run to its end
    ({}, 10, None),  # saved while the buffer is emptied after the last shard (34 samples, 3 a batch)
    ({"buffer": 0, "shuffle_shards": False}, 2, None),  # no buffer: the shard cursor alone
])
def test_a_restored_loader_goes_on_with_the_same_batches_decoding_only_those(opts, taken, more):
    saved = _loader(**opts)
    it = iter(saved)
    _take(it, taken)
    state = json.loads(json.dumps(saved.state_dict()))  # what a checkpoint holds
    expected = _take(it, more) if more else list(it)
    assert expected
    restored = _loader(**opts)
    restored.load_state_dict(state)
    assert restored.stats == state["counts"]
    got = _take(iter(restored), more) if more else list(restored)
    assert _same(got, expected)
    assert restored.stats == saved.stats  # the counts carry on as if never interrupted
    # Reads: the distinct buffered samples once more, then one new sample per sample consumed while the
    # shards last. Decodes: exactly the samples the new batches hold (the shards are clean).
    buffered = len({tuple(ref) for ref in state["stream"]["buffer"]["samples"]})  # resampled: maybe twice
    consumed = sum(len(b["keys"]) for b in got)  # no sample here is split (max_len 2000)
    work = restored.work
    assert work["decoded"] == consumed and work["reread"] == buffered
    assert work["read"] <= buffered + consumed
    if more:  # endless: every consumed sample pulled a new one into the buffer
        assert work["read"] == buffered + consumed


def test_a_fresh_loader_state_starts_at_the_beginning():
    fresh = _loader(resampled=True)
    restored = _loader(resampled=True)
    restored.load_state_dict(json.loads(json.dumps(fresh.state_dict())))
    assert _same(_take(iter(restored), 3), _take(iter(_loader(resampled=True)), 3))


def test_a_state_that_does_not_fit_is_refused_naming_why(tmp_path):
    saved = _loader(resampled=True)
    _take(iter(saved), 2)
    state = json.loads(json.dumps(saved.state_dict()))
    # Other shards or settings: a mismatch the trainer survives (it warns and starts a new stream).
    with pytest.raises(LoaderStateMismatch, match=r"other settings \(seed: 5 -> 6\)"):
        _loader(resampled=True, seed=6).load_state_dict(state)
    with pytest.raises(LoaderStateMismatch, match="other settings.*buffer: 8 -> 9"):
        _loader(resampled=True, buffer=9).load_state_dict(state)
    with pytest.raises(LoaderStateMismatch, match="other shards"):
        _loader(list(train_shards())[1:], resampled=True).load_state_dict(state)
    # Another version, rank or world size, or worker processes: errors.
    for bad in ({**state, "version": 99}, {**state, "world": 2}):
        with pytest.raises(ValueError) as info:
            _loader(resampled=True).load_state_dict(bad)
        assert not isinstance(info.value, LoaderStateMismatch)
    with pytest.raises(ValueError, match="version"):
        _loader(resampled=True).load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="rank 0 of 2"):
        _loader(resampled=True).load_state_dict({**state, "world": 2})
    with pytest.raises(ValueError, match="num_workers=0 only"):
        _loader(resampled=True, num_workers=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_workers=0 only"):
        _loader(resampled=True, num_workers=1).state_dict()


def test_a_malformed_state_is_a_value_error_not_a_crash():
    saved = _loader(resampled=True)
    _take(iter(saved), 2)
    state = json.loads(json.dumps(saved.state_dict()))
    # A hand-edited or damaged checkpoint whose JSON still parses and whose fingerprint still fits.
    for bad in ({k: v for k, v in state.items() if k != "epoch"}, {**state, "epoch": "3"}, {**state, "epoch": -1},
                {**state, "epoch": True}, {**state, "counts": [1, 2]}, {**state, "counts": {"samples": "many"}}):
        with pytest.raises(ValueError, match="malformed"):
            _loader(resampled=True).load_state_dict(bad)
    stream = state["stream"]
    for bad_stream in ({**stream, "buffer": {**stream["buffer"], "samples": [["x"]]}},
                       {**stream, "progress": None}, {k: v for k, v in stream.items() if k != "source"}):
        restored = _loader(resampled=True)
        restored.load_state_dict({**state, "stream": bad_stream})
        with pytest.raises(ValueError, match="malformed"):
            next(iter(restored))


def test_a_buffered_sample_that_no_longer_reads_is_an_error_naming_its_shard(tmp_path):
    shards = [shutil.copy(p, tmp_path / f"s{i}.tar") for i, p in enumerate(train_shards())]
    saved = _loader([str(p) for p in shards], resampled=True)
    _take(iter(saved), 2)
    state = json.loads(json.dumps(saved.state_dict()))
    url, at = state["stream"]["buffer"]["samples"][0]
    with open(url, "r+b") as f:
        f.truncate(at)  # the shard changed under the checkpoint
    restored = _loader([str(p) for p in shards], resampled=True)
    restored.load_state_dict(state)
    with pytest.raises(ValueError, match="cannot restore the loader's shuffle buffer from .*the shards changed"):
        next(iter(restored))
