"""Tests of the interaction model's parts (``microturn.trainer`` config, embed, transformer,
heads, model) on CPU in fp32, with batch dicts built by hand after the trainer spec.

Shape suffixes follow microturn.schemas.legend: B batch rows, L positions, D model width,
M = 80 mel channels, P video patches, U target positions, F = 2 frames, H = W = 40 pixels,
C = 3 colours.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.trainer.config import ModelConfig
from microturn.trainer.embed import DmelEmbedding, HMLPStem, InputEmbedding
from microturn.trainer.heads import FlowHead
from microturn.trainer.model import InteractionModel, block_params, count_params, flops_per_token, init_parameters
from microturn.trainer.transformer import MoEFeedForward, attention_mask, rotary_positions

# Kind values of the trainer spec (trainer/batch.py's Kind).
PAD, CHUNK_MARK, USER_TEXT, USER_AUDIO, VIDEO, MODEL_MARK, MODEL_TEXT, MODEL_AUDIO = range(8)
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY = dict(dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=64, n_experts=4, top_k=2,
            moe_every=2, vocab_size=40, flow_hidden=32, flow_depth=1, min_capacity=1)


def sequence(rng: np.random.Generator, chunks: int, patches: int, vocab: int) -> dict:
    """One sample's positions per the spec, as numpy arrays (video indices local)."""
    kind, text, time_, video = [], [], [], []
    for k in range(chunks):
        parts = [(CHUNK_MARK, 1), (USER_TEXT, int(rng.integers(0, 3))), (USER_AUDIO, 4),
                 (VIDEO, patches), (MODEL_MARK, 1), (MODEL_TEXT, int(rng.integers(0, 3))),
                 (MODEL_AUDIO, 4)]
        for what, count in parts:
            for _ in range(count):
                kind.append(what)
                text.append(int(rng.integers(1, vocab)) if what in (USER_TEXT, MODEL_TEXT) else 0)
                video.append(0 if what == VIDEO else -1)
                time_.append(k)
    kind_L = np.array(kind)
    audio_L = np.isin(kind_L, (USER_AUDIO, MODEL_AUDIO))
    dmel_LM = np.where(audio_L[:, None], rng.integers(0, 16, (len(kind), 80)), 0).astype(np.uint8)
    logmel_LM = np.where((kind_L == MODEL_AUDIO)[:, None],
                         rng.uniform(-7, 2, (len(kind), 80)), 0).astype(np.float16)
    video_L = np.array(video)
    video_L[video_L >= 0] = np.arange((video_L >= 0).sum())  # chunk-major: patch p of chunk k is k P + p
    pixels = rng.integers(0, 256, (chunks * patches, 2, 40, 40, 3), dtype=np.uint8)
    return dict(kind=kind_L, text=np.array(text), dmel=dmel_LM, logmel=logmel_LM, video=video_L,
                time=np.array(time_), pixels=pixels)


def make_batch(seed: int = 0, rows: tuple[tuple[tuple[int, int], ...], ...] = (((2, 1), (1, 0)), ((3, 2),)),
               vocab: int = 40) -> dict:
    """Batch dict of the spec: each row packs samples given as (chunks, patches per chunk)."""
    rng = np.random.default_rng(seed)
    seqs = [[sequence(rng, c, p, vocab) for c, p in row] for row in rows]
    length = max(sum(len(s["kind"]) for s in row) for row in seqs) + 3  # some PAD at the end
    b = len(rows)
    batch = dict(kind_BL=np.zeros((b, length), np.int64), text_BL=np.zeros((b, length), np.int64),
                 dmel_BLM=np.zeros((b, length, 80), np.uint8),
                 logmel_BLM=np.zeros((b, length, 80), np.float16),
                 video_BL=np.full((b, length), -1, np.int64), time_BL=np.zeros((b, length), np.int64),
                 segment_BL=np.zeros((b, length), np.int64))
    pixels, n = [], 0
    for r, row in enumerate(seqs):
        at = 0
        for seg, s in enumerate(row, start=1):
            sl = slice(at, at + len(s["kind"]))
            batch["kind_BL"][r, sl], batch["text_BL"][r, sl] = s["kind"], s["text"]
            batch["dmel_BLM"][r, sl], batch["logmel_BLM"][r, sl] = s["dmel"], s["logmel"]
            batch["time_BL"][r, sl], batch["segment_BL"][r, sl] = s["time"], seg
            batch["video_BL"][r, sl] = np.where(s["video"] >= 0, s["video"] + n, -1)
            pixels.append(s["pixels"])
            n += len(s["pixels"])
            at += len(s["kind"])
    out: dict[str, torch.Tensor | list[str]] = {k: torch.from_numpy(v) for k, v in batch.items()}
    out["video_PFHWC"] = torch.from_numpy(np.concatenate(pixels))
    out["keys"] = [f"k{i}" for i in range(sum(len(r) for r in rows))]
    return out


