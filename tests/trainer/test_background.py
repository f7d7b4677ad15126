"""Background text on the input side (sequence layout 3): results a background model delivers to
the model speaker (``words.json``'s ``background`` list) become BACKGROUND_TEXT positions after a
chunk's VIDEO and before its MODEL_MARK, queued from their arrival chunk and placed at most
``max_background_per_chunk`` per chunk; they are never a loss target; the embedding reads them
from the shared text table; a live session places them exactly as ``build_sequence`` does; and a
checkpoint of layout 2 (8 kinds) is refused by name.

Samples are built in memory (``test_batch._sample``: words as (chunk, ms into the chunk, text)),
so nothing here needs the shard stage. Shape suffixes follow microturn.schemas.legend: K chunks,
L positions, B rows, D model width, V text classes, N audio samples, T frames, M mel channels.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.schemas.dmel import encode
from microturn.schemas.video import patchify
from microturn.trainer import session_media as media
from microturn.trainer.batch import SEQUENCE_LAYOUT, Kind, build_sequence, collate, loss_positions
from microturn.trainer.checkpoint import CONFIG_NAME, check_resume
from microturn.trainer.embed import InputEmbedding
from microturn.trainer.model import InteractionModel, init_parameters
from microturn.trainer.session import Session, SessionConfig
from microturn.trainer.train_config import as_dict, load_named
from microturn.trainer.trained_run import load_trained_run
from microturn.trainer.transformer import rotary_positions
from session_runs import one_thread, tiny_config, tiny_run, user_audio, video_frames
from test_batch import TOK, _sample

PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BG = Kind.BACKGROUND_TEXT
# Results without spaces at their ends (a result's text is stripped) and of 1-40 byte tokens.
RESULTS = st.text(alphabet="abcdeé?,.'xyz ", min_size=1, max_size=39).map(lambda t: "r" + t.strip())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _per_chunk(seq, kind: Kind = BG) -> list[list[int]]:
    """The token ids of ``kind`` positions, chunk by chunk."""
    return [seq.text_L[(seq.time_L == k) & (seq.kind_L == kind)].tolist() for k in range(seq.chunks)]


# ----------------------------------------------------------------- the layout
def test_a_result_is_placed_from_its_arrival_chunk_on_the_input_side_and_spills_over_the_next_chunks():
    result = "The train leaves at nine from platform four."  # 44 bytes: 45 tokens with its leading space
    sample = _sample("bg", 6, 1, {"user": [(1, 20, "when")], "model": [(3, 0, "ok")],
                                  "background": [(1, 120, result)]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut: no warning
        seq = build_sequence(sample, TOK)
    assert [len(ids) for ids in _per_chunk(seq)] == [0, 16, 16, 13, 0, 0]
    assert TOK.decode(seq.text_L[seq.kind_L == BG]) == " " + result
    assert seq.background_cut == 0 and seq.text_cut == 0
    K = Kind
    chunk1 = seq.kind_L[seq.time_L == 1].tolist()
    assert chunk1 == [K.CHUNK_MARK, *[K.USER_TEXT] * 5, *[K.USER_AUDIO] * 4, K.VIDEO, *[BG] * 16, K.MODEL_MARK,
                      *[K.MODEL_AUDIO] * 4]
    chunk3 = seq.kind_L[seq.time_L == 3].tolist()
    assert chunk3 == [K.CHUNK_MARK, *[K.USER_AUDIO] * 4, K.VIDEO, *[BG] * 13, K.MODEL_MARK, *[K.MODEL_TEXT] * 3,
                      *[K.MODEL_AUDIO] * 4]
    # Nothing but text ids at background positions: no audio, no video, no log-mel.
    at = seq.kind_L == BG
    assert not seq.dmel_LM[at].any() and not seq.logmel_LM[at].any() and np.all(seq.video_L[at] == -1)


def test_odd_sizes_queue_in_arrival_order_and_the_window_end_cuts_what_is_left_and_counts_it():
    a, b, c = "abcdefghijklmnopqrs", "xyz", "late result"  # 20, 4 and 12 tokens with their spaces
    sample = _sample("odd", 5, None, {"user": [], "model": [],
                                      "background": [(1, 50, b), (0, 10, a), (4, 199, c)]})
    with pytest.warns(UserWarning, match=r"odd: cut 5 background token\(s\) still queued at the end of the window "
                                         r"\(max_background_per_chunk=7\)"):
        seq = build_sequence(sample, TOK, max_background_per_chunk=7)
    # chunk 0: a[0:7]; 1: a[7:14] (b queues behind a); 2: a[14:20] + b[0]; 3: b[1:4] (the queue runs
    # dry); 4: c[0:7], and the window ends with 5 of c's tokens still queued.
    assert [len(ids) for ids in _per_chunk(seq)] == [7, 7, 7, 3, 7]
    assert seq.background_cut == 5 and seq.text_cut == 0
    assert TOK.decode(seq.text_L[seq.kind_L == BG]) == (f" {a} {b} {c}")[:-5]
    # Whole, the same sample places everything once the per-chunk limit allows it.
    assert build_sequence(sample, TOK, max_background_per_chunk=12, warn=False).background_cut == 0


def test_results_arriving_in_one_chunk_join_in_arrival_order():
    sample = _sample("two", 3, None, {"user": [], "model": [],
                                      "background": [(2, 150, "second"), (2, 10, "first"), (0, 0, "zero")]})
    seq = build_sequence(sample, TOK)
    assert [TOK.decode(ids) for ids in _per_chunk(seq)] == [" zero", "", " first second"]


def test_without_background_the_sequence_is_the_one_of_before():
    words = {"user": [(0, 10, "hello"), (1, 0, "there")], "model": [(1, 50, "hi")]}
    empty = _sample("none", 3, 2, {**words, "background": []})
    old = _sample("none", 3, 2, words)
    del old["words"]["background"]  # a sample of the old shape: no "background" key at all
    a, b = build_sequence(empty, TOK), build_sequence(old, TOK)
    for name in ("kind_L", "text_L", "dmel_LM", "logmel_LM", "video_L", "time_L", "video_PFHWC"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.any(a.kind_L == BG) and a.background_cut == b.background_cut == 0
    # The layout-2 chunk: marks, user text, 4 user audio, 2 patches, model text, 4 model audio.
    assert len(a) == 3 * (1 + 4 + 2 + 1 + 4) + len(" hello") + len(" there") + len(" hi")


def test_without_user_text_the_background_stays():
    sample = _sample("nouser", 3, None, {"user": [(0, 10, "hello")], "model": [],
                                         "background": [(0, 20, "It is raining in Paris.")]})
    full, bare = build_sequence(sample, TOK), build_sequence(sample, TOK, user_text=False)
    assert not np.any(bare.kind_L == Kind.USER_TEXT)
    assert _per_chunk(bare) == _per_chunk(full) and TOK.decode(bare.text_L[bare.kind_L == BG]).startswith(" It is")


@pytest.mark.parametrize("background, match", [
    ({"text": "x"}, r"words\['background'\] must be a list"),
    (["x"], r"words\['background'\]\[0\] must be a \{text, start_ms, end_ms, chunk\} object"),
    ([{"text": "x", "start_ms": 0, "chunk": 0}], r"words\['background'\]\[0\] has no end_ms"),
    ([{"text": "   ", "start_ms": 0, "end_ms": 0, "chunk": 0}], r"\[0\]: text must be a non-blank string"),
    ([{"text": 7, "start_ms": 0, "end_ms": 0, "chunk": 0}], r"\[0\]: text must be a non-blank string"),
    ([{"text": "x", "start_ms": 0, "end_ms": 0, "chunk": "0"}], r"\[0\]: chunk must be an integer"),
    ([{"text": "x", "start_ms": 0.5, "end_ms": 0.5, "chunk": 0}], r"\[0\]: start_ms must be an integer"),
    ([{"text": "x", "start_ms": 0, "end_ms": 0, "chunk": 0},
      {"text": "late", "start_ms": 600, "end_ms": 600, "chunk": 3}], r"\[1\] \('late'\) has chunk 3 outside 0..2"),
])
def test_malformed_background_entries_are_value_errors_naming_the_entry(background, match):
    sample = _sample("bad", 3, None, {"user": [], "model": []})
    sample["words"]["background"] = background
    with pytest.raises(ValueError, match=r"'bad': .*" + match):
        build_sequence(sample, TOK)


def test_the_per_chunk_limit_must_place_something():
    with pytest.raises(ValueError, match="max_background_per_chunk must be >= 1"):
        build_sequence(_sample("z", 1, None, {"user": [], "model": []}), TOK, max_background_per_chunk=0)


@PROPS
@given(st.integers(1, 8), st.integers(1, 9),
       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 199), RESULTS), max_size=6))
def test_placed_plus_cut_is_every_token_of_the_results_and_the_queue_never_idles(K, limit, results):
    arrivals = [(int(f * K), ms, text) for f, ms, text in results]
    sample = _sample("prop", K, None, {"user": [], "model": [], "background": arrivals})
    seq = build_sequence(sample, TOK, max_background_per_chunk=limit, warn=False)
    ordered = sorted(arrivals, key=lambda r: 200 * r[0] + r[1])
    stream = [i for _, _, text in ordered for i in TOK.encode(" " + text)]
    placed = seq.text_L[seq.kind_L == BG].tolist()
    assert len(placed) + seq.background_cut == len(stream)
    assert placed == stream[:len(placed)]  # in arrival order; only the tail is cut
    counts = [len(ids) for ids in _per_chunk(seq)]
    arrived = np.bincount([k for k, _, _ in arrivals], weights=[len(TOK.encode(" " + t)) for _, _, t in arrivals],
                          minlength=K).astype(int) if arrivals else np.zeros(K, int)
    for k in range(K):
        assert counts[k] <= limit
        # A chunk below the limit has placed everything that arrived by then: the queue is empty.
        if counts[k] < limit:
            assert sum(counts[:k + 1]) == int(arrived[:k + 1].sum()), (k, counts, arrived)
        # Nothing is placed before it arrives.
        assert sum(counts[:k + 1]) <= int(arrived[:k + 1].sum())
    # Sequence.pieces keeps the count with each piece (a split sample reports its sample's cut).
    assert all(p.background_cut == seq.background_cut for p in seq.pieces(40)[0])


# ----------------------------------------------------------------- embedding and loss
def test_the_embedding_reads_background_tokens_from_the_shared_text_table_under_their_own_kind_row():
    cfg = tiny_config()
    emb = InputEmbedding(cfg)
    init_parameters(emb, cfg=cfg, seed=3)
    assert emb.kind.num_embeddings == len(Kind) == 9
    K = Kind
    kind_BL = torch.tensor([[K.CHUNK_MARK, BG, K.USER_TEXT, K.MODEL_TEXT, BG]])
    text_BL = torch.tensor([[0, 65, 65, 65, 66]])
    batch = {"kind_BL": kind_BL, "text_BL": text_BL, "dmel_BLM": torch.zeros(1, 5, 80, dtype=torch.uint8),
             "video_PFHWC": torch.zeros(0, 2, 40, 40, 3, dtype=torch.uint8), "video_BL": torch.full((1, 5), -1)}
    with torch.no_grad():
        x_LD = emb(batch)[0]
        for i in range(1, 5):
            expected_D = emb.kind.weight[int(kind_BL[0, i])] + emb.text.weight[int(text_BL[0, i])]
            torch.testing.assert_close(x_LD[i], expected_D)
    assert not torch.allclose(x_LD[1], x_LD[2])  # the same token, told apart by the kind row


def test_background_positions_are_never_loss_targets():
    words = {"user": [(0, 5, "hi")], "model": [(1, 0, "hello"), (3, 0, "ok")],
             "background": [(0, 100, "The museum opens at ten tomorrow."), (2, 0, "Closed Mondays.")]}
    seqs = [build_sequence(_sample(f"s{i}", 4, 1, words, seed=i), TOK) for i in range(2)]
    batch = collate(seqs, max_len=10_000, pack=True)
    kind_BL = batch["kind_BL"]
    assert int((kind_BL == BG).sum()) > 2 * 16  # spilled over several chunks in both samples
    masks = loss_positions(kind_BL)
    nxt = kind_BL[:, 1:]
    assert not (masks.text_BL & (nxt == BG)).any() and not (masks.audio_BL & (nxt == BG)).any()
    assert torch.equal(masks.text_BL, nxt == Kind.MODEL_TEXT)

    cfg = tiny_config()
    model = InteractionModel(cfg, seed=0)
    seen: dict[str, torch.Tensor] = {}
    text_loss = model.text_head.loss

    def recording(h_UD, target_U):
        seen["targets"] = target_U.clone()
        return text_loss(h_UD, target_U)

    model.text_head.loss = recording  # pyright: ignore[reportAttributeAccessIssue]  # a test's spy
    out = model(batch, generator=torch.Generator().manual_seed(0))
    eot = model.text_head.end_of_text
    # The text targets, in order: each chunk's model tokens then its end of text; nothing else.
    expected = []
    for s in seqs:
        for ids in _per_chunk(s, Kind.MODEL_TEXT):
            expected += [*ids, eot]
    assert seen["targets"].tolist() == expected
    assert out.tokens["audio_targets"].item() == int((kind_BL == Kind.MODEL_AUDIO).sum())
    assert out.tokens["background_text"].item() == int((kind_BL == BG).sum())
    # Background tokens are input only: changing them changes no target.
    changed = dict(batch, text_BL=torch.where(kind_BL == BG, 99, batch["text_BL"]))
    model(changed, generator=torch.Generator().manual_seed(0))
    assert seen["targets"].tolist() == expected


# ----------------------------------------------------------------- the live session
def _scripted_text(session: Session, said: dict[int, list[int]]) -> None:
    """Make the session's text head say ``said[chunk]`` in each chunk, then end its text."""
    head = session.model.text_head
    eot = head.end_of_text
    state = {"chunk": -1, "i": 0}

    def logits(h_BD: torch.Tensor) -> torch.Tensor:
        if state["chunk"] != session.chunk:
            state["chunk"], state["i"] = session.chunk, 0
        plan = said.get(session.chunk, [])
        token = plan[state["i"]] if state["i"] < len(plan) else eot
        state["i"] += 1
        out_BV = torch.full((h_BD.shape[0], eot + 1), -10.0)
        out_BV[:, token] = 10.0
        return out_BV

    head.logits = logits  # pyright: ignore[reportAttributeAccessIssue]  # a test's script


