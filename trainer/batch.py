"""From decoded micro-turn samples to model batches: the interleaved sequence, packing, masks.

A sample of K chunks of 200 ms becomes one sequence that walks the chunks in order; chunk k is

    [CHUNK_MARK] [user text] [4 USER_AUDIO] [P VIDEO] [background text] [MODEL_MARK] [model text] [4 MODEL_AUDIO]

(the input side up to MODEL_MARK, then the model side)

where a stream's text is the tokens of its words whose start lies in chunk k (``word["chunk"]``)
and the audio positions carry the stream's dMel frames 4k..4k+3. Background text is the tokens of
the results a background model delivered to the model speaker (``words["background"]``), queued
from their arrival chunk and placed at most ``max_background_per_chunk`` per chunk (see
:func:`build_sequence`); like user text it is input only, never a target. :func:`collate` lays sequences
into the batch dict of the trainer (packed several to a row, or one per row) and
:func:`attention_mask` / :func:`loss_positions` derive what the model needs from it.

Shape suffixes follow :mod:`microturn.schemas.legend`: K chunks, P video patches (of one chunk in
``video_KPFHWC``, of every chunk in ``video_PFHWC``), F = 2 frames per patch, H = W = 40 pixels,
C = 3 colours, T dMel frames, M = 80 mel channels, L positions of a sequence or a batch row,
B rows. Loss masks are [B, L - 1]: the positions that have a next item.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from microturn.schemas.sample import FRAMES_PER_CHUNK, FRAMES_PER_PATCH, N_MELS, PATCH_PX

__all__ = ["CHUNK_ORDER", "LAYOUT_CHANGES", "PAD_VALUES", "SEQUENCE_LAYOUT", "Kind", "LossMasks", "Sequence",
           "attention_mask", "background_ids", "build_sequence", "collate", "layout_refusal", "loss_positions",
           "spill_background"]

_PATCH_SHAPE = (FRAMES_PER_PATCH, PATCH_PX, PATCH_PX, 3)

SEQUENCE_LAYOUT = 3
"""Version of what a trained model reads and predicts, saved with every run and checkpoint.

1: the chunk layout above without background text; the text head predicts MODEL_TEXT tokens only.
2: the same positions; the text head also predicts the end of each chunk's model text (at the
   position before the chunk's first MODEL_AUDIO), so a decoder knows when to stop saying text
   and start the chunk's audio. A layout-1 model cannot be decoded and has a text head of
   another shape.
3: BACKGROUND_TEXT positions after the chunk's VIDEO, before its MODEL_MARK (the layout above);
   the kind embedding has 9 rows (8 before), so weights of layouts 1-2 do not load.
