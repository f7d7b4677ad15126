"""The live session (``trainer.session``): a model run 200 ms at a time over a KV cache.

* The layout is generatable: a model overfit on one real sample predicts, teacher-forced, each
  chunk's model text and then the end-of-text class exactly where the sample's text ends.
* Exactness: the hidden states and head logits of every position fed step by step equal one
  teacher-forced forward of the recorded sequence (fp32, CPU), with and without video and with
  user text arriving mid-session; with an attention window they equal the forward under that
  window, and differ from full attention once the session is longer than the window.
* Cost: each position is fed once, the positions per step stay flat and the cache's memory
  stops growing under a window.
* The MoE kernels give the session DeepSpeed's outputs; sampling is deterministic per seed;
  bad inputs are refused.

Shape suffixes follow microturn.schemas.legend: L positions, D model width, V text classes,
M mel channels, S dMel bins, K chunks, T frames, N audio samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from webdataset.compat import WebDataset

from microturn.schemas.sample import decode_sample
from microturn.trainer.batch import Kind, build_sequence, collate
from microturn.trainer.kv_cache import AttentionWindow, KVCache
from microturn.trainer.model import InteractionModel
from microturn.trainer.sampling import SamplingConfig
from microturn.trainer.session import ChunkOutput, Session, SessionConfig
from microturn.trainer.tokenizer import ByteTokenizer
from session_runs import one_thread, tiny_config, tiny_run, trained_run_dir, user_audio, video_frames
from trainer_shards import train_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# fp32 keeps 24 bits. The session and the whole-sequence forward add the same products in
# other orders (attention over a cache of another length, GEMMs of 1 row against L rows), a few
# roundings of 6e-8 per layer: measured 1.6e-7 to 3.7e-7 of the largest value over 30 chunks
# (hidden states, text and dMel logits). A position attending to keys outside its window moves
# them by 2.4e-2 (the window test below), a wrong rotary position likewise.
REL_TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value of ``b``."""
    return float((a - b).abs().max() / b.abs().max())


def _run_session(session: Session, chunks: int, *, video: bool = False,
                 texts: dict[int, str] | None = None) -> list[ChunkOutput]:
    audio = user_audio(chunks)
    texts = texts or {}
    return [session.step(audio[k], video_frames(k) if video else None, texts.get(k)) for k in range(chunks)]


# ----------------------------------------------------------------- generatable layout
def _sample_with_text_in_some_chunks() -> dict:
    """The shards' sample without video with the most chunks holding model text, among those
    where some hold none."""
    best, best_count = None, -1
    for raw in WebDataset(list(train_shards()), shardshuffle=False, nodesplitter=lambda urls: urls):
        sample = decode_sample(raw)
        if sample["video_KPFHWC"] is not None:
            continue
        said = {w["chunk"] for w in sample["words"]["model"]}
        if best_count < len(said) < sample["meta"]["chunks"]:
            best, best_count = sample, len(said)
    assert best is not None
    return best


