"""The shard loader on real shards from the shard stage (tests/trainer/trainer_shards.py)."""

from __future__ import annotations

import functools
import io
import itertools
import os
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch

from microturn.schemas.sample import decode_sample
from microturn.trainer.batch import Kind
from microturn.trainer.data import glob_shards, make_loader, resolve_shards
from microturn.trainer.tokenizer import ByteTokenizer
from trainer_shards import shard_dir, train_shards

TOK = ByteTokenizer()
MAX_LEN = 2000  # a 25-chunk window is ~250-450 positions, so rows hold several
NOTHING_LOST = {name: 0 for name in ("skipped", "shard_errors", "bad_members", "split", "pieces", "dropped_chunks",
                                     "text_cut", "background_cut")}


@functools.cache
def reference() -> dict[str, dict]:
    """Every sample of the shards, decoded directly, by key (with its shard as ``url``)."""
    out = {}
    for url in train_shards():
        fields: dict[str, dict[str, bytes]] = {}
        with tarfile.open(url) as tar:
            for info in tar.getmembers():
                key, field = info.name.split(".", 1)
                member = tar.extractfile(info)
                assert member is not None, info.name  # the shard stage writes regular files only
                fields.setdefault(key, {})[field] = member.read()
        for key, raw in fields.items():
            out[key] = {**decode_sample(raw), "url": url}
    return out


def _loader(urls=None, **kw):
    opts = {"tokenizer": TOK, "batch_size": 4, "max_len": MAX_LEN, "buffer": 10, "max_text_per_chunk": 64, **kw}
    return make_loader(list(train_shards()) if urls is None else urls, **opts)


def _keys(batches) -> list[str]:
    return [k for b in batches for k in b["keys"]]


def test_an_epoch_gives_every_sample_once_in_batches_of_the_spec():
    ref = reference()
    assert len(ref) >= 30 and sum(r["video_KPFHWC"] is not None for r in ref.values()) >= 4
    loader = _loader(os.path.join(shard_dir(), "*.tar"))
    batches = list(loader)
    assert sorted(_keys(batches)) == sorted(ref)
    assert loader.stats == {**NOTHING_LOST, "samples": len(ref)}
    assert [len(b["keys"]) for b in batches] == [4] * (len(ref) // 4) + ([len(ref) % 4] if len(ref) % 4 else [])
    seen_video = 0
    for b in batches:
        B, L = b["kind_BL"].shape
        assert L <= MAX_LEN and B <= 4
        assert b["dmel_BLM"].dtype == torch.uint8 and b["dmel_BLM"].shape == (B, L, 80)
        assert b["logmel_BLM"].dtype == torch.float16 and b["logmel_BLM"].shape == (B, L, 80)
        assert b["video_PFHWC"].dtype == torch.uint8 and b["video_PFHWC"].shape[1:] == (2, 40, 40, 3)
        for name in ("kind_BL", "text_BL", "video_BL", "time_BL", "segment_BL"):
            assert b[name].dtype == torch.int64 and b[name].shape == (B, L)
        # Each segment carries its sample: audio frames, text, time and video patches, in order.
        keys = iter(b["keys"])
        for row in range(B):
            for seg in range(1, int(b["segment_BL"][row].max()) + 1):
                s, at = ref[next(keys)], b["segment_BL"][row] == seg
                kind = b["kind_BL"][row, at]
                K = s["meta"]["chunks"]
                dmel, logmel = b["dmel_BLM"][row, at], b["logmel_BLM"][row, at]
                assert torch.equal(dmel[kind == Kind.MODEL_AUDIO], torch.from_numpy(s["dmel"]["model"]))
                assert torch.equal(dmel[kind == Kind.USER_AUDIO], torch.from_numpy(s["dmel"]["user"]))
                assert torch.equal(logmel[kind == Kind.MODEL_AUDIO], torch.from_numpy(s["logmel_TM"]))
                model_text = TOK.decode(b["text_BL"][row, at][kind == Kind.MODEL_TEXT].tolist())
                model_words = sorted(s["words"]["model"], key=lambda w: (w["chunk"], w["start_ms"]))
                assert model_text == "".join(" " + w["text"] for w in model_words)
                assert int(b["time_BL"][row, at].max()) == K - 1
                v = b["video_BL"][row, at]
                if s["video_KPFHWC"] is None:
                    assert not (v >= 0).any()
                else:
                    seen_video += 1
                    patches = b["video_PFHWC"][v[v >= 0]].numpy()
                    assert np.array_equal(patches, s["video_KPFHWC"].reshape(-1, 2, 40, 40, 3))
    assert seen_video == sum(r["video_KPFHWC"] is not None for r in ref.values())


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x["keys"] == y["keys"] and all(torch.equal(x[k], y[k]) for k in x if k != "keys")
                                    for x, y in zip(a, b, strict=True))


