"""The interleaved sequence, collate (packing and padding), attention and loss masks.

Samples here are built in memory in the shape ``decode_sample`` returns (K chunks, P video
patches per chunk, M = 80 mel channels); the loader tests run the same code on real shards.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from microturn.trainer.batch import CHUNK_ORDER, Kind, attention_mask, build_sequence, collate, loss_positions
from microturn.trainer.tokenizer import ByteTokenizer, HFTokenizer

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOK = ByteTokenizer()
WORDS = st.text(alphabet="abcdeé?,'xyz", min_size=1, max_size=7)


def _sample(key: str, K: int, P: int | None, words: dict[str, list[tuple[int, int, str]]], seed: int = 0) -> dict:
    """A decoded sample; ``words[role]`` is (chunk, ms into the chunk, text), for "user", "model"
    and optionally "background" (results: end_ms == start_ms, their arrival)."""
    rng = np.random.default_rng(seed)
    T = 4 * K
    span = {"user": 50, "model": 50, "background": 0}
    return {
        "key": key,
        "meta": {"chunks": K, "key": key},
        "dmel": {r: rng.integers(0, 16, (T, 80), dtype=np.uint8) for r in ("user", "model")},
        "logmel_TM": rng.normal(-3, 1, (T, 80)).astype(np.float16),
        "labels": {r: np.zeros(K, np.uint16) for r in ("user", "model")},
        "words": {r: [{"text": t, "start_ms": 200 * k + ms, "end_ms": 200 * k + ms + span[r], "chunk": k}
                      for k, ms, t in words.get(r, [])] for r in ("user", "model", "background")},
        "events": [],
        "video_KPFHWC": None if P is None else rng.integers(0, 256, (K, P, 2, 40, 40, 3), dtype=np.uint8),
    }


@st.composite
def samples(draw, key: str = "s"):
    K = draw(st.integers(1, 5))
    P = draw(st.sampled_from([None, 1, 3]))
    words = {r: draw(st.lists(st.tuples(st.integers(0, K - 1), st.integers(0, 199), WORDS), max_size=6))
             for r in ("user", "model", "background")}
    return _sample(key, K, P, words, seed=draw(st.integers(0, 2 ** 16)))


def _texts(sample: dict, role: str, k: int) -> str:
    ws = sorted((w for w in sample["words"][role] if w["chunk"] == k), key=lambda w: w["start_ms"])
    return "".join(" " + w["text"] for w in ws)


@PROPS
@given(samples())
def test_sequence_layout_audio_video_and_text(sample):
    seq = build_sequence(sample, TOK, max_text_per_chunk=1000, max_background_per_chunk=1000)
    K, kind = sample["meta"]["chunks"], seq.kind_L
    P = 0 if sample["video_KPFHWC"] is None else sample["video_KPFHWC"].shape[1]
    L = len(seq)
    assert seq.kind_L.dtype == np.uint8 and seq.logmel_LM.dtype == np.float16 and seq.dmel_LM.dtype == np.uint8
    assert seq.dmel_LM.shape == seq.logmel_LM.shape == (L, 80)
    assert all(a.shape == (L,) for a in (seq.text_L, seq.video_L, seq.time_L))
    counts = {k: int(np.count_nonzero(kind == k)) for k in Kind}
    assert counts[Kind.USER_AUDIO] == counts[Kind.MODEL_AUDIO] == 4 * K
    assert counts[Kind.CHUNK_MARK] == counts[Kind.MODEL_MARK] == K and counts[Kind.VIDEO] == K * P
    assert counts[Kind.PAD] == 0 and seq.chunks == K
    # Chunk by chunk, the kinds in the layout's order (CHUNK_ORDER), from CHUNK_MARK.
    rank = np.zeros(len(Kind), int)
    rank[list(CHUNK_ORDER)] = np.arange(len(CHUNK_ORDER))
    assert np.all(np.diff(seq.time_L) >= 0) and seq.time_L[0] == 0 and seq.time_L[-1] == K - 1
    for k in range(K):
        in_chunk = kind[seq.time_L == k]
        assert in_chunk[0] == Kind.CHUNK_MARK and np.all(np.diff(rank[in_chunk]) >= 0)
        for role, text_kind in (("user", Kind.USER_TEXT), ("model", Kind.MODEL_TEXT)):
            ids = seq.text_L[(seq.time_L == k) & (kind == text_kind)]
            assert TOK.decode(ids) == _texts(sample, role, k)
    # Every audio frame is the sample's, in order; nothing leaks into other positions.
    assert np.array_equal(seq.dmel_LM[kind == Kind.MODEL_AUDIO], sample["dmel"]["model"])
    assert np.array_equal(seq.dmel_LM[kind == Kind.USER_AUDIO], sample["dmel"]["user"])
    assert np.array_equal(seq.logmel_LM[kind == Kind.MODEL_AUDIO], sample["logmel_TM"])
    audio = (kind == Kind.MODEL_AUDIO) | (kind == Kind.USER_AUDIO)
    assert not seq.dmel_LM[~audio].any() and not seq.logmel_LM[kind != Kind.MODEL_AUDIO].any()
    text = (kind == Kind.MODEL_TEXT) | (kind == Kind.USER_TEXT) | (kind == Kind.BACKGROUND_TEXT)
    assert not seq.text_L[~text].any()
    # Background: every result's tokens in arrival order, none lost in a window this roomy.
    results = sorted(sample["words"]["background"], key=lambda w: w["start_ms"])
    assert seq.background_cut == 0
    assert TOK.decode(seq.text_L[kind == Kind.BACKGROUND_TEXT]) == "".join(" " + w["text"] for w in results)
    # Video: patch p of chunk k at the p-th VIDEO position of chunk k.
    assert np.array_equal(seq.video_L[kind == Kind.VIDEO], np.arange(K * P))
    assert np.all(seq.video_L[kind != Kind.VIDEO] == -1) and seq.video_PFHWC.shape == (K * P, 2, 40, 40, 3)
    if P:
        assert np.array_equal(seq.video_PFHWC.reshape(K, P, 2, 40, 40, 3), sample["video_KPFHWC"])


def test_words_join_with_a_leading_space_in_start_order_and_long_text_is_cut_and_counted():
    words = {"user": [(0, 120, "world"), (0, 10, "hello")],
             "model": [(1, 0, "abcdefghij"), (1, 5, "klmnopqrst"), (2, 0, "ok")]}
    sample = _sample("cut", 3, None, words)
    with pytest.warns(UserWarning, match=r"cut: cut 6 text token\(s\) in 1 chunk\(s\) over max_text_per_chunk=16"):
        seq = build_sequence(sample, TOK)
    assert seq.text_cut == 6
    user0 = seq.text_L[(seq.time_L == 0) & (seq.kind_L == Kind.USER_TEXT)]
    assert TOK.decode(user0) == " hello world"
    model1 = seq.text_L[(seq.time_L == 1) & (seq.kind_L == Kind.MODEL_TEXT)]
    assert TOK.decode(model1) == " abcdefghij klmn"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_sequence(sample, TOK, max_text_per_chunk=22).text_cut == 0


def test_without_user_text_only_the_user_words_go():
    words = {"user": [(0, 10, "hello"), (1, 0, "there")], "model": [(1, 50, "hi")]}
    sample = _sample("nouser", 3, 1, words)
    full, bare = build_sequence(sample, TOK), build_sequence(sample, TOK, user_text=False)
    assert not np.any(bare.kind_L == Kind.USER_TEXT) and np.any(full.kind_L == Kind.USER_TEXT)
    kept = full.kind_L != Kind.USER_TEXT  # every other position is the same, in the same order
    for name in ("kind_L", "text_L", "dmel_LM", "logmel_LM", "video_L", "time_L"):
        assert np.array_equal(getattr(full, name)[kept], getattr(bare, name)), name
    assert TOK.decode(bare.text_L[bare.kind_L == Kind.MODEL_TEXT]) == " hi"


def test_an_hf_tokenizer_drives_the_text_positions(tmp_path):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world"] * 3 + ["hello there"], trainers.BpeTrainer(
        vocab_size=280, special_tokens=["[PAD]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = HFTokenizer(tmp_path / "tokenizer.json")
    seq = build_sequence(_sample("hf", 2, None, {"user": [(1, 0, "hello"), (1, 90, "there")], "model": []}), hf)
    ids = seq.text_L[seq.kind_L == Kind.USER_TEXT]
    assert 2 <= len(ids) < len(" hello there") and hf.decode(ids) == " hello there"
    assert np.all(seq.time_L[seq.kind_L == Kind.USER_TEXT] == 1)


def test_bad_samples_raise_value_errors():
    good = _sample("bad", 2, 1, {"user": [], "model": []})
    with pytest.raises(ValueError, match="chunk 5 outside 0..1"):
        build_sequence({**good, "words": {"user": [{"text": "x", "start_ms": 0, "end_ms": 1, "chunk": 5}],
                                          "model": []}}, TOK)
    with pytest.raises(ValueError, match=r"dmel\['model'\] must be uint8 \(8, 80\)"):
        build_sequence({**good, "dmel": {"user": good["dmel"]["user"], "model": good["dmel"]["model"][:4]}}, TOK)
    with pytest.raises(ValueError, match="video_KPFHWC must be uint8"):
        build_sequence({**good, "video_KPFHWC": good["video_KPFHWC"][:1]}, TOK)
    with pytest.raises(ValueError, match="at least one sequence"):
        collate([], max_len=10, pack=True)
    with pytest.raises(ValueError, match="shorter than every chunk"):
        collate([build_sequence(good, TOK)], max_len=5, pack=True)


def _check_batch(batch: dict, seqs: list, max_len: int, pack: bool) -> None:
    B, L = batch["kind_BL"].shape
    dtypes = {"kind_BL": torch.int64, "text_BL": torch.int64, "dmel_BLM": torch.uint8, "logmel_BLM": torch.float16,
              "video_PFHWC": torch.uint8, "video_BL": torch.int64, "time_BL": torch.int64, "segment_BL": torch.int64}
    assert set(batch) == set(dtypes) | {"keys"}
    for name, dtype in dtypes.items():
        assert batch[name].dtype == dtype, name
    assert batch["dmel_BLM"].shape == batch["logmel_BLM"].shape == (B, L, 80)
    assert batch["video_PFHWC"].shape[1:] == (2, 40, 40, 3)
    assert all(batch[n].shape == (B, L) for n in ("text_BL", "video_BL", "time_BL", "segment_BL"))
    # Every sequence arrives whole or as pieces of whole chunks, each piece once.
    pieces = {(p.key, int(p.time_L[0])): p for s in seqs for p in s.pieces(max_len)[0]}
    assert L <= max_len and sorted(batch["keys"]) == sorted(k for k, _ in pieces)
    seg, kind = batch["segment_BL"].numpy(), batch["kind_BL"].numpy()
    pad = seg == 0
    assert np.all((kind == Kind.PAD) == pad) and not batch["time_BL"].numpy()[pad].any()
    assert np.all(batch["video_BL"].numpy()[pad] == -1) and not batch["dmel_BLM"].numpy()[pad].any()
    if not pack:
        assert B == len(pieces) and seg.max() == 1
    keys = iter(batch["keys"])
    video = batch["video_PFHWC"].numpy()
    for b in range(B):
        row_segments = [int(x) for x in np.unique(seg[b]) if x]
        assert row_segments == list(range(1, len(row_segments) + 1))
        n_used = int((~pad[b]).sum())
        assert not pad[b][:n_used].any() and np.all(np.diff(seg[b][:n_used]) >= 0)  # PAD only at the end
        for sg in row_segments:
            at = seg[b] == sg
            s = pieces[(next(keys), int(batch["time_BL"][b, at][0]))]
            assert at.sum() == len(s)
            assert np.array_equal(kind[b, at], s.kind_L) and np.array_equal(batch["text_BL"][b, at].numpy(), s.text_L)
            assert np.array_equal(batch["dmel_BLM"][b, at].numpy(), s.dmel_LM)
            assert np.array_equal(batch["logmel_BLM"][b, at].numpy(), s.logmel_LM)
            assert np.array_equal(batch["time_BL"][b, at].numpy(), s.time_L)
            v = batch["video_BL"][b, at].numpy()
            assert np.array_equal(v >= 0, s.video_L >= 0)
            assert np.array_equal(video[v[v >= 0]], s.video_PFHWC[s.video_L[s.video_L >= 0]])
    assert sum(len(s) for s in pieces.values()) == int((~pad).sum())
    assert video.shape[0] == sum(s.video_PFHWC.shape[0] for s in pieces.values())


def _chunk_lengths(seq) -> np.ndarray:
    starts, ends = seq.chunk_bounds()
    return ends - starts


@PROPS
@given(st.lists(samples(), min_size=1, max_size=5), st.integers(12, 400), st.booleans())
def test_collate_keeps_every_chunk_that_fits_and_segments_never_mix(samples_, max_len, pack):
    samples_ = [{**s, "key": f"k{i}"} for i, s in enumerate(samples_)]
    seqs = [build_sequence(s, TOK, max_text_per_chunk=4, warn=False) for s in samples_]
    too_long = sum(int((_chunk_lengths(s) > max_len).sum()) for s in seqs)
    if too_long == sum(s.chunks for s in seqs):
        with pytest.raises(ValueError, match="shorter than every chunk"):
            collate(seqs, max_len=max_len, pack=pack)
        return
    counts: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with counts, nothing is warned
        batch = collate(seqs, max_len=max_len, pack=pack, counts=counts)
    assert counts["dropped_chunks"] == too_long
    assert counts["split"] == sum(len(s) > max_len for s in seqs)
    n_chunks = int((batch["kind_BL"] == Kind.CHUNK_MARK).sum())
    assert n_chunks == sum(s.chunks for s in seqs) - too_long
    _check_batch(batch, seqs, max_len, pack)
    mask = attention_mask(batch["segment_BL"])
    B, L = batch["kind_BL"].shape
    assert mask.shape == (B, 1, L, L) and mask.dtype == torch.bool
    seg = batch["segment_BL"]
    i, j = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    allowed = (seg[:, :, None] == seg[:, None, :]) & (j <= i) & (seg[:, :, None] != 0) | (i == j)
    assert torch.equal(mask[:, 0], allowed)
    assert mask.any(dim=-1).all()  # no empty softmax row
    if too_long:  # without counts: one warning for the call, however many sequences lost chunks
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            collate(seqs, max_len=max_len, pack=pack)
        assert len(caught) == 1 and f"left out {too_long} chunk(s)" in str(caught[0].message)


def test_a_long_sequence_is_split_at_chunk_boundaries_with_its_times():
    seq = build_sequence(_sample("long", 5, 2, {"user": [], "model": []}), TOK)
    per_chunk = 1 + 4 + 2 + 1 + 4
    assert len(seq) == 5 * per_chunk
    counts: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = collate([seq], max_len=3 * per_chunk + 5, pack=True, counts=counts)
    assert counts == {"split": 1, "pieces": 2, "dropped_chunks": 0}
    assert batch["kind_BL"].shape == (2, 36) and batch["keys"] == ["long", "long"]
    assert batch["time_BL"][0].tolist() == np.repeat([0, 1, 2], per_chunk).tolist()
    assert batch["time_BL"][1, :24].tolist() == np.repeat([3, 4], per_chunk).tolist()
    assert batch["video_PFHWC"].shape[0] == 10  # every patch, in order
    assert np.array_equal(batch["video_PFHWC"].numpy(), seq.video_PFHWC)


def test_packing_is_first_fit_in_order():
    lens = {}
    seqs = []
    for i, K in enumerate([3, 1, 2, 1]):
        seqs.append(build_sequence(_sample(f"s{i}", K, None, {"user": [], "model": []}), TOK))
        lens[f"s{i}"] = len(seqs[-1])
    assert lens == {"s0": 30, "s1": 10, "s2": 20, "s3": 10}
    batch = collate(seqs, max_len=40, pack=True)
    # s0 (30) opens row 0, s1 (10) fills it; s2 (20) opens row 1, s3 (10) joins it.
    assert batch["keys"] == ["s0", "s1", "s2", "s3"] and batch["kind_BL"].shape == (2, 40)
    assert batch["segment_BL"][0].tolist() == [1] * 30 + [2] * 10
    assert batch["segment_BL"][1].tolist() == [1] * 20 + [2] * 10 + [0] * 10
    padded = collate(seqs, max_len=40, pack=False)
    assert padded["kind_BL"].shape == (4, 30) and padded["segment_BL"].sum(1).tolist() == [30, 10, 20, 10]


def test_attention_mask_and_loss_positions_on_a_small_row():
    seg = torch.tensor([[1, 1, 2, 2, 0]])
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [0, 0, 1, 0, 0],
                             [0, 0, 1, 1, 0],
                             [0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(attention_mask(seg)[0, 0], expected)
    assert torch.equal(attention_mask(seg.numpy())[0, 0], expected)
    K_ = Kind
    kind = torch.tensor([[K_.CHUNK_MARK, K_.USER_AUDIO, K_.MODEL_MARK, K_.MODEL_TEXT, K_.MODEL_AUDIO, K_.CHUNK_MARK,
                          K_.MODEL_MARK, K_.MODEL_AUDIO, K_.PAD]])
    masks = loss_positions(kind)
    text_BL, audio_BL = masks
    assert text_BL.tolist() == [[False, False, True, False, False, False, False, False]]
    assert audio_BL.tolist() == [[False, False, False, True, False, False, True, False]]
    assert masks.text_BL.shape == (1, 8)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        attention_mask(torch.zeros(3, dtype=torch.int64))


def test_a_150_chunk_video_window_under_tiny_cpu_max_len_keeps_every_chunk():
    """The issue's case: a 30 s window (150 chunks) with the shard stage's default 48-patch video
    budget is ~60 positions a chunk, 9000 in all, against tiny-cpu's 512-position rows. Every
    chunk arrives, with the rotary positions and loss targets it has in the whole sequence."""
    from microturn.trainer.train_config import load_named
    from microturn.trainer.transformer import rotary_positions

    cfg = load_named("tiny-cpu")
    max_len, stride = cfg.train.max_len, cfg.model.chunk_stride
    K, P = 150, 48
    rng = np.random.default_rng(0)
    words = {r: [(int(k), int(rng.integers(0, 200)), "word") for k in rng.choice(K, 60, replace=False)]
             for r in ("user", "model")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per sample
        seq = build_sequence(_sample("video", K, P, words), TOK)
        counts: dict[str, int] = {}
        batch = collate([seq], max_len=max_len, pack=True, counts=counts)
    assert len(seq) > 8000 and counts["dropped_chunks"] == 0 and counts["pieces"] >= len(seq) // max_len
    whole = collate([seq], max_len=len(seq), pack=True)
    seg, kind = batch["segment_BL"], batch["kind_BL"]
    assert batch["kind_BL"].shape[1] <= max_len and int((kind == Kind.CHUNK_MARK).sum()) == K
    # Laid end to end by their first chunk, the pieces are the whole sequence, position for position.
    pos = rotary_positions(batch["time_BL"], seg, chunk_stride=stride)
    pos_whole = rotary_positions(whole["time_BL"], whole["segment_BL"], chunk_stride=stride)[0]
    parts = sorted((int(batch["time_BL"][b, seg[b] == s][0]), b, s) for b in range(seg.shape[0])
                    for s in range(1, int(seg[b].max()) + 1))
    joined = {name: torch.cat([batch[name][b, seg[b] == s] for _, b, s in parts])
              for name in ("kind_BL", "text_BL", "dmel_BLM", "logmel_BLM", "time_BL")}
    assert torch.equal(torch.cat([pos[b, seg[b] == s] for _, b, s in parts]), pos_whole)
    for name, value in joined.items():
        assert torch.equal(value, whole[name][0]), name
    assert torch.equal(torch.cat([batch["video_PFHWC"][batch["video_BL"][b, seg[b] == s][
        batch["video_BL"][b, seg[b] == s] >= 0]] for _, b, s in parts]), torch.from_numpy(seq.video_PFHWC))
    # Every model-side position is a next-item target in its piece, as in the whole sequence.
    masks, masks_whole = loss_positions(kind), loss_positions(whole["kind_BL"])
    assert int(masks.text_BL.sum()) == int(masks_whole.text_BL.sum()) == int((seq.kind_L == Kind.MODEL_TEXT).sum())
    assert int(masks.audio_BL.sum()) == int(masks_whole.audio_BL.sum()) == 4 * K
    targets = sorted((int(t), int(d.sum())) for t, d in zip(batch["time_BL"][:, 1:][masks.audio_BL],
                                                               batch["dmel_BLM"][:, 1:][masks.audio_BL], strict=True))
    targets_whole = sorted((int(t), int(d.sum())) for t, d in zip(whole["time_BL"][:, 1:][masks_whole.audio_BL],
                                                                   whole["dmel_BLM"][:, 1:][masks_whole.audio_BL],
                                                                   strict=True))
    assert targets == targets_whole
