"""``microturn session``: stream a recording into a trained model 200 ms at a time, as a live client.

::

    microturn session --checkpoint RUN --user-audio FILE [--video FILE] [--user-text WORDS.json]
        [--background-text RESULTS.json] --output DIR [--config session.toml] [--tag step60]
        [--moe-kernel deepspeed|gemv|grouped|auto] [--seed 0] [--device cpu] [--threads 1] [--patch-budget 48]
        [--no-progress]

The user's audio (any file ffmpeg reads; its first audio stream, mono 16 kHz) is cut into chunks
of 3200 samples (the last one zero-padded) and fed to :meth:`Session.step` one chunk at a time,
with the chunk's two 10 fps video frames (``--video``), the transcript's words that start in
the chunk (``--user-text``) and the background results that arrive in it
(``--background-text``: a words JSON of results, ``start_ms`` their arrival, or a sample's
``words.json`` whose ``background`` list is read; the session queues a result and feeds it over
the following chunks as training did). Written into ``--output``:

- ``model.wav``: the model's audio, 16 kHz mono;
- ``conversation.wav``: stereo 16 kHz, the user left and the model right, time-aligned as in the
  training data: the model's chunk k sits at chunk k's time, beside the user's chunk k, with the
  vocoder's ``delay_samples`` (50 ms for Griffin-Lim) removed; ``model.wav`` is its right channel;
- ``timeline.jsonl``: one object per chunk: chunk, start_ms, compute_ms, text, p_speak (the text
  head's probability that a word starts in the chunk, :attr:`ChunkOutput.p_speak`), voiced,
  text_forced_end, positions;
- ``session.json``: the run, checkpoint tag, inputs, settings and latency figures.

The latency summary (p50 / p95 / max compute per chunk, in ms and as a share of the 200 ms
budget, and the chunks over budget) is printed at the end.

Settings: ``--config FILE.toml`` holds :class:`SessionConfig` keys, with ``[text]`` and
``[audio]`` tables for the :class:`SamplingConfig` of each head; unknown keys are errors.
``--moe-kernel``, ``--seed`` and ``--device`` override the file.

Bad input (a missing or unreadable file, no audio or video stream, a folder that is not a run,
a checkpoint of another sequence layout, weights that do not fit their config, a bad setting,
an output folder holding files no session wrote) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from microturn.schemas.sample import CHUNK_MS, SAMPLE_RATE

# The command line lives in a module of its own, so that `microturn session --help` loads neither
# numpy nor torch; it is re-exported here, where it always was.
from microturn.trainer.session_args import DEFAULT_THREADS, build_parser, main

__all__ = ["SessionReport", "build_parser", "main", "run_session", "session_config"]

CHUNK_SAMPLES = SAMPLE_RATE * CHUNK_MS // 1000  # 3200
BUDGET_MS = float(CHUNK_MS)  # a live session must produce each 200 ms of audio in 200 ms
_WRITTEN = ("conversation.wav", "model.wav", "timeline.jsonl", "session.json")


@dataclass(frozen=True, kw_only=True)
class SessionReport:
    """What a session run did: per-chunk figures and where it wrote them.

    ``clipped`` is the share of model samples outside [-1, 1], clipped in the wavs (a model whose
    flow head emits log-mel near the recipe's ceiling makes audio louder than full scale)."""

    output: str
    run_dir: str
    tag: str
    step: int
    chunks: int
    compute_ms: tuple[float, ...]
    texts: tuple[str, ...]
    voiced: tuple[bool, ...]
    wall_s: float
    clipped: float = 0.0
    interrupted: bool = False

    def percentiles(self) -> dict[str, float]:
        """p50, p95 and max compute per chunk, ms (0 when no chunk ran)."""
        ms = np.asarray(self.compute_ms or (0.0,))
        return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max())}

    def summary(self) -> str:
        """The latency summary, a few lines."""
        p = self.percentiles()
        over = sum(1 for ms in self.compute_ms if ms > BUDGET_MS)
        said = sum(1 for t in self.texts if t)
        figures = ", ".join(f"{k} {v:.1f} ms ({v / BUDGET_MS:.0%})" for k, v in p.items())
        return (f"session: {self.chunks} chunk(s) ({self.chunks * CHUNK_MS / 1000:.1f} s) in {self.wall_s:.1f} s"
                f"{' (interrupted)' if self.interrupted else ''}; the model spoke text in {said} chunk(s), "
                f"voiced audio in {sum(self.voiced)}"
                + (f"; {self.clipped:.1%} of its samples clipped at full scale" if self.clipped else "") + "\n"
                f"compute per chunk against the {BUDGET_MS:.0f} ms budget: {figures}; "
                f"{over} of {self.chunks} chunk(s) over budget\n"
                f"wrote {', '.join(os.path.join(self.output, n) for n in _WRITTEN)}")