def tiny(**over) -> ModelConfig:
    return ModelConfig(**{**TINY, **over})


# ---------------------------------------------------------------- config


def test_config_validation_messages():
    assert ModelConfig().expert_hidden == ModelConfig().ffn_dim
    assert [ModelConfig(layers=4, moe_every=2).is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert ModelConfig(moe_every=0).moe_layers == 0
    out_of_range: list[dict[str, Any]] = [
        dict(heads=6, kv_heads=4), dict(head_dim=7), dict(top_k=9), dict(moe_every=9),
        dict(capacity_factor=0.0), dict(dim=30), dict(layers=0), dict(z_loss_weight=-1.0)]
    for bad in out_of_range:
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    wrong_type: list[dict[str, Any]] = [
        dict(dim=32.0), dict(second_expert_sampling=1), dict(rope_base="1e4"), dict(layers=True)]
    for bad in wrong_type:
        with pytest.raises(TypeError):
            ModelConfig(**bad)
    with pytest.raises(TypeError):
        ModelConfig(512)  # pyright: ignore[reportCallIssue]  # keyword-only: the refused call is the point


# ---------------------------------------------------------------- embeddings


def test_dmel_embedding_is_the_sum_of_80_rows():
    emb = DmelEmbedding(24)
    init_parameters(emb, cfg=tiny(), seed=0)
    dmel_BLM = torch.randint(0, 16, (2, 3, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out_BLD = emb(dmel_BLM)
    table = emb.table.weight
    for b in range(2):
        for i in range(3):
            rows = [table[16 * c + int(dmel_BLM[b, i, c])] for c in range(80)]
            torch.testing.assert_close(out_BLD[b, i], torch.stack(rows).sum(0), rtol=1e-5, atol=1e-5)


def test_hmlp_shape_and_patch_independence():
    stem = HMLPStem(32)
    init_parameters(stem, cfg=tiny(), seed=0)
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (5, 2, 40, 40, 3), dtype=torch.uint8, generator=g)
    out_PD = stem(video)
    assert out_PD.shape == (5, 32)
    changed = video.clone()
    changed[2] = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8, generator=g)
    out2_PD = stem(changed)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out2_PD[keep], out_PD[keep], rtol=0, atol=1e-6)
    assert (out2_PD[2] - out_PD[2]).abs().max() > 1e-3
    # Alone or in a batch: the same vector (no batch statistics).
    torch.testing.assert_close(stem(video[3:4])[0], out_PD[3], rtol=1e-5, atol=1e-6)
    # Both frames and every 10 x 10 sub-patch reach the output.
    for frame, y, x in [(0, 0, 0), (1, 39, 39), (1, 15, 25)]:
        poked = video.clone()
        poked[0, frame, y, x] ^= 0x80
        assert (stem(poked)[0] - out_PD[0]).abs().max() > 0
    with pytest.raises(ValueError):
        stem(torch.zeros(1, 2, 40, 40, dtype=torch.uint8))


def test_input_embedding_scatters_each_modality():
    cfg = tiny()
    emb = InputEmbedding(cfg)
    init_parameters(emb, cfg=cfg, seed=3)
    batch = make_batch(1)
    x_BLD = emb(batch)
    kind_BL = batch["kind_BL"]
    assert x_BLD.shape == (*kind_BL.shape, cfg.dim)
    patches_PD = emb.video(batch["video_PFHWC"])
    dmel_BLD = emb.dmel(batch["dmel_BLM"])
    seen = set()
    for b, i in zip(*torch.nonzero(torch.ones_like(kind_BL)).T.tolist(), strict=True):
        kind = int(kind_BL[b, i])
        expected = emb.kind.weight[kind].clone()
        if kind in (USER_TEXT, MODEL_TEXT):
            expected += emb.text.weight[batch["text_BL"][b, i]]
        elif kind in (USER_AUDIO, MODEL_AUDIO):
            expected += dmel_BLD[b, i]
        elif kind == VIDEO:
            expected += patches_PD[batch["video_BL"][b, i]]
        torch.testing.assert_close(x_BLD[b, i], expected, rtol=1e-5, atol=1e-6)
        seen.add(kind)
    assert seen == set(range(8))
    no_video = dict(batch, video_PFHWC=batch["video_PFHWC"][:0])
    with pytest.raises(ValueError, match="VIDEO"):
        emb(no_video)