def test_a_seed_and_epoch_fix_the_batches_and_their_order():
    first = list(_loader(seed=7, epoch=3))
    assert _same(first, list(_loader(seed=7, epoch=3)))
    loader = _loader(seed=7, epoch=3)
    assert _same(first, list(loader)) and _same(first, list(loader))  # iterating again repeats the epoch
    loader.set_epoch(4)
    other_epoch = list(loader)
    other_seed = list(_loader(seed=8, epoch=3))
    for other in (other_epoch, other_seed):
        assert _keys(other) != _keys(first) and sorted(_keys(other)) == sorted(_keys(first))
    in_order = _keys(_loader(shuffle_shards=False, buffer=0))
    assert in_order == list(reference())  # no shuffling: the shards' own order


def test_padding_mode_gives_one_sample_per_row():
    for b in _loader(pack=False, batch_size=3):
        assert b["kind_BL"].shape[0] == len(b["keys"]) and int(b["segment_BL"].max()) == 1


def test_workers_share_the_shards_and_the_counts():
    loader = _loader(num_workers=2, seed=1)
    batches = list(loader)
    assert sorted(_keys(batches)) == sorted(reference())
    assert loader.stats["samples"] == len(reference())
    assert _same(batches, list(_loader(num_workers=2, seed=1)))


def _corrupt_copy(src: str, dst: str, *, member_suffix: str) -> str:
    """Copy the tar ``src`` to ``dst`` with the first member ending in ``member_suffix`` garbled;
    returns that member's sample key."""
    bad_key = None
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin.getmembers():
            member = tin.extractfile(info)
            assert member is not None, info.name  # the shard stage writes regular files only
            data = member.read()
            if bad_key is None and info.name.endswith(member_suffix):
                bad_key = info.name.split(".", 1)[0]
                data = bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8))
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    assert bad_key is not None
    return bad_key


def test_a_corrupt_member_is_skipped_and_counted_and_the_rest_arrive(tmp_path):
    shards = list(train_shards())
    bad = str(tmp_path / "corrupt-000000.tar")
    bad_key = _corrupt_copy(shards[0], bad, member_suffix=".model.dmel.npy")
    loader = _loader([bad, *shards[1:]])
    with pytest.warns(UserWarning, match=rf"skipped a sample: SampleError.*{bad_key}"):
        keys = _keys(loader)
    assert sorted(keys) == sorted(set(reference()) - {bad_key})
    assert loader.stats == {**NOTHING_LOST, "samples": len(reference()) - 1, "skipped": 1}