def test_a_trained_text_head_rebuilds_each_chunks_text_and_its_end():
    sample = _sample_with_text_in_some_chunks()
    seq = build_sequence(sample, ByteTokenizer())
    batch = collate([seq], max_len=len(seq), pack=False)
    cfg = tiny_config()
    model = InteractionModel(cfg, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Overfit on the one sample: 100 steps already predict every text target (measured), 200
    # leave margin. The count of text tokens per chunk is learnt as the end-of-text target.
    for step in range(200):
        out = model(batch, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    decoder = InteractionModel(cfg, seed=0, dropless=True)
    decoder.load_state_dict(model.state_dict())
    decoder.eval()
    eot = decoder.text_head.end_of_text
    starts, ends = seq.chunk_bounds()
    expected = [[int(t) for t, kind in zip(seq.text_L[a:b], seq.kind_L[a:b], strict=True) if kind == Kind.MODEL_TEXT]
                for a, b in zip(starts, ends, strict=True)]
    assert any(expected) and not all(expected)  # chunks with text and chunks without

    # Teacher-forced: at the MODEL_MARK and each MODEL_TEXT of a chunk, the greedy choice is the
    # next token, then end-of-text.
    with torch.no_grad():
        h_LD = decoder.hidden(batch)[0][0]
        choice_L = decoder.text_head.logits(h_LD).argmax(-1)
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        asking = [i for i in range(a, b) if seq.kind_L[i] in (Kind.MODEL_MARK, Kind.MODEL_TEXT)]
        assert [int(choice_L[i]) for i in asking] == expected[k] + [eot], k

    # Generated: over the KV cache, each chunk's given positions are fed, its text is what the
    # head says until end-of-text (never the sample's), then the sample's audio is fed.
    feeder = _Feeder(decoder, seq)
    said: list[list[int]] = []
    for a, b in zip(starts, ends, strict=True):
        given = [i for i in range(a, b) if seq.kind_L[i] not in (Kind.MODEL_TEXT, Kind.MODEL_AUDIO)]
        h_D = feeder.feed(given)
        chunk_said: list[int] = []
        while (token := int(decoder.text_head.logits(h_D[None]).argmax(-1)[0])) != eot and len(chunk_said) < 16:
            chunk_said.append(token)
            h_D = feeder.feed([], said=token)
        said.append(chunk_said)
        feeder.feed([i for i in range(a, b) if seq.kind_L[i] == Kind.MODEL_AUDIO])
    assert said == expected


class _Feeder:
    """Feeds positions of a sequence without video to ``model.decode`` over a KV cache."""

    def __init__(self, model: InteractionModel, seq) -> None:
        cfg = model.cfg
        self.model, self.seq = model, seq
        self.cache = KVCache(layers=cfg.layers, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                             window=AttentionWindow())
        self.time, self.rank = 0, 0

    def feed(self, positions: list[int], *, said: int | None = None) -> torch.Tensor:
        """Feed ``positions`` of the sequence, or one MODEL_TEXT of token ``said`` in the current
        chunk; the hidden state of the last one [D]."""
        seq = self.seq
        rows = [(int(seq.kind_L[i]), int(seq.text_L[i]), seq.dmel_LM[i], int(seq.time_L[i])) for i in positions]
        if said is not None:
            rows.append((int(Kind.MODEL_TEXT), said, np.zeros(80, np.uint8), self.time))
        ranks = []
        for _, _, _, time in rows:
            if time != self.time:
                self.time, self.rank = time, 0
            ranks.append(self.rank)
            self.rank += 1
        kind_L, text_L, dmel_LM, time_L = (list(col) for col in zip(*rows, strict=True))
        inputs = {"kind_BL": torch.tensor([kind_L]), "text_BL": torch.tensor([text_L]),
                  "dmel_BLM": torch.from_numpy(np.stack(dmel_LM))[None],
                  "video_PFHWC": torch.zeros((0, 2, 40, 40, 3), dtype=torch.uint8),
                  "video_BL": torch.full((1, len(rows)), -1), "time_BL": torch.tensor([time_L])}
        positions_BL = torch.tensor([time_L]) * self.model.cfg.chunk_stride + torch.tensor([ranks])
        with torch.no_grad():
            return self.model.decode(inputs, positions_BL, self.cache)[0, -1]


# ----------------------------------------------------------------- exactness
def _teacher_forced(session: Session, window: AttentionWindow | None) -> tuple[torch.Tensor, ...]:
    """Hidden states [L, D], text logits [L, V + 1] and dMel logits [L, M, S] of one forward of
    the session's recorded sequence."""
    model = session.model
    with torch.no_grad():
        h_LD = model.hidden(session.recorded_batch(), window=window)[0][0]
        return h_LD, model.text_head.logits(h_LD), model.dmel_head.logits(h_LD)


def _stepped(session: Session) -> tuple[torch.Tensor, ...]:
    h_LD = session.recorded_hidden()
    with torch.no_grad():
        return h_LD, session.model.text_head.logits(h_LD), session.model.dmel_head.logits(h_LD)


@pytest.mark.parametrize("video", [False, True], ids=["audio", "video"])
def test_step_by_step_equals_one_teacher_forced_forward(video):
    # The trained run, its text sampled: chunks say 0 to 4 tokens (4 = forced end), so the
    # recorded sequence has chunks of many lengths. User text arrives at chunks 10 and 21.
    cfg = SessionConfig(window_chunks=None, text=SamplingConfig(greedy=False), max_text_per_chunk=4,
                        flow_steps=1, seed=3)
    session = Session(trained_run_dir(), cfg, record=True)
    outs = _run_session(session, 30, video=video, texts={10: "hello there", 21: "yes"})
    kind_L = session.recorded_batch()["kind_BL"][0]
    counts = [len(o.text_ids) for o in outs]
    assert 0 in counts and any(0 < c < 4 for c in counts), counts
    # Byte tokens, each chunk's cut to max_text_per_chunk as build_sequence cuts them in training.
    assert int((kind_L == Kind.USER_TEXT).sum()) == min(len(" hello there"), 4) + min(len(" yes"), 4)
    assert int((kind_L == Kind.VIDEO).sum()) == (2 * 30 if video else 0)  # 2 patches per chunk
    # Every position is fed once: no step recomputes the prefix.
    assert sum(o.positions for o in outs) == kind_L.shape[0]
    for name, got, want in zip(("hidden", "text logits", "dmel logits"), _stepped(session),
                               _teacher_forced(session, None), strict=True):
        assert got.shape[0] == kind_L.shape[0]
        assert _rel(got, want) <= REL_TOL, name


def test_a_window_equals_its_teacher_forced_twin_and_differs_from_full_attention():
    chunks = 4
    window = AttentionWindow(chunks=chunks, sink_chunks=1)
    cfg = SessionConfig(window_chunks=chunks, sink_chunks=window.sink_chunks, max_text_per_chunk=2,
                        flow_steps=1)
    session = Session(tiny_run(), cfg, record=True)
    assert session.window == window
    _run_session(session, 12, texts={5: "ok"})
    stepped = _stepped(session)
    for got, want in zip(stepped, _teacher_forced(session, window), strict=True):
        assert _rel(got, want) <= REL_TOL
    # Documented effect: within the first 4 chunks the window sees everything (the same as full
    # attention); later chunks lose the keys of chunks 1 .. t - 4 and differ.
    full_LD = _teacher_forced(session, None)[0]
    time_L = session.recorded_batch()["time_BL"][0]
    early, late = time_L < chunks, time_L >= chunks + 1
    assert _rel(stepped[0][early], full_LD[early]) <= REL_TOL
    assert _rel(stepped[0][late], full_LD[late]) > 1e-3  # measured 2.4e-2


# ----------------------------------------------------------------- flat cost, bounded memory
def test_the_cache_is_reused_and_bounded_by_the_window():
    window_chunks, sink = 8, 1
    cfg = SessionConfig(window_chunks=window_chunks, sink_chunks=sink, max_text_per_chunk=1, flow_steps=1)
    session = Session(tiny_run(), cfg)
    audio = user_audio(200)
    fed, held, nbytes = [], [], []
    for k in range(200):
        fed.append(session.step(audio[k]).positions)
        held.append(session.cache.length)
        nbytes.append(session.cache.nbytes())
    per_chunk = 1 + 4 + 1 + 1 + 4  # marks, user audio, the text token (forced end at 1), model audio
    # Flat: after the first step (which has no previous audio frame to feed) every step feeds
    # the same positions, whatever the session's length.
    assert fed[0] == per_chunk - 1 and set(fed[1:]) == {per_chunk}
    # Bounded: the cache holds the window, the sink and the chunk being fed at most.
    assert max(held) <= (window_chunks + sink + 1) * per_chunk
    assert held[-1] == held[100] < sum(fed)
    assert nbytes[-1] == nbytes[20]  # the storage stopped growing once the window was full
    # Without a window the cache holds every position: memory grows with the session.
    unbounded = Session(tiny_run(), SessionConfig(window_chunks=None, max_text_per_chunk=1, flow_steps=1))
    total = sum(unbounded.step(audio[k]).positions for k in range(20))
    assert unbounded.cache.length == total > held[-1]


# ----------------------------------------------------------------- MoE kernels
def test_moe_kernels_give_the_sessions_outputs_of_deepspeed():
    run = tiny_run()
    outs = {}
    for kernel in ("deepspeed", "gemv", "grouped", "auto"):
        session = Session(run, SessionConfig(moe_kernel=kernel, max_text_per_chunk=2, flow_steps=1))
        if kernel != "deepspeed":
            layer = session.model.moe_layers()[0]
            assert layer._stacked is not None  # built when the session loaded
            stacked = layer.expert_weights()[0]
        outs[kernel] = _run_session(session, 3)
        if kernel != "deepspeed":
            assert session.model.moe_layers()[0].expert_weights()[0] is stacked  # not rebuilt per step
    ref = outs["deepspeed"]
    for kernel in ("gemv", "grouped", "auto"):
        for a, b in zip(outs[kernel], ref, strict=True):
            assert a.text_ids == b.text_ids, kernel
            np.testing.assert_array_equal(a.dmel_TM, b.dmel_TM, err_msg=kernel)
            np.testing.assert_allclose(a.logmel_TM, b.logmel_TM, rtol=1e-4, atol=1e-4, err_msg=kernel)


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="moe_kernel"):
        SessionConfig(moe_kernel="cutlass")


def test_a_triton_kernel_on_a_cpu_without_the_interpreter_is_refused_at_load(monkeypatch):
    import triton.knobs

    monkeypatch.setattr(triton.knobs.runtime, "interpret", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        Session(tiny_run(), SessionConfig(moe_kernel="gemv"))
    Session(tiny_run(), SessionConfig(moe_kernel="deepspeed"))  # DeepSpeed's layer needs no Triton


# ----------------------------------------------------------------- outputs, seeds, inputs
def test_a_chunk_output_has_the_documented_shapes():
    session = Session(tiny_run(), SessionConfig(max_text_per_chunk=3, flow_steps=1))
    out = _run_session(session, 2, video=True, texts={0: "hi"})[-1]
    assert out.chunk == 1 and isinstance(out.text, str) and len(out.text_ids) <= 3
    assert out.text == ByteTokenizer().decode(out.text_ids)
    assert out.text_forced_end == (len(out.text_ids) == 3)
    assert out.dmel_TM.dtype == np.uint8 and out.dmel_TM.shape == (4, 80) and out.dmel_TM.max() < 16
    assert out.logmel_TM.dtype == np.float32 and out.logmel_TM.shape == (4, 80)
    assert out.audio_N.dtype == np.float32 and out.audio_N.shape == (3200,) and np.isfinite(out.audio_N).all()
    assert isinstance(out.voiced, bool) and out.compute_ms > 0
    # torch input is taken as NumPy is
    assert session.step(torch.from_numpy(user_audio(1)[0])).chunk == 2


def _outputs(cfg: SessionConfig, chunks: int = 4) -> list[tuple]:
    session = Session(tiny_run(), cfg)
    return [(o.text_ids, o.dmel_TM.tobytes(), o.logmel_TM.tobytes(), o.audio_N.tobytes())
            for o in _run_session(session, chunks)]


def test_a_session_is_the_same_for_the_same_seed_and_another_for_another():
    sampled = SamplingConfig(greedy=False, temperature=1.0, top_p=0.9)
    cfg = SessionConfig(text=sampled, audio=sampled, max_text_per_chunk=3, flow_steps=1, seed=5)
    first = _outputs(cfg)
    assert _outputs(cfg) == first  # same inputs, same seed: identical
    other = _outputs(SessionConfig(**{**cfg.__dict__, "seed": 6}))
    assert [o[:2] for o in other] != [o[:2] for o in first]  # the draws differ
    # Greedy text and audio do not depend on the seed; only the flow's noise does.
    greedy = [_outputs(SessionConfig(max_text_per_chunk=3, flow_steps=1, seed=s)) for s in (5, 6)]
    assert [o[:2] for o in greedy[0]] == [o[:2] for o in greedy[1]]
    assert [o[2] for o in greedy[0]] != [o[2] for o in greedy[1]]
    assert [o[:2] for o in greedy[0]] != [o[:2] for o in first]  # sampling is not greedy


def test_reset_starts_the_same_conversation_again():
    session = Session(tiny_run(), SessionConfig(text=SamplingConfig(greedy=False), max_text_per_chunk=2,
                                                flow_steps=1))
    first = [(o.text_ids, o.dmel_TM.tobytes(), o.audio_N.tobytes()) for o in _run_session(session, 3)]
    session.reset()
    assert session.chunk == 0 and session.cache.length == 0
    assert [(o.text_ids, o.dmel_TM.tobytes(), o.audio_N.tobytes()) for o in _run_session(session, 3)] == first


@pytest.mark.parametrize("audio, error, match", [
    (np.zeros(3199, np.float32), ValueError, "3200 samples"),
    (np.zeros((2, 3200), np.float32), ValueError, "3200 samples"),
    (np.zeros(3200, np.int16), TypeError, "float samples"),
    (np.full(3200, np.nan, np.float32), ValueError, "NaN"),
    (np.full(3200, np.inf, np.float32), ValueError, "infinite"),
])
def test_bad_user_audio_is_refused(audio, error, match):
    session = Session(tiny_run(), SessionConfig(max_text_per_chunk=0, flow_steps=1))
    with pytest.raises(error, match=match):
        session.step(audio)
    assert session.chunk == 0 and session.cache.length == 0  # nothing was fed


@pytest.mark.parametrize("frames, match", [
    (np.zeros((2, 40, 40, 3), np.float32), "uint8"),
    (np.zeros((1, 40, 40, 3), np.uint8), r"\[2, H, W, 3\]"),
    (np.zeros((2, 40, 40), np.uint8), r"\[2, H, W, 3\]"),
    (np.zeros((2, 40, 50, 3), np.uint8), "40 px"),
    (np.zeros((2, 0, 40, 3), np.uint8), "40 px"),
])
def test_bad_video_frames_are_refused(frames, match):
    session = Session(tiny_run(), SessionConfig(max_text_per_chunk=0, flow_steps=1))
    with pytest.raises(ValueError, match=match):
        session.step(user_audio(1)[0], frames)
    assert session.chunk == 0 and session.cache.length == 0


def test_a_chunk_longer_than_the_rotary_stride_is_refused():
    session = Session(tiny_run(tiny_config(chunk_stride=12)), SessionConfig(max_text_per_chunk=0, flow_steps=1))
    with pytest.raises(ValueError, match="chunk_stride"):
        session.step(user_audio(1)[0], video_frames(0, width=240))  # 6 patches + 6 other positions


def test_recording_is_opt_in():
    session = Session(tiny_run(), SessionConfig(max_text_per_chunk=0, flow_steps=1))
    session.step(user_audio(1)[0])
    with pytest.raises(ValueError, match="record=True"):
        session.recorded_batch()
    with pytest.raises(ValueError, match="record=True"):
        session.recorded_hidden()


def test_the_window_and_sink_come_from_the_config():
    session = Session(tiny_run(), SessionConfig(window_chunks=7, sink_chunks=0))
    assert session.window == AttentionWindow(chunks=7, sink_chunks=0) == session.cache.window


def test_speak_threshold_starts_a_word_where_p_not_end_of_text_reaches_it(monkeypatch):
    """The chunk's first text position decides: P(not end-of-text) >= speak_threshold starts a word
    (never end-of-text as its first token), below it the chunk says nothing; later positions are
    the text sampling's."""
    greedy = Session(tiny_run(), SessionConfig(max_text_per_chunk=3, flow_steps=1))
    head = greedy.model.text_head
    eot, other = head.end_of_text, 65
    p_start = 0.3

    def logits(h_BD):  # end-of-text at 0.7, token 65 at 0.2, the rest share 0.1
        V = head.end_of_text + 1
        probs = torch.full((h_BD.shape[0], V), 0.1 / (V - 2))
        probs[:, eot], probs[:, other] = 1.0 - p_start, 0.2
        return probs.log()

    monkeypatch.setattr(head, "logits", logits)
    outs = _run_session(greedy, 3)
    assert all(o.text_ids == () for o in outs)  # end-of-text is the argmax
    assert [o.p_speak for o in outs] == pytest.approx([p_start] * 3)  # reported whatever decides
    for threshold, speaks in ((0.25, True), (0.29, True), (0.31, False), (0.9, False)):
        s = Session(tiny_run(), SessionConfig(speak_threshold=threshold, max_text_per_chunk=3, flow_steps=1))
        monkeypatch.setattr(s.model.text_head, "logits", logits)
        for o in _run_session(s, 3):
            # A started word is token 65 (the best of the others), then greedy text ends it.
            assert o.text_ids == ((other,) if speaks else ()), (threshold, o.text_ids)
            assert o.p_speak == pytest.approx(p_start)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="speak_threshold"):
            SessionConfig(speak_threshold=bad)