# ---------------------------------------------------------------- positions and attention


@PROPS
@given(st.lists(st.tuples(st.integers(1, 3), st.lists(st.integers(1, 9), min_size=1, max_size=5)),
                min_size=1, max_size=3), st.integers(0, 4))
def test_rotary_positions_keep_chunk_order_and_time(samples, pad):
    time_, segment = [], []
    for seg, (_, chunk_sizes) in enumerate(samples, start=1):
        for k, size in enumerate(chunk_sizes):
            time_ += [k] * size
            segment += [seg] * size
    time_ += [0] * pad
    segment += [0] * pad
    pos_L = rotary_positions(torch.tensor([time_]), torch.tensor([segment]), chunk_stride=10)[0].tolist()
    for i in range(len(pos_L)):
        if segment[i] == 0:
            continue
        assert pos_L[i] // 10 == time_[i]  # chunk k lives in [10 k, 10 k + 10)
        starts = i == 0 or segment[i - 1] != segment[i] or time_[i - 1] != time_[i]
        assert (pos_L[i] % 10 == 0) == starts
        if i and segment[i - 1] == segment[i]:
            assert pos_L[i] > pos_L[i - 1]  # strictly increasing along a segment


def test_rotary_positions_reject_overfull_chunks_and_late_times():
    with pytest.raises(ValueError, match="chunk_stride"):
        rotary_positions(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.long), chunk_stride=4)
    with pytest.raises(ValueError, match="max_time"):
        rotary_positions(torch.tensor([[0, 7]]), torch.ones(1, 2, dtype=torch.long), chunk_stride=4, max_time=7)
    # A long PAD tail is one run of time 0 but is never attended: no error.
    segment_BL = torch.tensor([[1, 1, 1] + [0] * 20])
    rotary_positions(torch.zeros_like(segment_BL), segment_BL, chunk_stride=4)


@PROPS
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12))
def test_attention_mask_is_causal_within_segments(segment):
    mask_LL = attention_mask(torch.tensor([segment]))[0, 0]
    for i, si in enumerate(segment):
        for j, sj in enumerate(segment):
            expected = (j <= i and si == sj and si > 0) or i == j
            assert bool(mask_LL[i, j]) == expected