def test_a_session_fed_chunk_by_chunk_reproduces_the_training_layout():
    K, P = 8, 2  # video_frames: 2 patches of 40 x 40 per chunk
    tok = TOK
    user = {1: "hello there", 5: "yes"}
    model_said = {2: "ok", 6: "no"}
    results = {1: "The museum opens at ten tomorrow.",  # 34 tokens: 16 in chunk 1, 16 in 2, 2 in 3
               2: "Closed Mondays.",  # 16 tokens, queued behind the first: 14 in chunk 3, 2 in 4
               7: "Tickets are twelve euros."}  # 26 tokens in the last chunk: 16 placed, 10 cut
    session = Session(tiny_run(), SessionConfig(window_chunks=None, flow_steps=1), record=True)
    assert session.config.max_background_per_chunk == 16  # build_sequence's default, as the loader's
    _scripted_text(session, {k: tok.encode(" " + text) for k, text in model_said.items()})
    decoded: list[torch.Tensor] = []
    decode = session.model.decode

    def spy(inputs, positions_BL, cache, **kw):
        decoded.append(positions_BL[0].clone())
        return decode(inputs, positions_BL, cache, **kw)

    session.model.decode = spy  # pyright: ignore[reportAttributeAccessIssue]  # a test's spy
    audio = user_audio(K)
    outs = [session.step(audio[k], video_frames(k), user.get(k), results.get(k)) for k in range(K)]
    assert [o.background_fed for o in outs] == [0, 16, 16, 16, 2, 0, 0, 16]
    assert [o.background_queued for o in outs] == [0, 18, 18, 2, 0, 0, 0, 10]
    assert [o.text for o in outs] == [" " + model_said[k] if k in model_said else "" for k in range(K)]

    # The same conversation as a sample: the session's own audio frames, the frames' patches,
    # the words where they start and the results where they arrive.
    dmel_user_TM = np.asarray(encode(np.concatenate(audio)))[:4 * K]
    sample = _sample("live", K, P, {"user": [(k, 0, t) for k, t in user.items()],
                                    "model": [(k, 0, t) for k, t in model_said.items()],
                                    "background": [(k, 0, t) for k, t in results.items()]})
    sample["dmel"] = {"user": dmel_user_TM, "model": np.concatenate([o.dmel_TM for o in outs])}
    sample["video_KPFHWC"] = np.stack([patchify(video_frames(k), 1, 2)[0] for k in range(K)])
    seq = build_sequence(sample, tok, warn=False)
    assert seq.background_cut == outs[-1].background_queued == 10

    # The session fed every position of the sequence but the last chunk's last audio frame (it
    # waits for the next step), in the same order, with the same contents and rotary positions.
    h = session.history
    n = len(seq) - 1
    assert len(h["kind"]) == n
    assert h["kind"] == seq.kind_L[:n].tolist()
    assert h["text"] == seq.text_L[:n].tolist()
    assert h["time"] == seq.time_L[:n].tolist()
    assert np.array_equal(np.stack(h["dmel"]), seq.dmel_LM[:n])
    assert np.array_equal(np.stack(h["patches"]), seq.video_PFHWC)
    stride = session.model_cfg.chunk_stride
    whole_L = rotary_positions(torch.from_numpy(seq.time_L)[None], torch.ones(1, len(seq), dtype=torch.long),
                               chunk_stride=stride)[0]
    assert torch.equal(torch.cat(decoded), whole_L[:n])