"""

LAYOUT_CHANGES = {
    2: "the text head also predicts where a chunk's text ends",
    3: "chunks carry background text (Kind.BACKGROUND_TEXT: a kind embedding of 9 rows, not 8)",
}
"""Layout -> what it changed from the one before, for the messages that refuse an older run."""


def layout_refusal(saved: object) -> str:
    """What the layouts after ``saved`` changed, up to :data:`SEQUENCE_LAYOUT`, as one clause."""
    if not isinstance(saved, int) or isinstance(saved, bool) or not 1 <= saved < SEQUENCE_LAYOUT:
        return f"layout {saved!r} is not one this version reads"
    return "; ".join(f"layout {n}: {LAYOUT_CHANGES[n]}" for n in range(saved + 1, SEQUENCE_LAYOUT + 1))


class Kind(enum.IntEnum):
    """What a position of the interleaved sequence holds."""

    PAD = 0
    CHUNK_MARK = 1
    USER_TEXT = 2
    USER_AUDIO = 3
    VIDEO = 4
    MODEL_MARK = 5
    MODEL_TEXT = 6
    MODEL_AUDIO = 7
    BACKGROUND_TEXT = 8  # input side, after VIDEO and before MODEL_MARK: values are not the layout order


# The order of the kinds inside a chunk (a kind may be absent): the layout of the module notes.
CHUNK_ORDER = (Kind.CHUNK_MARK, Kind.USER_TEXT, Kind.USER_AUDIO, Kind.VIDEO, Kind.BACKGROUND_TEXT, Kind.MODEL_MARK,
               Kind.MODEL_TEXT, Kind.MODEL_AUDIO)


@dataclass(frozen=True, kw_only=True, eq=False)
class Sequence:
    """One sample as an interleaved sequence (arrays per position, all of length L).

    Attributes:
        key: the sample key.
        kind_L: uint8 :class:`Kind` per position.
        text_L: int64 token id at USER_TEXT / BACKGROUND_TEXT / MODEL_TEXT positions, 0 elsewhere.
        dmel_LM: uint8 dMel bins at USER_AUDIO / MODEL_AUDIO positions, 0 elsewhere.
        logmel_LM: float16 model-stream log-mel at MODEL_AUDIO positions, 0 elsewhere.
        video_L: int64 index into ``video_PFHWC`` at VIDEO positions, -1 elsewhere.
        time_L: int64 chunk index of each position.
        video_PFHWC: uint8 patches of the sample, chunk-major (patch p of chunk k is row k P + p);
            none without video.
        text_cut: text tokens dropped because a chunk held more than the per-chunk limit.
        background_cut: background tokens still queued when the sample's last chunk was placed
            (a result that arrived too late to be placed whole; see :func:`build_sequence`).
    """

    key: str
    kind_L: np.ndarray
    text_L: np.ndarray
    dmel_LM: np.ndarray
    logmel_LM: np.ndarray
    video_L: np.ndarray
    time_L: np.ndarray
    video_PFHWC: np.ndarray
    text_cut: int = 0
    background_cut: int = 0

    def __len__(self) -> int:
        return int(self.kind_L.shape[0])

    @property
    def chunks(self) -> int:
        """Number of chunks K in the sequence."""
        return int(np.count_nonzero(self.kind_L == Kind.CHUNK_MARK))

    def _slice(self, start: int, end: int) -> Sequence:
        """Positions [start, end) as a sequence of its own (``start`` and ``end`` on chunk
        boundaries); times are kept, video indices renumbered from 0 with their patches."""
        first = int(np.count_nonzero(self.kind_L[:start] == Kind.VIDEO))
        n_video = int(np.count_nonzero(self.kind_L[start:end] == Kind.VIDEO))
        video_L = self.video_L[start:end]
        return Sequence(key=self.key, kind_L=self.kind_L[start:end], text_L=self.text_L[start:end],
                        dmel_LM=self.dmel_LM[start:end], logmel_LM=self.logmel_LM[start:end],
                        video_L=np.where(video_L >= 0, video_L - first, -1), time_L=self.time_L[start:end],
                        video_PFHWC=self.video_PFHWC[first:first + n_video], text_cut=self.text_cut,
                        background_cut=self.background_cut)

    def chunk_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends): the position range of every chunk."""
        starts = np.flatnonzero(self.kind_L == Kind.CHUNK_MARK)
        return starts, np.append(starts[1:], len(self))

    def head(self, max_len: int) -> Sequence:
        """The longest prefix of whole chunks that fits in ``max_len`` positions (``self`` if it fits).

        Raises ``ValueError`` when not even the first chunk fits.
        """
        if len(self) <= max_len:
            return self
        starts, ends = self.chunk_bounds()
        fitting = ends[ends <= max_len]
        if fitting.size == 0:
            raise ValueError(f"max_len {max_len} is shorter than the first chunk of {self.key!r} "
                             f"({int(ends[0])} positions); raise max_len")
        return self._slice(0, int(fitting[-1]))

    def pieces(self, max_len: int) -> tuple[list[Sequence], int]:
        """The sequence split into pieces of whole chunks of at most ``max_len`` positions each,
        greedily in order, and the number of chunks left out because one alone is longer than
        ``max_len``. ``[self]`` when it fits.

        Every piece starts with a CHUNK_MARK and keeps its chunks' times, so its rotary positions
        (``time * chunk_stride + rank``) and next-item targets are those the chunks have in the
        whole sequence; only attention across pieces is lost.
        """
        if len(self) <= max_len:
            return [self], 0
        starts, ends = self.chunk_bounds()
        out: list[Sequence] = []
        dropped = 0
        begin = None  # start of the piece being grown
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if end - start > max_len:
                if begin is not None:
                    out.append(self._slice(begin, start))
                    begin = None
                dropped += 1
                continue
            if begin is None:
                begin = start
            elif end - begin > max_len:
                out.append(self._slice(begin, start))
                begin = start
        if begin is not None:
            out.append(self._slice(begin, int(ends[-1])))  # the last chunk fitted: it was not dropped
        return out, dropped