def session_config(path: str | None = None, *, moe_kernel: str | None = None, seed: int | None = None,
                   device: str | None = None):
    """The :class:`SessionConfig` of TOML file ``path`` (defaults without one), with the flags'
    values over it. ``ValueError`` naming the key for unknown keys, wrong types, bad values."""
    from microturn.schemas.config import from_mapping, load_toml
    from microturn.trainer.session import SessionConfig

    data = load_toml(path) if path else {}
    flags = {k: v for k, v in (("moe_kernel", moe_kernel), ("seed", seed), ("device", device)) if v is not None}
    where = f"{path} (with the flags)" if path and flags else (path or "the flags")
    return from_mapping(SessionConfig, {**data, **flags}, where=where)


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this machine has no CUDA device (or torch was built without CUDA)")


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load_session(checkpoint: str, config, tag: str | None):
    from microturn.trainer.session import Session
    from microturn.trainer.trained_run import load_trained_run

    return Session(load_trained_run(checkpoint, tag=tag), config)


def run_session(checkpoint: str, user_audio: str, output: str, *, video: str | None = None,
                user_text: str | None = None, background_text: str | None = None, config=None, tag: str | None = None,
                patch_budget: int | None = None, threads: int = DEFAULT_THREADS,
                progress: bool = True, session=None) -> SessionReport:
    """Stream ``user_audio`` (and ``video``, ``user_text``, ``background_text``) through a session of run ``checkpoint``
    into ``output`` (see the module notes); returns the figures.

    ``session``: an already loaded :class:`~microturn.trainer.session.Session` of that run, reset
    here (empty cache, generators reseeded, so the result is the one a fresh session gives); a
    caller streaming many recordings loads the weights once. ``config`` and ``tag`` must then be
    left out: the session has its own.

    Every input is checked before the model loads, and the output folder before anything is
    written. ``ValueError`` (one line) for bad input; a ``KeyboardInterrupt`` stops the stream
    and the chunks done so far are written (``SessionReport.interrupted``)."""
    from microturn.trainer import session_media as media
    from microturn.trainer.session import SessionConfig

    if session is not None and (config is not None or tag is not None):
        raise ValueError("give either a loaded session or the config and tag to load one, not both")
    config = session.config if session is not None else (config or SessionConfig())
    budget = media.PATCH_BUDGET if patch_budget is None else patch_budget
    if budget < 1:
        raise ValueError(f"--patch-budget must be at least 1 patch per chunk, got {budget}")
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    _check_device(config.device)
    user_N = media.read_audio(user_audio)
    words = media.words_by_chunk(media.read_words(user_text)) if user_text else {}
    results = media.words_by_chunk(media.read_words(background_text, stream="background")) if background_text else {}
    if video:
        media.VideoFrames(video, patch_budget=budget).close()  # probe it now: a bad video fails before the model
    media.check_output(output)

    chunks = math.ceil(len(user_N) / CHUNK_SAMPLES)
    padded_N = np.zeros(chunks * CHUNK_SAMPLES, np.float32)
    padded_N[:len(user_N)] = user_N
    started = time.perf_counter()
    with _threads(threads):
        if session is None:
            session = _load_session(checkpoint, config, tag)
        else:
            session.reset()
        if chunks > session.model_cfg.max_time:
            raise ValueError(f"--user-audio {user_audio!r}: {chunks} chunks ({chunks * CHUNK_MS / 60000:.1f} min); the "
                             f"model takes at most max_time={session.model_cfg.max_time} chunks: split the recording")
        media.claim_output(output)
        timeline = os.path.join(output, "timeline.jsonl")
        model_parts: list[np.ndarray] = []
        compute, texts, voiced = [], [], []
        interrupted = False
        with contextlib.ExitStack() as stack:
            frames = stack.enter_context(media.VideoFrames(video, patch_budget=budget)) if video else None
            tmp = stack.enter_context(media.atomic_path(timeline))
            lines = stack.enter_context(open(tmp, "w", encoding="utf-8"))
            bar = _progress(chunks, progress)
            stack.callback(bar.close)
            try:
                for k in range(chunks):
                    video_FHWC = frames.next_chunk() if frames is not None else None
                    audio_N = padded_N[k * CHUNK_SAMPLES:(k + 1) * CHUNK_SAMPLES]
                    # background_text only where a result arrives: a wrapper of the session (as
                    # cli.eval_interaction's) may take the three inputs of before alone.
                    out = (session.step(audio_N, video_FHWC, words.get(k)) if k not in results
                           else session.step(audio_N, video_FHWC, words.get(k), background_text=results[k]))
                    model_parts.append(out.audio_N)
                    compute.append(out.compute_ms)
                    texts.append(out.text)
                    voiced.append(out.voiced)
                    lines.write(json.dumps({"chunk": out.chunk, "start_ms": out.chunk * CHUNK_MS,
                                            "compute_ms": round(out.compute_ms, 3), "text": out.text,
                                            "p_speak": round(out.p_speak, 4), "voiced": out.voiced,
                                            "text_forced_end": out.text_forced_end,
                                            "positions": out.positions}) + "\n")
                    bar.update(1)
                    if out.text:
                        bar.set_postfix_str(f"{out.compute_ms:.0f} ms, said {out.text[-20:]!r}", refresh=False)
            except KeyboardInterrupt:
                interrupted = True
        delay = session.vocoder.delay_samples
    done = len(model_parts)
    # The vocoder's output runs delay_samples behind the frames: drop that lead so that the model's
    # chunk k lies at [3200 k, 3200 (k + 1)), beside the user's chunk k; its last delay_samples
    # (audio the vocoder gives only after a next frame) stay silent.
    model_N = np.zeros(done * CHUNK_SAMPLES, np.float32)
    streamed_N = np.concatenate(model_parts) if model_parts else model_N
    model_N[:max(0, len(streamed_N) - delay)] = streamed_N[delay:]
    media.write_wav(os.path.join(output, "model.wav"), model_N)
    media.write_wav(os.path.join(output, "conversation.wav"),
                    np.stack([padded_N[:done * CHUNK_SAMPLES], model_N], axis=1))
    report = SessionReport(output=output, run_dir=session.run.run_dir, tag=session.run.tag, step=session.run.step,
                           chunks=done, compute_ms=tuple(compute), texts=tuple(texts), voiced=tuple(voiced),
                           wall_s=time.perf_counter() - started, interrupted=interrupted,
                           clipped=float((np.abs(model_N) > 1.0).mean()) if done else 0.0)
    record = {"checkpoint": os.path.abspath(session.run.run_dir), "tag": report.tag, "step": report.step,
              "user_audio": os.path.abspath(user_audio), "video": video and os.path.abspath(video),
              "user_text": user_text and os.path.abspath(user_text),
              "background_text": background_text and os.path.abspath(background_text), "patch_budget": budget,
              "threads": threads,
              "config": asdict(config), "chunks": done, "interrupted": interrupted,
              "vocoder_delay_samples_removed": delay, "budget_ms": BUDGET_MS,
              "compute_ms": {k: round(v, 3) for k, v in report.percentiles().items()},
              "chunks_over_budget": sum(1 for ms in compute if ms > BUDGET_MS), "model_clipped": report.clipped}
    with media.atomic_path(os.path.join(output, "session.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    return report


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(chunks: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=chunks, desc="session", unit="chunk", dynamic_ncols=True, file=sys.stderr)


if __name__ == "__main__":
    from microturn.cli.usage import exit_status

    sys.exit(exit_status(main))