def test_a_session_refuses_background_text_that_is_not_a_string_before_feeding_anything():
    session = Session(tiny_run(), SessionConfig(flow_steps=1))
    with pytest.raises(TypeError, match="background_text must be a string"):
        session.step(user_audio(1)[0], None, None, ["a result"])  # pyright: ignore[reportArgumentType]
    assert session.chunk == 0 and session.cache.length == 0
    out = session.step(user_audio(1)[0], background_text="   ")  # blank: nothing arrived
    assert out.background_fed == out.background_queued == 0
    with pytest.raises(ValueError, match="max_background_per_chunk"):
        SessionConfig(max_background_per_chunk=0)


def test_background_results_are_read_from_a_words_json_as_the_session_cli_feeds_them(tmp_path):
    path = tmp_path / "words.json"
    path.write_text(json.dumps({"user": [{"text": "hi", "start_ms": 0}], "model": [],
                                "background": [{"text": "Second.", "start_ms": 450, "end_ms": 450, "chunk": 2},
                                               {"text": "First.", "start_ms": 410, "end_ms": 410, "chunk": 2},
                                               {"text": "Zero.", "start_ms": 10, "end_ms": 10, "chunk": 0}]}))
    assert media.words_by_chunk(media.read_words(str(path), stream="background")) == {0: "Zero.", 2: "First. Second."}
    assert media.words_by_chunk(media.read_words(str(path))) == {0: "hi"}
    path.write_text(json.dumps({"background": [{"text": "x", "start_ms": -1}]}))
    with pytest.raises(ValueError, match="--background-text .*start_ms"):
        media.read_words(str(path), stream="background")