def _chunk_texts(words: list[dict], chunks: int, role: str, key: str) -> list[str]:
    """Per chunk, its words (by start) joined with a leading space each, so tokens carry word starts."""
    per_chunk: list[list[tuple[int, str]]] = [[] for _ in range(chunks)]
    for w in words:
        k = w["chunk"]
        if not isinstance(k, (int, np.integer)) or not 0 <= k < chunks:
            raise ValueError(f"{key}: {role} word {w.get('text')!r} has chunk {k!r} outside 0..{chunks - 1}")
        per_chunk[k].append((w["start_ms"], w["text"]))
    # sorted() is stable: words starting at the same ms keep their order in the sample
    return ["".join(" " + text for _, text in sorted(ws, key=lambda x: x[0])) for ws in per_chunk]


def background_ids(tokenizer, text: str) -> list[int]:
    """Token ids of the background text of one chunk: one result, or several arriving in the same
    chunk joined in arrival order, each with a leading space (as a chunk's words are joined), so a
    live session given the same string in that chunk tokenises it exactly as training did."""
    return tokenizer.encode(" " + text.strip()) if text.strip() else []


def spill_background(queued: list[int], arriving: list[int], limit: int) -> tuple[list[int], list[int]]:
    """One chunk of the background queue: (the tokens placed in this chunk, the tokens still queued).

    ``arriving`` (this chunk's new tokens) joins the end of ``queued``; the first ``limit`` tokens
    of the queue are placed now, in order, the rest wait for the next chunk. :func:`build_sequence`
    and the live session both place background text with this rule.
    """
    queue = queued + arriving
    return queue[:limit], queue[limit:]