def test_missing_and_truncated_shards_are_counted_without_ending_the_epoch(tmp_path):
    shards = list(train_shards())
    truncated = str(tmp_path / "truncated.tar")
    with open(shards[0], "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    loader = _loader([str(tmp_path / "missing.tar"), truncated, *shards[1:]], shuffle_shards=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = set(_keys(loader))
    assert any("skipped a shard" in str(w.message) for w in caught)
    rest = {k for k, r in reference().items() if r["url"] != shards[0]}
    first = {k for k, r in reference().items() if r["url"] == shards[0]}
    assert rest <= keys and keys - rest < first and len(keys - rest) >= 1  # samples before the cut still arrive
    stats = loader.stats
    assert stats["shard_errors"] >= 2 and stats["samples"] == len(keys)


def test_split_by_node_gives_disjoint_shards_per_rank(monkeypatch):
    ref = reference()
    for world in (2, 3):
        per_rank = []
        for rank in range(world):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            per_rank.append(_keys(_loader(seed=5)))
        shard_sets = [{ref[k]["url"] for k in keys} for keys in per_rank]
        for a, b in itertools.combinations(range(world), 2):
            assert not set(per_rank[a]) & set(per_rank[b]) and not shard_sets[a] & shard_sets[b]
        assert sorted(k for keys in per_rank for k in keys) == sorted(ref)
    monkeypatch.setenv("WORLD_SIZE", str(len(train_shards()) + 1))
    with pytest.raises(ValueError, match="resampled=True"):
        list(_loader())


def test_resampled_is_endless_and_deterministic(monkeypatch):
    n = len(reference()) // 4 + 3  # more batches than one pass holds
    first = _keys(itertools.islice(_loader(resampled=True, seed=2), n))
    assert len(first) == 4 * n and set(first) <= set(reference())
    assert first == _keys(itertools.islice(_loader(resampled=True, seed=2), n))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert first != _keys(itertools.islice(_loader(resampled=True, seed=2), n))  # ranks draw independently


def test_glob_and_resolve_shards(tmp_path, monkeypatch):
    shards, folder = list(train_shards()), shard_dir()
    assert glob_shards(os.path.join(folder, "train-*.tar")) == shards
    assert glob_shards(folder) == shards
    audio = [s for s in shards if "-video-" not in os.path.basename(s)]  # train-video-*.tar: the video set
    brace = os.path.join(folder, f"train-{{000000..{len(audio) - 1:06d}}}.tar")
    assert glob_shards(brace) == [brace] and resolve_shards(brace) == audio
    assert glob_shards(os.path.join(folder, "train-00000{0,1}.t*")) == shards[:2]
    assert resolve_shards(f"{shards[0]}::{shards[1]}") == shards[:2] == resolve_shards(shards[:2])
    assert resolve_shards("file://" + shards[0]) == ["file://" + shards[0]]
    assert glob_shards("https://example.org/d/train-{000..009}.tar") == ["https://example.org/d/train-{000..009}.tar"]
    with pytest.raises(ValueError, match="matches no file"):
        glob_shards(str(tmp_path / "*.tar"))
    with pytest.raises(ValueError, match="holds no .tar"):
        glob_shards(str(tmp_path))
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if fsspec were not installed
    with pytest.raises(ValueError, match="install fsspec"):
        resolve_shards("s3://bucket/train-000000.tar")
    with pytest.raises(ValueError, match="batch_size"):
        _loader(batch_size=0)
    with pytest.raises(ValueError, match="buffer"):
        _loader(buffer=-1)


def test_other_url_schemes_open_through_fsspec():
    import fsspec

    shards = list(train_shards())
    fs = fsspec.filesystem("memory")  # a real fsspec filesystem with a URL scheme webdataset lacks
    for i, path in enumerate(shards[:2]):
        with open(path, "rb") as src, fs.open(f"memory://bucket/train-{i:06d}.tar", "wb") as dst:
            dst.write(src.read())
    urls = "memory://bucket/train-{000000..000001}.tar"
    keys = _keys(_loader(urls, shuffle_shards=False, buffer=0))
    assert keys == [k for k, r in reference().items() if r["url"] in shards[:2]]


def test_resampling_over_unreadable_shards_stops_with_an_error(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 64)
    loader = _loader([str(bad)], resampled=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="failures in a row"):
        next(iter(loader))


def test_samples_longer_than_max_len_arrive_whole_in_pieces_without_a_warning_each():
    # 25-chunk windows are ~250-450 positions: rows of 120 split every one of them.
    ref = reference()
    loader = _loader(max_len=120, shuffle_shards=False, buffer=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(loader)
    stats = loader.stats
    assert stats["samples"] == len(ref) and stats["split"] == len(ref) and stats["dropped_chunks"] == 0
    assert stats["pieces"] == sum(len(b["keys"]) for b in batches) > 2 * len(ref)
    chunks: dict[str, list[int]] = {}
    for b in batches:
        assert b["kind_BL"].shape[1] <= 120
        keys = iter(b["keys"])
        for row in range(b["kind_BL"].shape[0]):
            for seg in range(1, int(b["segment_BL"][row].max()) + 1):
                at = b["segment_BL"][row] == seg
                marks = b["time_BL"][row, at][b["kind_BL"][row, at] == Kind.CHUNK_MARK]
                chunks.setdefault(next(keys), []).extend(marks.tolist())
    assert {k: sorted(v) for k, v in chunks.items()} == {k: list(range(r["meta"]["chunks"])) for k, r in ref.items()}
    assert "split into" in loader.summary() and loader.losses() == 0


def _user_text_by_key(batches) -> dict[str, int]:
    """Sample key -> its count of USER_TEXT positions (every segment of every row)."""
    out = {}
    for b in batches:
        keys = iter(b["keys"])
        for row in range(b["kind_BL"].shape[0]):
            for seg in range(1, int(b["segment_BL"][row].max()) + 1):
                at = b["segment_BL"][row] == seg
                out[next(keys)] = int((b["kind_BL"][row, at] == Kind.USER_TEXT).sum())
    return out


def test_user_text_dropout_leaves_out_the_user_words_of_a_keyed_share_of_samples():
    full = _user_text_by_key(_loader(shuffle_shards=False, buffer=0))
    spoken = {k for k, n in full.items() if n}
    assert len(spoken) >= 10, full  # the corpus's windows mostly hold user words
    assert not any(_user_text_by_key(_loader(shuffle_shards=False, buffer=0, user_text_dropout=1.0)).values())
    half = _user_text_by_key(_loader(user_text_dropout=0.5, seed=3))
    kept = {k for k in spoken if half[k]}
    assert 0 < len(kept) < len(spoken), (len(kept), len(spoken))
    assert all(half[k] == full[k] for k in kept)  # a kept sample keeps all its words
    # The draw is keyed by (seed, epoch, sample key): the batch order does not change it.
    assert _user_text_by_key(_loader(user_text_dropout=0.5, seed=3, shuffle_shards=False, buffer=0)) == half
    other = _user_text_by_key(_loader(user_text_dropout=0.5, seed=3, epoch=1))
    assert {k for k in spoken if other[k]} != kept
    with pytest.raises(ValueError, match="user_text_dropout"):
        _loader(user_text_dropout=1.5)
