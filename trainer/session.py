"""The live micro-turn session: a trained model run 200 ms at a time, as a duplex client uses it.

Every :meth:`Session.step` takes the user's next 200 ms (3200 samples at 16 kHz, optionally the
two video frames of those 200 ms, any user text that arrived and any text a background model
delivered) and returns the model's 200 ms: its text, its 4 dMel frames, its 4 log-mel frames and
3200 samples of its audio. Chunk k of the sequence layout (``batch.build_sequence``, layout 3) is
fed and generated in order:

    [CHUNK_MARK] [user text] [4 USER_AUDIO] [P VIDEO]
        [background text] [MODEL_MARK]                                <- given (one forward)
    [model text ...]                                                  <- text head, until its
                                                                         end-of-text class
    [4 MODEL_AUDIO]                                                   <- dMel head, frame by frame

Background text is queued and placed as ``build_sequence`` places it (``batch.spill_background``):
a step's result joins the queue, and each step feeds at most ``max_background_per_chunk`` of
the queued tokens, so a long result spills over the following steps as it did in training.

Every decision is a trained head's: whether and what to say (text head, whose end-of-text class
ends the chunk's text; a chunk can say nothing), and the audio (dMel head; its bins are fed back
as the next frame's input, as in training). The flow head turns the 4 hidden states that
predicted the audio frames into log-mel frames, which the vocoder turns into samples. The
chunk's last MODEL_AUDIO frame is fed at the start of the next step, with the next chunk's
inputs, so a step is 1 + (text tokens) + 3 forwards of a few positions each.

Cost. The key/value cache (``kv_cache``) keeps every block's keys and values, so a step
attends over the held positions instead of re-running the prefix; the attention window
(``SessionConfig.window_chunks``, 150 chunks = 30 s by default, the length of the windows the
shard stage cuts and the model trains on) bounds memory and cost. Exactness against a
teacher-forced forward is documented in ``kv_cache``.

The MoE layers decode through ``SessionConfig.moe_kernel``: DeepSpeed's layer built dropless (so
a position's output never depends on which other positions share its forward), or a Triton
kernel of :mod:`microturn.kernels` (``gemv``, ``grouped``, ``auto``; their stacked expert
weights are made once, when the session loads).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples, T 50 ms frames,
M = 80 mel channels, L positions, D model width, P video patches, F frames, H, W pixels,
C colours, V text classes, S dMel bins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from microturn.schemas.config import setting, validate
from microturn.schemas.dmel import encode
from microturn.schemas.sample import CHUNK_MS, FRAMES_PER_CHUNK, N_MELS, PATCH_PX, SAMPLE_RATE
from microturn.schemas.video import patchify
from microturn.trainer.batch import Kind, background_ids, spill_background
from microturn.trainer.kv_cache import AttentionWindow, KVCache
from microturn.trainer.sampling import SamplingConfig, choose
from microturn.trainer.trained_run import TrainedRun, load_trained_run
from microturn.trainer.transformer import MoEFeedForward

CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000  # 3200
_HOP = CHUNK_SAMPLES // FRAMES_PER_CHUNK  # 800: a dMel frame also reads the 800 samples before its hop
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """How a session decodes.

    Attributes:
        moe_kernel: the MoE layers' decode path: ``deepspeed`` (DeepSpeed's layer, dropless;
            the default, and the one that runs on any CPU), ``gemv`` / ``grouped`` (Triton
            kernels: CUDA, or the interpreter with TRITON_INTERPRET=1), ``auto`` (gemv for few
            tokens, grouped for many).
        text: sampling of the text head (greedy by default).
        speak_threshold: at each chunk's first text position (the model marker, where the model
            decides whether a word of its own starts in this chunk), start one when the text
            head's P(not end-of-text) is at least this, choosing the token among the others
            under ``text``; below it the chunk's text ends there. None: ``text`` alone decides
            (greedy text then speaks only where one token outscores end-of-text, which a model
            that spreads its start over many words and chunks rarely does). ``microturn eval
            model --calibrate`` reports the threshold of best shift/hold balanced accuracy on
            training shards: VAP's practice of choosing decision thresholds on held-in data.
        audio: sampling of the dMel head, per mel channel (greedy by default).
        flow_steps: Euler steps of the flow head's sampler (None: the model's ``flow_steps``).
        seed: seeds every draw (sampling and the flow's noise): a session is the same for the
            same inputs and seed.
        window_chunks: chunks a position attends to, counting its own (None: all; memory and
            cost then grow with the session). 150 = 30 s, the windows the model trains on.
        sink_chunks: first chunks every position also attends to (the attention sink).
        max_text_per_chunk: text tokens per chunk and stream: the model's text ends there
            (forced), the user's text is cut there; 16 is the loader's cut of both streams
            (``build_sequence``), so the model never saw longer chunks.
        max_background_per_chunk: background tokens fed per chunk, the rest queued for the next
            steps; 16 is the loader's (``build_sequence``), so a session spreads a result over
            the chunks the model saw it spread over in training.
        voiced_level: a chunk of model audio is voiced when one of its log-mel frames has a
            mean over the 80 channels above this (log10 units). -5.5 sits in the empty range
            between silence and speech of the model streams the demo shards: of 9688 frames,
            57% are at the -7 floor, speech frames have means of -3.5 to -1.5, and 0.7% lie
            between -6.5 and -4.5.
        vocoder: the vocoder's name (``trainer.vocoder.make_vocoder``).
        device: torch device of the model.
        dtype: ``fp32`` or ``bf16`` weights and activations.
    """

    moe_kernel: str = setting("deepspeed", choices=MoEFeedForward.KERNELS)
    text: SamplingConfig = field(default_factory=SamplingConfig)
    speak_threshold: float | None = setting(None, gt=0.0, lt=1.0)
    audio: SamplingConfig = field(default_factory=SamplingConfig)
    flow_steps: int | None = setting(None, ge=1)
    seed: int = setting(0, ge=0)
    window_chunks: int | None = setting(150, ge=1)
    sink_chunks: int = setting(1, ge=0)
    max_text_per_chunk: int = setting(16, ge=0)
    max_background_per_chunk: int = setting(16, ge=1)
    voiced_level: float = -5.5
    vocoder: str = "griffin-lim"
    device: str = "cpu"
    dtype: str = setting("fp32", choices=tuple(_DTYPES))

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, kw_only=True)
class ChunkOutput:
    """The model's 200 ms of one step.

    Attributes:
        chunk: index of the chunk (0 for the first step).
        text: the model text of the chunk (decoded tokens; "" when it said nothing).
        text_ids: its token ids.
        text_forced_end: True when the chunk hit ``max_text_per_chunk`` before the text head
            ended it.
        p_speak: the text head's P(not end-of-text) at the model marker: its probability that a
            word of the model starts in this chunk (what ``speak_threshold`` is compared with).
        dmel_TM: uint8 [4, 80] dMel bins of the model's audio frames.
        logmel_TM: float32 [4, 80] log-mel frames (flow head).
        audio_N: float32 [3200] model audio from the vocoder (delayed by its ``delay_samples``).
        voiced: whether a log-mel frame's channel mean exceeds ``voiced_level``.
        compute_ms: wall time of the step (model, heads and vocoder), milliseconds.
        positions: positions fed to the model in this step.
        background_fed: background tokens fed in this step.
        background_queued: background tokens still queued for the next steps.
    """

    chunk: int
    text: str
    text_ids: tuple[int, ...]
    text_forced_end: bool
    p_speak: float
    dmel_TM: np.ndarray
    logmel_TM: np.ndarray
    audio_N: np.ndarray
    voiced: bool
    compute_ms: float
    positions: int
    background_fed: int = 0
    background_queued: int = 0


@dataclass
class _Feed:
    """Positions to feed in the next forward, as lists (one entry per position)."""

    kind: list[int] = field(default_factory=list)
    text: list[int] = field(default_factory=list)
    dmel: list[np.ndarray] = field(default_factory=list)
    time: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    patches: list[np.ndarray] = field(default_factory=list)  # [2, 40, 40, 3] per VIDEO position


class Session:
    """A trained run decoding 200 ms at a time (see the module notes).

    Args:
        checkpoint: a run directory of ``microturn train`` (or a loaded :class:`TrainedRun`);
            any model config, trained with or without expert parallelism.
        config: decoding settings.
        tag: checkpoint tag (default: the run's latest).
        record: keep every fed position and every hidden state (for tests and inspection;
            memory grows with the session).

    Raises ``ValueError`` for a directory that is not a run, a checkpoint of another sequence
    layout, weights that do not fit the run's model config, or a kernel that cannot run here.
    """

    def __init__(self, checkpoint: str | TrainedRun, config: SessionConfig | None = None, *,
                 tag: str | None = None, record: bool = False) -> None:
        from microturn.trainer.model import InteractionModel
        from microturn.trainer.tokenizer import get_tokenizer
        from microturn.trainer.vocoder import make_vocoder

        self.config = cfg = config or SessionConfig()
        run = checkpoint if isinstance(checkpoint, TrainedRun) else load_trained_run(checkpoint, tag=tag)
        self.run = run
        self.model_cfg = run.model
        self.tokenizer = get_tokenizer(run.train.tokenizer)
        self.device = torch.device(cfg.device)
        self.dtype = _DTYPES[cfg.dtype]
        model = InteractionModel(run.model, ep_size=1, seed=run.train.seed, dropless=True)
        try:
            missing, unexpected = model.load_state_dict(run.state_dict, strict=False)
        except RuntimeError as exc:  # tensors of other shapes than the config's model (torch's one error type)
            lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
            raise ValueError(f"{run.run_dir} ({run.tag}): weights do not fit its model config: "
                             f"{lines[0] if lines else exc}") from None
        if missing or unexpected:
            raise ValueError(f"{run.run_dir} ({run.tag}): weights do not fit its model config: missing "
                             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.model.check_moe_kernel(cfg.moe_kernel)
        if cfg.moe_kernel != "deepspeed" and self.device.type != "cuda":
            import triton.knobs

            if not triton.knobs.runtime.interpret:
                raise ValueError(f"moe_kernel {cfg.moe_kernel!r} runs Triton kernels: it needs device='cuda', or "
                                 "TRITON_INTERPRET=1 in the environment to interpret them on the CPU (slowly); "
                                 "use moe_kernel='deepspeed' on a CPU")
        if cfg.moe_kernel != "deepspeed":
            for layer in self.model.moe_layers():
                layer.expert_weights()  # stacked once here, not on the first step
        self.window = AttentionWindow(chunks=cfg.window_chunks, sink_chunks=cfg.sink_chunks)
        self.vocoder = make_vocoder(cfg.vocoder)
        self.record = record
        self.reset()

    def reset(self) -> None:
        """Start a new conversation: empty cache, chunk 0, generators reseeded."""
        m = self.model_cfg
        self.cache = KVCache(layers=m.layers, kv_heads=m.kv_heads, head_dim=m.head_dim, window=self.window,
                             dtype=self.dtype, device=self.device)
        self.chunk = 0
        self._feed = _Feed()  # the previous chunk's last audio frame waits here
        self._tail_N = np.zeros(_HOP, np.float32)  # the user's last 50 ms, which the next frame reads
        self._rank = 0  # next rank inside the current chunk (rotary position = time * stride + rank)
        self._background: list[int] = []  # background tokens queued for the next chunks
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.vocoder.reset()
        self.history: dict[str, list] = {"kind": [], "text": [], "dmel": [], "time": [], "patches": [],
                                          "hidden": []}

    # ----------------------------------------------------------------- feeding the model
    def _add(self, kind: Kind, *, text: int = 0, dmel: np.ndarray | None = None,
             patch: np.ndarray | None = None) -> None:
        feed = self._feed
        feed.kind.append(int(kind))
        feed.text.append(text)
        feed.dmel.append(np.zeros(N_MELS, np.uint8) if dmel is None else dmel)
        feed.time.append(self.chunk)
        feed.rank.append(self._rank)
        if patch is not None:
            feed.patches.append(patch)
        self._rank += 1
        if self._rank > self.model_cfg.chunk_stride:
            raise ValueError(f"chunk {self.chunk} holds more than chunk_stride={self.model_cfg.chunk_stride} "
                             "positions: give less user text or fewer video patches per step, or lower "
                             "max_background_per_chunk")

    def _forward(self) -> torch.Tensor:
        """Feed the pending positions; the hidden state of the last one [D]."""
        feed, self._feed = self._feed, _Feed()
        dev = self.device
        kind_BL = torch.tensor([feed.kind], dtype=torch.long, device=dev)
        video_BL = torch.full_like(kind_BL, -1)
        if feed.patches:
            video_PFHWC = torch.from_numpy(np.stack(feed.patches)).to(dev)
            video_BL[kind_BL == int(Kind.VIDEO)] = torch.arange(len(feed.patches), device=dev)
        else:
            video_PFHWC = torch.zeros((0, 2, PATCH_PX, PATCH_PX, 3), dtype=torch.uint8, device=dev)
        time_BL = torch.tensor([feed.time], dtype=torch.long, device=dev)
        inputs = {"kind_BL": kind_BL, "text_BL": torch.tensor([feed.text], dtype=torch.long, device=dev),
                  "dmel_BLM": torch.from_numpy(np.stack(feed.dmel)).unsqueeze(0).to(dev),
                  "video_PFHWC": video_PFHWC, "video_BL": video_BL, "time_BL": time_BL}
        positions_BL = time_BL * self.model_cfg.chunk_stride + torch.tensor([feed.rank], device=dev)
        h_BLD = self.model.decode(inputs, positions_BL, self.cache, moe_kernel=self.config.moe_kernel)
        if self.record:
            h = self.history
            h["kind"] += feed.kind
            h["text"] += feed.text
            h["dmel"] += feed.dmel
            h["time"] += feed.time
            h["patches"] += feed.patches
            h["hidden"].append(h_BLD[0].float().cpu())
        return h_BLD[0, -1]

    # ----------------------------------------------------------------- inputs of a chunk
    def _user_dmel(self, user_audio_N: Any) -> np.ndarray:
        audio_N = np.asarray(user_audio_N.cpu() if isinstance(user_audio_N, torch.Tensor) else user_audio_N)
        if audio_N.shape != (CHUNK_SAMPLES,):
            raise ValueError(f"user audio must be {CHUNK_SAMPLES} samples (200 ms at {SAMPLE_RATE} Hz) of mono, "
                             f"got shape {audio_N.shape}")
        if not np.issubdtype(audio_N.dtype, np.floating):
            raise TypeError(f"user audio must be float samples in [-1, 1], got {audio_N.dtype}")
        audio_N = audio_N.astype(np.float32)
        if not np.isfinite(audio_N).all():
            raise ValueError("user audio holds NaN or infinite samples")
        buffer_N = np.concatenate([self._tail_N, audio_N])
        self._tail_N = audio_N[-_HOP:].copy()
        # Frame i of the 4000-sample buffer reads buffer samples [800 (i - 1), 800 (i + 1)): frames
        # 1..4 are the chunk's frames 4k..4k+3 exactly as over the whole recording (dmel's causal pad).
        return np.asarray(encode(buffer_N))[1:1 + FRAMES_PER_CHUNK]

    @staticmethod
    def _patches(video_frames_FHWC: Any) -> np.ndarray:
        frames = np.asarray(video_frames_FHWC)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != 2 or frames.shape[3] != 3:
            raise ValueError(f"video frames must be uint8 [2, H, W, 3] (the two 10 fps frames of the chunk), got "
                             f"{frames.dtype} {frames.shape}")
        h, w = frames.shape[1:3]
        if h % PATCH_PX or w % PATCH_PX or not h or not w:
            raise ValueError(f"video frames must be a whole grid of {PATCH_PX} px patches (scaled as the shard "
                             f"stage scales them), got {h}x{w}")
        return patchify(frames, h // PATCH_PX, w // PATCH_PX)[0]

    # ----------------------------------------------------------------- one step
    @torch.no_grad()
    def step(self, user_audio_N: Any, video_frames: Any = None, user_text: str | None = None,
             background_text: str | None = None) -> ChunkOutput:
        """Feed the user's next 200 ms and generate the model's (see the module notes).

        Args:
            user_audio_N: 3200 float samples, 16 kHz mono (NumPy or torch).
            video_frames: uint8 [2, H, W, 3], the chunk's two 10 fps frames scaled to a grid of
                40 px patches (H and W multiples of 40), or None.
            user_text: the user's words that start in this chunk, if a transcript is streamed.
            background_text: text a background model delivered to the model during this chunk
                (one result; several arriving in one chunk joined with spaces in arrival order),
                or None. Queued, and fed ``max_background_per_chunk`` tokens a step from this one.
        """
        started = time.perf_counter()
        cfg, m = self.config, self.model_cfg
        if self.chunk >= m.max_time:
            raise ValueError(f"the session reached the model's max_time of {m.max_time} chunks "
                             f"({m.max_time * CHUNK_MS / 60000:.0f} min); start a new one")
        if background_text is not None and not isinstance(background_text, str):
            raise TypeError(f"background_text must be a string or None, got {type(background_text).__name__}")
        dmel_user_TM = self._user_dmel(user_audio_N)
        patches = [] if video_frames is None else list(self._patches(video_frames))
        user_ids = self.tokenizer.encode(" " + user_text.strip()) if user_text and user_text.strip() else []
        user_ids = user_ids[:cfg.max_text_per_chunk]
        arriving = background_ids(self.tokenizer, background_text) if background_text is not None else []
        background, queued = spill_background(self._background, arriving, cfg.max_background_per_chunk)

        self._rank = 0
        self._add(Kind.CHUNK_MARK)
        for token in user_ids:
            self._add(Kind.USER_TEXT, text=token)
        for frame in dmel_user_TM:
            self._add(Kind.USER_AUDIO, dmel=frame)
        for patch in patches:
            self._add(Kind.VIDEO, patch=patch)
        for token in background:
            self._add(Kind.BACKGROUND_TEXT, text=token)
        self._add(Kind.MODEL_MARK)
        fed = len(self._feed.kind)
        h_D = self._forward()
        self._background = queued  # fed: what is left waits for the next steps

        head = self.model.text_head
        said: list[int] = []
        forced = False
        logits_1V = head.logits(h_D.unsqueeze(0))  # at the model marker: does a word start?
        p_speak = 1.0 - float(logits_1V[0].float().softmax(-1)[head.end_of_text])
        while True:
            if len(said) >= cfg.max_text_per_chunk:
                forced = True
                break
            if said:
                logits_1V = head.logits(h_D.unsqueeze(0))
            if not said and cfg.speak_threshold is not None:
                if p_speak < cfg.speak_threshold:
                    break
                logits_1V = logits_1V.clone()
                logits_1V[0, head.end_of_text] = float("-inf")  # the decision is taken: a word starts
            token = int(choose(logits_1V, cfg.text, self.generator)[0])
            if token == head.end_of_text:
                break
            said.append(token)
            self._add(Kind.MODEL_TEXT, text=token)
            fed += 1
            h_D = self._forward()

        frames, hiddens = [], []
        for j in range(FRAMES_PER_CHUNK):
            hiddens.append(h_D)
            logits_MS = self.model.dmel_head.logits(h_D.unsqueeze(0))[0]
            frame_M = choose(logits_MS, cfg.audio, self.generator).to(torch.uint8).cpu().numpy()
            frames.append(frame_M)
            self._add(Kind.MODEL_AUDIO, dmel=frame_M)
            if j < FRAMES_PER_CHUNK - 1:
                fed += 1
                h_D = self._forward()
        # The last frame is fed with the next chunk's inputs (see the module notes).
        logmel_TM = self.model.flow_head.sample(torch.stack(hiddens), cfg.flow_steps, generator=self.generator)
        logmel_TM = logmel_TM.float().cpu()
        audio_N = self.vocoder.stream(logmel_TM).numpy()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = ChunkOutput(chunk=self.chunk, text=self.tokenizer.decode(said), text_ids=tuple(said),
                          text_forced_end=forced, p_speak=p_speak, dmel_TM=np.stack(frames),
                          logmel_TM=logmel_TM.numpy(),
                          audio_N=audio_N, voiced=bool(logmel_TM.mean(-1).max() > cfg.voiced_level),
                          compute_ms=(time.perf_counter() - started) * 1000.0, positions=fed,
                          background_fed=len(background), background_queued=len(queued))
        self.chunk += 1
        return out

    # ----------------------------------------------------------------- inspection
    def recorded_batch(self) -> Mapping[str, torch.Tensor]:
        """The positions fed so far as a one-row batch of the trainer (``record=True`` only): a
        teacher-forced forward of it (``model.hidden``) recomputes the session's hidden states."""
        if not self.record:
            raise ValueError("recorded_batch needs a Session made with record=True")
        h = self.history
        n = len(h["kind"])
        kind_BL = torch.tensor([h["kind"]], dtype=torch.long)
        video_BL = torch.full_like(kind_BL, -1)
        if h["patches"]:
            video_BL[kind_BL == int(Kind.VIDEO)] = torch.arange(len(h["patches"]))
            video_PFHWC = torch.from_numpy(np.stack(h["patches"]))
        else:
            video_PFHWC = torch.zeros((0, 2, PATCH_PX, PATCH_PX, 3), dtype=torch.uint8)
        batch = {"kind_BL": kind_BL, "text_BL": torch.tensor([h["text"]], dtype=torch.long),
                 "dmel_BLM": torch.from_numpy(np.stack(h["dmel"])).unsqueeze(0),
                 "video_PFHWC": video_PFHWC, "video_BL": video_BL,
                 "time_BL": torch.tensor([h["time"]], dtype=torch.long),
                 "segment_BL": torch.ones((1, n), dtype=torch.long)}
        return {k: v.to(self.device) for k, v in batch.items()}

    def recorded_hidden(self) -> torch.Tensor:
        """float32 [L, D]: the hidden state of every position fed so far (``record=True`` only)."""
        if not self.record:
            raise ValueError("recorded_hidden needs a Session made with record=True")
        return torch.cat(self.history["hidden"])
