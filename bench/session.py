"""Benchmark of the live micro-turn session: per-chunk compute over a long session, against
re-running the prefix each chunk as a session without a key/value cache must.

    python bench/session.py [--minutes 10] [--config tiny-cpu] [--checkpoint RUN]
    python bench/session.py --config small-gpu --device cuda --dtype bf16 --moe-kernel gemv

Model: by default the config's ``InteractionModel`` as initialised (seed of the config), handed
to the session as an in-memory :class:`~microturn.trainer.trained_run.TrainedRun`: no training
needed. An untrained text head rarely picks its end-of-text class, so most chunks run to the
16-token cap and a chunk feeds ~26 positions (printed); a trained model says less per chunk and
costs less. ``--checkpoint RUN`` times a trained run instead. Input: the real two-person call
shipped with pyannote.audio, looped, fed 3200 samples at a time so dMel encodes real speech.

1. Per-chunk compute (``ChunkOutput.compute_ms``: model, heads, flow sampler and vocoder) of a
   ``--minutes`` session of 200 ms chunks: p50, p95 and max as a share of the 200 ms budget in
   the first minute (chunks 0-299) and the last (2700-2999 for 10 minutes). Goals: p95 under
   100 ms in the last minute; the last minute's p50 within 1.2x of the first's at equal work
   (flat), i.e. over the chunks that ran the same number of forwards, since a trained model says
   more in some minutes than in others and a step's cost follows its forwards. The
   session is warmed (5 chunks, then ``reset()``) as a server would be before its first call.
2. Re-run baseline: one teacher-forced ``model.hidden`` forward of what a session without a
   cache must recompute for its next position, against the cached step (all of it, heads and
   vocoder included), best of ``--repeats``. It is measured on a second session that replays the
   first minute and records every position (the timed session records nothing, as a live one);
   under the window a re-run costs the same at any time once the session outlives the window,
   so the replayed minute's last window stands for the last minute's:
   - ``full``: the whole prefix under the session's attention window (the teacher-forced twin
     of the cached session), measured only where its L x L masks fit ``--mask-budget``;
   - ``window``: the sink chunk and the last ``window_chunks`` chunks only, under the window
     (what a cacheless session with the same window re-runs for its last layer's keys; exact
     recomputation would reach ``layers x window`` chunks back, so this is a lower bound).
   One forward per chunk is itself a lower bound: a cacheless decoder needs one per generated
   position. So the goal is judged on the last step decoded again without a cache, timed: one
   windowed forward per forward the session ran for that chunk (model only, no heads or vocoder).
   Goal: the cached step at least 10x cheaper at the last minute.
3. Key/value cache bytes (``session.cache.nbytes()``, allocated capacity) after the first and the
   last minute: bounded by the window, so flat once the session outlives it (150 chunks = 30 s).

The load average of the machine is printed at the start and the end: the figures are only as
quiet as the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

CHUNKS_PER_MINUTE = 300  # 60 s / 200 ms
BUDGET_MS = 200.0  # a chunk must be computed before the next one arrives
WARMUP_CHUNKS = 5  # first calls allocate and pick kernels; a server runs them before serving
# One thread by default: a step is ~26 forwards of 1-9 positions through 64-wide matrices, too
# small to split, and a second OpenMP thread waits at every op's barrier while other work holds the
# other core (tiny-cpu, load ~4.6 on 2 cores: p50 113 ms with 1 thread, 401 ms with 2).
THREADS = 1
# L x L masks of one teacher-forced forward: attention_mask's intermediates (about 5 bool L x L),
# the window's (1 bool), and SDPA's additive float mask (4 bytes) and scores per head (4 bytes).
MASK_BYTES_PER_PAIR = 14


def build_run(config: str, checkpoint: str | None):
    """The run to time: ``checkpoint`` loaded, or the config's initialised model in memory."""
    from microturn.trainer.model import InteractionModel
    from microturn.trainer.train_config import load_named
    from microturn.trainer.trained_run import TrainedRun, load_trained_run

    if checkpoint:
        return load_trained_run(checkpoint)
    cfg = load_named(config)
    model = InteractionModel(cfg.model, ep_size=1, seed=cfg.train.seed, dropless=True)
    return TrainedRun(run_dir=f"(initialised {cfg.name})", tag="init", step=0, model=cfg.model, train=cfg.train,
                      state_dict=model.state_dict())