def _background_texts(sample: dict, chunks: int, key: str) -> list[str]:
    """Per chunk, the background results arriving in it, joined in arrival order (see
    :func:`background_ids`). A sample of the old shape without a "background" list has none."""
    entries = sample["words"].get("background", [])
    if not isinstance(entries, list):
        raise ValueError(f"{key!r}: words['background'] must be a list of results, got {type(entries).__name__}")
    per_chunk: list[list[tuple[int, str]]] = [[] for _ in range(chunks)]
    for i, entry in enumerate(entries):
        where = f"{key!r}: words['background'][{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a {{text, start_ms, end_ms, chunk}} object, got {type(entry).__name__}")
        missing = sorted({"text", "start_ms", "end_ms", "chunk"} - set(entry))
        if missing:
            raise ValueError(f"{where} has no {', '.join(missing)} (a result is {{text, start_ms, end_ms, chunk}})")
        text, start, k = entry["text"], entry["start_ms"], entry["chunk"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: text must be a non-blank string, got {text!r}")
        for name, value in (("start_ms", start), ("chunk", k)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
        if not 0 <= k < chunks:
            raise ValueError(f"{where} ({text[:40]!r}) has chunk {k!r} outside 0..{chunks - 1}")
        per_chunk[k].append((int(start), text.strip()))
    # sorted() is stable: results arriving at the same ms keep their order in the sample
    return [" ".join(text for _, text in sorted(rs, key=lambda x: x[0])) for rs in per_chunk]


def _array(sample: dict, name: str, value: Any, dtype: str, shape: tuple) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or value.shape != shape:
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{sample.get('key')!r}: {name} must be {dtype} {shape}, got {got}; "
                         f"pass samples from microturn.schemas.sample.decode_sample")
    return value


def build_sequence(sample: dict, tokenizer, *, max_text_per_chunk: int = 16, max_background_per_chunk: int = 16,
                   warn: bool = True, user_text: bool = True) -> Sequence:
    """The interleaved sequence of one decoded sample (``decode_sample``'s dict).

    ``tokenizer`` is any :class:`microturn.trainer.tokenizer.Tokenizer`. A stream's text in a
    chunk longer than ``max_text_per_chunk`` tokens is cut to that many; the count of tokens
    dropped is kept in ``Sequence.text_cut`` and, with ``warn``, warned about (the loader sums
    the counts into one summary line instead). ``user_text=False`` leaves the user's words out
    (every chunk without user text tokens), as a session without a streaming recogniser runs;
    background text stays.

    The default of 16 tokens: a chunk is 200 ms, and even fast conversational speech (about 4
    words/s, 6-7 syllables/s) starts at most 1-2 words in it, which is under 16 byte tokens
    for English words of 5-6 letters plus their leading space, and 2-4 BPE tokens.

    Background text (``sample["words"]["background"]``; a sample without the key has none) is
    not cut per chunk: a result is a sentence or more (20-60 BPE tokens), more than one chunk's
    budget. Its tokens join a queue at the result's arrival chunk and the
    queue places at most ``max_background_per_chunk`` per chunk, in order
    (:func:`spill_background`), so a result spills over the chunks after its arrival and only
    what is still queued after the last chunk is cut (``Sequence.background_cut``, warned
    about with ``warn`` as ``text_cut`` is). The default of 16 per chunk: a 60-token result
    is placed whole within 4 chunks (0.8 s), before the model could say much of it (4 words/s
    is about 5 BPE tokens/s), while a chunk grows by at most 16 positions: 2 markers + 8
    audio + 48 patches + 3 x 16 text = 106, well under ``ModelConfig.chunk_stride`` (256).
    """
    if max_text_per_chunk < 0:
        raise ValueError(f"max_text_per_chunk must be >= 0, got {max_text_per_chunk}")
    if max_background_per_chunk < 1:
        # 0 would queue every result for ever: all of it cut, with none placed.
        raise ValueError(f"max_background_per_chunk must be >= 1, got {max_background_per_chunk}")
    key = str(sample.get("key", ""))
    K = int(sample["meta"]["chunks"])
    if K < 1:
        raise ValueError(f"{key!r}: a sample needs at least one chunk, got {K}")
    T = FRAMES_PER_CHUNK * K
    dmel_user = _array(sample, "dmel['user']", sample["dmel"]["user"], "uint8", (T, N_MELS))
    dmel_model = _array(sample, "dmel['model']", sample["dmel"]["model"], "uint8", (T, N_MELS))
    logmel_TM = _array(sample, "logmel_TM", sample["logmel_TM"], "float16", (T, N_MELS))
    video_KPFHWC = sample.get("video_KPFHWC")
    if video_KPFHWC is None:
        P, video_PFHWC = 0, np.zeros((0, *_PATCH_SHAPE), np.uint8)
    else:
        P = video_KPFHWC.shape[1] if isinstance(video_KPFHWC, np.ndarray) and video_KPFHWC.ndim == 6 else 0
        _array(sample, "video_KPFHWC", video_KPFHWC, "uint8", (K, P, *_PATCH_SHAPE))
        video_PFHWC = video_KPFHWC.reshape(K * P, *_PATCH_SHAPE)

    texts = {role: _chunk_texts(sample["words"][role], K, role, key) for role in ("user", "model")}
    if not user_text:
        texts["user"] = [""] * K
    tokens: dict[str, list[list[int]]] = {"user": [], "model": []}
    cut = cut_chunks = 0
    for role in ("user", "model"):
        for text in texts[role]:
            ids = tokenizer.encode(text) if text else []
            if len(ids) > max_text_per_chunk:
                cut += len(ids) - max_text_per_chunk
                cut_chunks += 1
                ids = ids[:max_text_per_chunk]
            tokens[role].append(ids)
    background: list[list[int]] = []
    queued: list[int] = []
    for text in _background_texts(sample, K, key):
        placed, queued = spill_background(queued, background_ids(tokenizer, text), max_background_per_chunk)
        background.append(placed)
    background_cut = len(queued)  # the window ended before these were placed
    if cut and warn:
        warnings.warn(f"{key}: cut {cut} text token(s) in {cut_chunks} chunk(s) over max_text_per_chunk="
                      f"{max_text_per_chunk}", stacklevel=2)
    if background_cut and warn:
        warnings.warn(f"{key}: cut {background_cut} background token(s) still queued at the end of the window "
                      f"(max_background_per_chunk={max_background_per_chunk})", stacklevel=2)

    # Kinds chunk by chunk; everything else is filled by masks over the kinds, since each kind's
    # items appear in the sequence in the order they have in the sample.
    chunk_kinds = []
    for k in range(K):
        chunk_kinds.append(np.concatenate([
            [Kind.CHUNK_MARK], np.full(len(tokens["user"][k]), Kind.USER_TEXT),
            np.full(FRAMES_PER_CHUNK, Kind.USER_AUDIO), np.full(P, Kind.VIDEO),
            np.full(len(background[k]), Kind.BACKGROUND_TEXT), [Kind.MODEL_MARK],
            np.full(len(tokens["model"][k]), Kind.MODEL_TEXT), np.full(FRAMES_PER_CHUNK, Kind.MODEL_AUDIO),
        ]).astype(np.uint8))
    kind_L = np.concatenate(chunk_kinds)
    L = kind_L.shape[0]
    text_L = np.zeros(L, np.int64)
    for kind, per_chunk in ((Kind.USER_TEXT, tokens["user"]), (Kind.BACKGROUND_TEXT, background),
                            (Kind.MODEL_TEXT, tokens["model"])):
        text_L[kind_L == kind] = np.fromiter((i for ids in per_chunk for i in ids), dtype=np.int64)
    dmel_LM = np.zeros((L, N_MELS), np.uint8)
    dmel_LM[kind_L == Kind.USER_AUDIO] = dmel_user
    is_model_audio = kind_L == Kind.MODEL_AUDIO
    dmel_LM[is_model_audio] = dmel_model
    logmel_LM = np.zeros((L, N_MELS), np.float16)
    logmel_LM[is_model_audio] = logmel_TM
    video_L = np.full(L, -1, np.int64)
    video_L[kind_L == Kind.VIDEO] = np.arange(K * P)
    time_L = np.repeat(np.arange(K, dtype=np.int64), [len(c) for c in chunk_kinds])
    return Sequence(key=key, kind_L=kind_L, text_L=text_L, dmel_LM=dmel_LM, logmel_LM=logmel_LM, video_L=video_L,
                    time_L=time_L, video_PFHWC=video_PFHWC, text_cut=cut, background_cut=background_cut)


def _rows(seqs: list[Sequence], max_len: int, pack: bool) -> list[list[Sequence]]:
    if not pack:
        return [[s] for s in seqs]
    rows: list[list[Sequence]] = []
    used: list[int] = []
    # First fit in arrival order: deterministic, and never over 1.7x the optimal number of rows
    # (Dosa & Sgall 2013); windows of one K have similar lengths, where it is close to optimal.
    for s in seqs:
        for r, u in enumerate(used):
            if u + len(s) <= max_len:
                rows[r].append(s)
                used[r] += len(s)
                break
        else:
            rows.append([s])
            used.append(len(s))
    return rows


def collate(seqs: list[Sequence], *, max_len: int, pack: bool, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The trainer's batch dict of ``seqs`` (see the trainer interfaces).

    A sequence longer than ``max_len`` is split into pieces of whole chunks (``Sequence.pieces``:
    times kept, so rotary positions and targets are unchanged), each a segment of its own; no
    chunk is lost unless one chunk alone is longer than ``max_len``. ``pack=True`` puts the
    sequences and pieces into rows of at most ``max_len`` positions, first fit in the given
    order, numbering them 1, 2, ... within a row (``segment_BL``); ``pack=False`` gives one per
    row (segment 1). Either way L is the longest row and the rest is PAD (segment 0, time 0,
    video -1). ``keys`` lists the sample key of every segment, row by row (a split sample's key
    once per piece).

    ``counts``, when given, is increased by ``split`` (sequences split), ``pieces`` (pieces they
    gave) and ``dropped_chunks`` (chunks longer than ``max_len``) and nothing is warned; without
    it, dropped chunks give one warning for the call.
    """
    if not seqs:
        raise ValueError("collate needs at least one sequence")
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    kept: list[Sequence] = []
    split = n_pieces = dropped = 0
    for s in seqs:
        parts, lost = s.pieces(max_len)
        if len(parts) > 1 or lost:
            split += 1
            n_pieces += len(parts)
        dropped += lost
        kept += parts
    if not kept:
        raise ValueError(f"max_len {max_len} is shorter than every chunk of {[s.key for s in seqs]}; raise max_len")
    if counts is not None:
        for name, value in (("split", split), ("pieces", n_pieces), ("dropped_chunks", dropped)):
            counts[name] = counts.get(name, 0) + value
    elif dropped:
        warnings.warn(f"left out {dropped} chunk(s) longer than max_len={max_len} positions each", stacklevel=2)
    rows = _rows(kept, max_len, pack)
    B, L = len(rows), max(sum(len(s) for s in row) for row in rows)
    kind = np.zeros((B, L), np.int64)
    text = np.zeros((B, L), np.int64)
    dmel = np.zeros((B, L, N_MELS), np.uint8)
    logmel = np.zeros((B, L, N_MELS), np.float16)
    video = np.full((B, L), -1, np.int64)
    time = np.zeros((B, L), np.int64)
    segment = np.zeros((B, L), np.int64)
    patches, keys, n_patches = [], [], 0
    for b, row in enumerate(rows):
        at = 0
        for seg, s in enumerate(row, start=1):
            end = at + len(s)
            kind[b, at:end] = s.kind_L
            text[b, at:end] = s.text_L
            dmel[b, at:end] = s.dmel_LM
            logmel[b, at:end] = s.logmel_LM
            video[b, at:end] = np.where(s.video_L >= 0, s.video_L + n_patches, -1)
            time[b, at:end] = s.time_L
            segment[b, at:end] = seg
            patches.append(s.video_PFHWC)
            n_patches += s.video_PFHWC.shape[0]
            keys.append(s.key)
            at = end
    video_PFHWC = np.concatenate(patches) if n_patches else np.zeros((0, *_PATCH_SHAPE), np.uint8)
    return {"kind_BL": torch.from_numpy(kind), "text_BL": torch.from_numpy(text), "dmel_BLM": torch.from_numpy(dmel),
            "logmel_BLM": torch.from_numpy(logmel), "video_PFHWC": torch.from_numpy(video_PFHWC),
            "video_BL": torch.from_numpy(video), "time_BL": torch.from_numpy(time),
            "segment_BL": torch.from_numpy(segment), "keys": keys}


# Every per-position tensor of :func:`collate`'s batch (rows first, positions second) and the
# value of its PAD positions: what padding a batch to more positions or rows must fill in.
# ``video_PFHWC`` (indexed by ``video_BL``) and ``keys`` have no position axis.
PAD_VALUES: dict[str, int] = {"kind_BL": int(Kind.PAD), "text_BL": 0, "dmel_BLM": 0, "logmel_BLM": 0,
                              "video_BL": -1, "time_BL": 0, "segment_BL": 0}


def attention_mask(segment_BL: torch.Tensor | np.ndarray) -> torch.Tensor:
    """bool [B, 1, L, L]: position i may attend to j when j <= i and both are in the same
    (non-PAD) segment. A PAD position attends to itself only, so no softmax row is empty."""
    seg = torch.as_tensor(segment_BL)
    if seg.ndim != 2:
        raise ValueError(f"segment_BL must be [B, L], got shape {tuple(seg.shape)}")
    L = seg.shape[1]
    causal_LL = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()
    same_BLL = (seg[:, :, None] == seg[:, None, :]) & (seg != 0)[:, :, None]
    eye_LL = torch.eye(L, dtype=torch.bool, device=seg.device)
    return ((same_BLL & causal_LL) | eye_LL)[:, None]


class LossMasks(NamedTuple):
    """Where the next-item targets are: entry ``[b, i]`` is position i + 1 of the batch, predicted
    from the hidden state at position i."""

    text_BL: torch.Tensor  # bool [B, L - 1]: MODEL_TEXT targets (text_BL[:, 1:])
    audio_BL: torch.Tensor  # bool [B, L - 1]: MODEL_AUDIO targets (dmel_BLM[:, 1:], logmel_BLM[:, 1:])


def loss_positions(kind_BL: torch.Tensor | np.ndarray) -> LossMasks:
    """The shifted target masks of MODEL_TEXT and MODEL_AUDIO positions.

    A shift never pairs two packed samples: every sequence starts with CHUNK_MARK, which is
    never a target, so the first target of a segment reads a hidden state of the same segment.
    """
    kind = torch.as_tensor(kind_BL)
    if kind.ndim != 2:
        raise ValueError(f"kind_BL must be [B, L], got shape {tuple(kind.shape)}")
    nxt = kind[:, 1:]
    return LossMasks(text_BL=nxt == Kind.MODEL_TEXT, audio_BL=nxt == Kind.MODEL_AUDIO)