def hidden(model: InteractionModel, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.hidden(batch)[0]


def test_segments_do_not_see_each_other_and_attention_is_causal():
    model = InteractionModel(tiny(moe_every=0), seed=1).eval()
    batch = make_batch(2)
    h_BLD = hidden(model, batch)
    seg_BL = batch["segment_BL"]
    first, second = seg_BL[0] == 1, seg_BL[0] == 2
    # Change a token of segment 2 in row 0: segment 1 and row 1 are untouched.
    i2 = int(torch.nonzero(second & (batch["kind_BL"][0] == USER_AUDIO))[-1])
    changed = dict(batch, dmel_BLM=batch["dmel_BLM"].clone())
    changed["dmel_BLM"][0, i2] = (changed["dmel_BLM"][0, i2] + 5) % 16
    h2_BLD = hidden(model, changed)
    torch.testing.assert_close(h2_BLD[0, first], h_BLD[0, first], rtol=0, atol=1e-6)
    torch.testing.assert_close(h2_BLD[1], h_BLD[1], rtol=0, atol=1e-6)
    assert (h2_BLD[0, i2] - h_BLD[0, i2]).abs().max() > 1e-4
    # Causality: changing position j of row 1 leaves every i < j unchanged and changes j onwards.
    j = int(torch.nonzero(batch["kind_BL"][1] == MODEL_AUDIO)[3])
    later = dict(batch, dmel_BLM=batch["dmel_BLM"].clone())
    later["dmel_BLM"][1, j] = (later["dmel_BLM"][1, j] + 7) % 16
    h3_BLD = hidden(model, later)
    torch.testing.assert_close(h3_BLD[1, :j], h_BLD[1, :j], rtol=0, atol=1e-6)
    assert (h3_BLD[1, j + 1] - h_BLD[1, j + 1]).abs().max() > 1e-5
    assert torch.isfinite(h_BLD).all()  # PAD rows included


def test_hidden_states_depend_on_time_lags_only():
    """Rotary positions are relative: shifting a sample's clock leaves its states unchanged,
    while a different spacing of the chunks does not."""
    model = InteractionModel(tiny(moe_every=0), seed=1).eval()
    batch = make_batch(3)
    h_BLD = hidden(model, batch)
    real_BL = batch["segment_BL"] > 0
    shifted = dict(batch, time_BL=torch.where(real_BL, batch["time_BL"] + 1234, 0))
    torch.testing.assert_close(hidden(model, shifted)[real_BL], h_BLD[real_BL], rtol=1e-4, atol=1e-4)
    stretched = dict(batch, time_BL=batch["time_BL"] * 2)
    assert (hidden(model, stretched)[real_BL] - h_BLD[real_BL]).abs().max() > 1e-3


# ---------------------------------------------------------------- heads


def test_flow_head_samples_approach_conditional_targets():
    """Toy conditional target: 4 conditions, each with its own log-mel frame. After a few
    hundred Adam steps the Euler samples land near the frame of their condition, and more
    Euler steps do not drift away."""
    cfg = tiny(flow_hidden=128, flow_depth=2)  # wider than the 80-dim point it carries
    head = FlowHead(cfg)
    init_parameters(head, cfg=cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    cond_UD = torch.randn(4, cfg.dim, generator=g)
    target_UM = torch.rand(4, 80, generator=g) * 9 - 7  # in [-7, 2]
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, 4, (64,), generator=g)
        loss = head.loss(cond_UD[idx], target_UM[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h_UD = cond_UD.repeat_interleave(8, 0)
    goal_UM = target_UM.repeat_interleave(8, 0)
    err = {steps: (head.sample(h_UD, steps, generator=torch.Generator().manual_seed(1)) - goal_UM)
           .abs().mean().item() for steps in (1, 8, 32, 128)}
    spread = (target_UM - target_UM.mean(0)).abs().mean().item()  # error of ignoring the condition
    assert err[32] < 0.3 * spread, (err, spread)  # measured 0.19
    assert err[128] < 1.25 * err[32] + 0.05, err  # more steps do not diverge
    assert err[8] < err[1], err


def test_heads_give_zero_loss_without_targets():
    cfg = tiny()
    model = InteractionModel(cfg, seed=0)
    empty = torch.zeros(0, cfg.dim, requires_grad=True)
    for loss in (model.text_head.loss(empty, torch.zeros(0, dtype=torch.long)),
                 model.dmel_head.loss(empty, torch.zeros(0, 80, dtype=torch.uint8)),
                 model.flow_head.loss(empty, torch.zeros(0, 80))):
        assert loss.item() == 0.0
        loss.backward()


# ---------------------------------------------------------------- whole model


@pytest.mark.parametrize("patches", [0, 1], ids=["no-video", "video"])
def test_every_parameter_gets_a_gradient(patches):
    # ZeRO 1/2 reduce gradients in buckets filled from backward hooks: a parameter that one rank's
    # batch leaves out of the graph (the hMLP stem without video) desynchronises the collectives.
    model = InteractionModel(tiny(), seed=0)
    batch = make_batch(5, rows=(((2, patches), (1, patches)), ((3, patches),)))
    assert batch["video_PFHWC"].shape[0] == 6 * patches
    model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    stem_grads: list[torch.Tensor] = []
    for p in model.embed.video.parameters():
        assert p.grad is not None  # as every parameter's, checked just above
        stem_grads.append(p.grad)
    assert all(bool(g.any()) for g in stem_grads) == bool(patches) and all(g.isfinite().all() for g in stem_grads)



def test_forward_losses_targets_and_counts():
    cfg = tiny()
    model = InteractionModel(cfg, seed=0)
    batch = make_batch(4)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.hidden_BLD.shape == (*batch["kind_BL"].shape, cfg.dim)
    assert set(out.losses) == {"text", "dmel", "flow", "aux", "z"}
    assert all(math.isfinite(v.item()) for v in out.losses.values())
    assert out.losses["text"].item() == pytest.approx(math.log(cfg.vocab_size), rel=0.2)
    assert out.losses["dmel"].item() == pytest.approx(math.log(16), rel=0.2)
    w = cfg
    total = (w.text_loss_weight * out.losses["text"] + w.dmel_loss_weight * out.losses["dmel"]
             + w.flow_loss_weight * out.losses["flow"] + w.aux_loss_weight * out.losses["aux"]
             + w.z_loss_weight * out.losses["z"])
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert len(out.moe_stats) == cfg.moe_layers == 1
    kind_BL = batch["kind_BL"]
    assert out.tokens["positions"].item() == int((kind_BL > 0).sum())
    assert out.tokens["model_audio"].item() == int((kind_BL == MODEL_AUDIO).sum())
    assert out.tokens["audio_targets"].item() == int((kind_BL == MODEL_AUDIO).sum())
    # Every chunk ends its model text once: at its first MODEL_AUDIO after the marker or a token.
    chunks = int((kind_BL == MODEL_MARK).sum())
    assert out.tokens["text_ends"].item() == chunks
    assert out.tokens["text_targets"].item() == int((kind_BL == MODEL_TEXT).sum()) + chunks
    # The text loss is the CE of the hidden state one position earlier, over the tokens and the
    # ends of text (class V of the text head), written out position by position.
    h_BLD = out.hidden_BLD.detach()
    prev_U, target_U = [], []
    for b, i in zip(*(t.tolist() for t in torch.nonzero(kind_BL[:, 1:] > 0, as_tuple=True)), strict=True):
        here, there = int(kind_BL[b, i]), int(kind_BL[b, i + 1])
        if there == MODEL_TEXT:
            prev_U.append(h_BLD[b, i])
            target_U.append(int(batch["text_BL"][b, i + 1]))
        elif there == MODEL_AUDIO and here in (MODEL_MARK, MODEL_TEXT):
            prev_U.append(h_BLD[b, i])
            target_U.append(cfg.vocab_size)
    logits = model.text_head.logits(torch.stack(prev_U))
    assert logits.shape[1] == cfg.vocab_size + 1
    manual = F.cross_entropy(logits, torch.tensor(target_U))
    assert out.losses["text"].item() == pytest.approx(manual.item(), rel=1e-5)


def test_loss_decreases_on_a_fixed_batch():
    cfg = tiny()
    model = InteractionModel(cfg, seed=0)
    batch = make_batch(5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        out = model(batch, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def _moe_layer(model: InteractionModel, block: int) -> MoEFeedForward:
    ffn = model.blocks[block].ffn
    assert isinstance(ffn, MoEFeedForward), block
    return ffn


def test_initialisation_is_seeded_and_experts_differ():
    cfg = tiny()
    a, b, c = (InteractionModel(cfg, seed=s) for s in (7, 7, 8))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if pa.numel() > 1 and pa.std() > 0:
            assert not torch.equal(pa, pc), name
    experts = _moe_layer(a, 1).local_experts()
    weights = [e.w1.weight for e in experts]
    assert all(not torch.equal(weights[0], w) for w in weights[1:])
    # Expert-parallel rank 1 of 2 holds global experts 2 and 3 with the same weights.
    half = InteractionModel(cfg, seed=7, ep_size=2, ep_rank=1)
    local = _moe_layer(half, 1).local_experts()
    assert len(local) == 2
    assert torch.equal(local[0].w1.weight, weights[2]) and torch.equal(local[1].w2.weight, experts[3].w2.weight)
    torch.testing.assert_close(half.embed.text.weight, a.embed.text.weight)


def test_parameter_counts_and_flops():
    cfg = tiny(n_experts=8, top_k=2, layers=4, moe_every=2)
    model = InteractionModel(cfg, seed=0)
    counts = count_params(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if "deepspeed_experts" in n)
    assert counts["active"] == counts["total"] - expert + expert * 2 // 8
    blocks = block_params(cfg)
    assert blocks["total"] == sum(p.numel() for p in model.blocks.parameters()) + cfg.dim
    assert counts["total"] - blocks["total"] == counts["active"] - blocks["active"]
    fpt = flops_per_token(cfg, seq_len=100)
    assert fpt == 6 * blocks["active"] + 12 * cfg.layers * cfg.heads * cfg.head_dim * 100
    with pytest.warns(UserWarning, match="seq_len"):
        assert flops_per_token(cfg) == 6 * blocks["active"]
    # Sharded over 2 expert-parallel ranks, the counts are still global.
    assert count_params(InteractionModel(cfg, seed=0, ep_size=2, ep_rank=0)) == counts