def user_chunks(n: int):
    """``n`` consecutive 3200-sample chunks of the sample call, looped ([3200] float32 each)."""
    from microturn.testing.sample_call import sample_wave
    from microturn.trainer.session import CHUNK_SAMPLES

    wave_N = sample_wave()
    usable = len(wave_N) // CHUNK_SAMPLES * CHUNK_SAMPLES
    for k in range(n):
        start = (k * CHUNK_SAMPLES) % usable
        yield wave_N[start:start + CHUNK_SAMPLES]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def select_chunks(batch: dict, keep_L: torch.Tensor) -> dict:
    """The positions ``keep_L`` of a one-row recorded batch (whole chunks, so ranks hold)."""
    out = {k: v[:, keep_L] for k, v in batch.items() if k.endswith("_BL") or k.endswith("_BLM")}
    video_BL = out["video_BL"]
    used = video_BL[video_BL >= 0]
    out["video_PFHWC"] = batch["video_PFHWC"][used]
    renumbered_BL = video_BL.clone()
    renumbered_BL[video_BL >= 0] = torch.arange(int(used.numel()), device=video_BL.device)
    out["video_BL"] = renumbered_BL
    return out


def time_forward(session, batch: dict, repeats: int) -> float:
    """Best of ``repeats`` wall ms of one teacher-forced forward of ``batch`` (session window)."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            sync(session.device)
            started = time.perf_counter()
            session.model.hidden(batch, moe_kernel=session.config.moe_kernel, window=session.window)
            sync(session.device)
            best = min(best, (time.perf_counter() - started) * 1000.0)
    return best


def cacheless_step_ms(session, windowed: dict) -> tuple[float, int]:
    """(wall ms, forwards) of the session's last step done without a cache: one teacher-forced
    forward of the window up to every position the step ran a forward for (the chunk's inputs up
    to its model marker, then each text token and the first three audio frames), each timed once.
    Model forwards only (no heads, no vocoder): a lower bound for the step of a cacheless session
    with the same window."""
    from microturn.trainer.batch import Kind

    kind_L = windowed["kind_BL"][0]
    time_L = windowed["time_BL"][0]
    last = (time_L == time_L[-1]).nonzero().squeeze(1)
    mark = int(last[0]) + int((kind_L[last] == int(Kind.MODEL_MARK)).nonzero()[0, 0])
    ends = range(mark + 1, int(kind_L.shape[0]) + 1)  # the marker's forward, then one per fed position
    total = 0.0
    with torch.no_grad():
        for end in ends:
            prefix = select_chunks(windowed, torch.arange(end, device=kind_L.device))
            sync(session.device)
            started = time.perf_counter()
            session.model.hidden(prefix, moe_kernel=session.config.moe_kernel, window=session.window)
            sync(session.device)
            total += (time.perf_counter() - started) * 1000.0
    return total, len(ends)


def rerun_figures(session, repeats: int, mask_budget: float) -> dict[str, float | int | None]:
    """Re-run baselines of the session as it stands (see the module notes, figure 2)."""
    batch = dict(session.recorded_batch())
    length = int(batch["kind_BL"].shape[1])
    figures: dict[str, float | int | None] = {"full_positions": length, "full_ms": None}
    if MASK_BYTES_PER_PAIR * length * length <= mask_budget:
        figures["full_ms"] = time_forward(session, batch, repeats)
    time_L = batch["time_BL"][0]
    last = int(time_L[-1])
    keep_L = session.window.keep(time_L, last)
    windowed = select_chunks(batch, keep_L)
    figures["window_positions"] = int(keep_L.sum())
    figures["window_ms"] = time_forward(session, windowed, repeats)
    figures["cacheless_ms"], figures["cacheless_forwards"] = cacheless_step_ms(session, windowed)
    return figures


def summary(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def share(value: float) -> str:
    return f"{value:.1f} ms ({value / BUDGET_MS:.0%})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=10, help="session length in minutes (>= 2; 300 chunks each)")
    p.add_argument("--config", default="tiny-cpu", help="named config of the initialised model")
    p.add_argument("--checkpoint", default=None, help="a `microturn train` run to time instead")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--moe-kernel", default="deepspeed", choices=("deepspeed", "gemv", "grouped", "auto"))
    p.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads (0: torch's default)")
    p.add_argument("--repeats", type=int, default=2, help="re-run baseline: best of this many forwards")
    p.add_argument("--mask-budget", type=float, default=3.0,
                   help="GiB the full-prefix forward's L x L masks may take (else it is not measured)")
    args = p.parse_args()
    if args.minutes < 2:
        p.error("--minutes must be at least 2 (the first and the last minute are compared)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine")
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from microturn.schemas.sample import FRAMES_PER_CHUNK
    from microturn.trainer.model import count_params
    from microturn.trainer.session import Session, SessionConfig

    load_start = os.getloadavg()
    try:
        run = build_run(args.config, args.checkpoint)
        settings = SessionConfig(device=args.device, dtype=args.dtype, moe_kernel=args.moe_kernel)
        session = Session(run, settings)
        # The warm-up is also where a kernel that cannot run on this device says so.
        for audio_N in user_chunks(WARMUP_CHUNKS):
            session.step(audio_N)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session.reset()

    n = args.minutes * CHUNKS_PER_MINUTE
    last_minute = n - CHUNKS_PER_MINUTE
    outs = []
    bytes_at: dict[str, int] = {}
    loads = [load_start[0]]
    bar = tqdm(user_chunks(n), total=n, desc="session", unit="chunk", dynamic_ncols=True)
    for audio_N in bar:
        out = session.step(audio_N)
        outs.append(out)
        if out.chunk % 50 == 0:
            loads.append(os.getloadavg()[0])
            bar.set_postfix_str(f"{out.compute_ms:.0f} ms, {out.positions} positions")
        if out.chunk + 1 in (CHUNKS_PER_MINUTE, n):
            bytes_at["first" if out.chunk + 1 == CHUNKS_PER_MINUTE else "last"] = session.cache.nbytes()
    bar.close()
    # The baseline replays the first minute in a session that records every position (the timed
    # one does not: its recording grew the heap by ~0.7 GB over 10 min and slowed the late steps);
    # greedy decoding makes it the same minute. Under the 150-chunk window a re-run costs the same
    # at any time after 30 s, so its last window stands for the window at the last minute too.
    recorder = Session(run, settings, record=True)
    for audio_N in tqdm(user_chunks(CHUNKS_PER_MINUTE), total=CHUNKS_PER_MINUTE, desc="re-run baseline",
                        unit="chunk", dynamic_ncols=True):
        recorder.step(audio_N)
    baseline = rerun_figures(recorder, args.repeats, args.mask_budget * 2**30)
    rerun: dict[str, dict] = {"first": baseline,
                              "last": {**baseline, "full_ms": None,
                                       "full_positions": sum(o.positions for o in outs)}}
    loads.append(os.getloadavg()[0])

    m = run.model
    minutes = {"first": outs[:CHUNKS_PER_MINUTE], "last": outs[last_minute:]}
    label = {"first": "minute 1", "last": f"minute {args.minutes}"}
    at = {"first": "60 s", "last": f"{args.minutes * 60} s"}
    params = count_params(session.model)
    print(f"\n{run.run_dir} ({run.tag}, step {run.step}): {params['total'] / 1e6:.2f}M parameters "
          f"({params['active'] / 1e6:.2f}M active), {m.layers} layers, dim {m.dim}; {args.device} {args.dtype}, "
          f"MoE kernel {args.moe_kernel}, torch threads: {torch.get_num_threads()}; window {session.window.chunks} "
          f"chunks + {session.window.sink_chunks} sink; {n} chunks ({args.minutes} min); 1-min load average "
          f"{statistics.mean(loads):.2f} on average over the run ({min(loads):.2f} to {max(loads):.2f})")
    forced = sum(o.text_forced_end for o in outs) / len(outs)
    # Forwards of a step: the chunk's inputs, one per text token, one per audio frame but the
    # last (fed with the next chunk's inputs).
    forwards = statistics.mean(1 + len(o.text_ids) + FRAMES_PER_CHUNK - 1 for o in outs)
    print(f"positions per chunk: {statistics.mean(o.positions for o in outs):.1f} on average; "
          f"{forced:.0%} of chunks hit the {session.config.max_text_per_chunk}-token text cap"
          + (" (an untrained text head rarely ends a chunk's text)" if not args.checkpoint else "")
          + f"; {forwards:.1f} forwards per step")

    print(f"\n1. per-chunk compute (budget {BUDGET_MS:.0f} ms)")
    stats = {}
    for key, chunk_outs in minutes.items():
        s = stats[key] = summary([o.compute_ms for o in chunk_outs])
        print(f"   {label[key]:>9}: p50 {share(s['p50'])}, p95 {share(s['p95'])}, max {share(s['max'])}; "
              f"{statistics.mean(o.positions for o in chunk_outs):.1f} positions per chunk")
    growth = {q: stats["last"][q] / stats["first"][q] for q in ("p50", "p95")}
    p95_met = "met" if stats["last"]["p95"] < BUDGET_MS / 2 else "missed"
    print(f"   {label['last']} / minute 1: p50 {growth['p50']:.2f}x, p95 {growth['p95']:.2f}x; p95 at "
          f"{label['last']} {stats['last']['p95']:.1f} ms (goal < {BUDGET_MS / 2:.0f}: {p95_met})")
    # A trained model says more in some minutes than in others, and a step's cost follows its
    # forwards; whether the session itself slows down shows at equal work: the chunks of both
    # minutes that ran the same number of forwards (the count most common in both).
    by_forwards = {key: {} for key in minutes}
    for key, chunk_outs in minutes.items():
        for o in chunk_outs:
            by_forwards[key].setdefault(1 + len(o.text_ids) + FRAMES_PER_CHUNK - 1, []).append(o.compute_ms)
    shared = set(by_forwards["first"]) & set(by_forwards["last"])
    common = max(shared, key=lambda f: min(len(by_forwards["first"][f]), len(by_forwards["last"][f])))
    equal = {key: statistics.median(by_forwards[key][common]) for key in minutes}
    flat = equal["last"] / equal["first"]
    print(f"   at equal work ({common} forwards per step: {len(by_forwards['first'][common])} chunks of minute 1, "
          f"{len(by_forwards['last'][common])} of {label['last']}): p50 {equal['first']:.1f} ms -> "
          f"{equal['last']:.1f} ms, {flat:.2f}x (goal <= 1.2: {'met' if flat <= 1.2 else 'missed'})")

    print("\n2. re-run baseline: one teacher-forced forward against the cached step (p50 of the minute)")
    for key, r in rerun.items():
        step_ms = stats[key]["p50"]
        if r["full_ms"] is None:
            need = MASK_BYTES_PER_PAIR * r["full_positions"] ** 2 / 2**30
            why = (f"its L x L masks need {need:.0f} GiB > --mask-budget {args.mask_budget:g}"
                   if need > args.mask_budget else "only the first minute is recorded")
            full = f"full prefix ({r['full_positions']} positions) not measured: {why}"
        else:
            full = (f"full prefix ({r['full_positions']} positions) {r['full_ms']:.0f} ms -> "
                    f"{r['full_ms'] / step_ms:.1f}x")
        print(f"   at {at[key]:>5}: cached step {step_ms:.1f} ms; {full}; windowed re-run "
              f"({r['window_positions']} positions) {r['window_ms']:.0f} ms -> {r['window_ms'] / step_ms:.1f}x")
    print("   (the windowed figures are those of the replayed first minute's last window: a window costs "
          "the same at any time once the session outlives it)")
    print("   a cacheless session's step, timed: the last chunk decoded again without the cache, one "
          "teacher-forced forward of the window per forward the session ran (model only)")
    for key, r in rerun.items():
        # Against the cached steps of that minute that ran as many forwards (equal work); the
        # minute's p50 where none did.
        same = by_forwards[key].get(int(r["cacheless_forwards"]))
        cached = statistics.median(same) if same else stats[key]["p50"]
        basis = (f"p50 of the minute's {len(same)} cached steps with as many forwards" if same
                 else "the minute's p50")
        ratio = r["cacheless_ms"] / cached
        verdict = f" (goal >= 10: {'met' if ratio >= 10 else 'missed'})" if key == "last" else ""
        print(f"   at {at[key]:>5}: {r['cacheless_forwards']} forwards, {r['cacheless_ms']:.0f} ms -> "
              f"{ratio:.1f}x {cached:.1f} ms ({basis}){verdict}")

    print("\n3. key/value cache allocated: " + ", ".join(
        f"{label[k]} {bytes_at[k] / 2**20:.2f} MiB" for k in ("first", "last")))
    if args.device.startswith("cuda"):
        print(f"   device: {torch.cuda.get_device_name(torch.device(args.device))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