# ----------------------------------------------------------------- checkpoints of layout 2
def test_weights_with_an_8_row_kind_table_are_refused_by_name():
    cfg = tiny_config()
    state = InteractionModel(cfg, seed=0).state_dict()
    state["embed.kind.weight"] = state["embed.kind.weight"][:8].clone()
    with pytest.raises(ValueError, match="embed.kind.weight has 8 rows: a checkpoint made before background text"):
        InteractionModel(cfg, seed=1).load_state_dict(state)
    old = dataclasses.replace(tiny_run(cfg), state_dict=state)
    with pytest.raises(ValueError, match="made before background text"):
        Session(old, SessionConfig(flow_steps=1))


def test_a_layout_2_run_is_refused_by_the_session_and_by_resume_naming_background_text(tmp_path):
    cfg = load_named("tiny-cpu")
    saved = as_dict(cfg)
    assert saved["layout"] == SEQUENCE_LAYOUT == 3
    saved["layout"] = 2
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / "step5").mkdir(parents=True)
    (ckpt / "step5" / CONFIG_NAME).write_text(json.dumps(saved))
    (ckpt / "latest").write_text("step5")
    why = r"\(layout 3: chunks carry background text \(Kind.BACKGROUND_TEXT: a kind embedding of 9 rows, not 8\)\)"
    with pytest.raises(ValueError, match=r"sequence layout 2; this version decodes layout 3 only " + why):
        load_trained_run(str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"sequence layout 2"):
        Session(str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"layout 2, this trainer uses layout 3 " + why):
        check_resume(str(ckpt), "step5", as_dict(cfg))
