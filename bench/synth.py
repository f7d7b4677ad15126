"""Benchmark of the synthesize pipeline: speed against the TTS alone, and requested statistics.

    python bench/synth.py [--dialogues 100] [--seed 0] [--repeats 2]

1. Speed. The same generated dialogues are spoken twice in the same run: by espeak-ng alone
   (everything synthesis speaks, same voices, in process, nothing else), and by the whole
   ``microturn synthesize`` pipeline (parse, speak, lay out, mix, FLAC, validate, sorted
   Parquet) on the DirectRunner, in process and with 2 threads (the runner setting this 2-core
   machine is best at: one thread's mixing and writing overlaps the other's wait on espeak-ng,
   which runs in its own process and is serialised by a lock, so the TTS work is the same).
   The figure is the ratio of wall times, best of ``--repeats`` alternated runs (goal: at most
   1.3), plus dialogue seconds per wall second.
2. Requested statistics, over the same dialogues:
   - median gap: the timing model's median gap against the median of all gaps measured in the
     written records (``conversations.stats``, definitions of ``microturn.schemas.turns``);
   - overlap ratio: the overlap the layout asked for (overlapped speech / speech, over the
     words' spans as placed, inter-word gaps under 120 ms bridged) against the overlap measured
     on the written FLAC stems with an energy detector (10 ms frames, -50 dBFS, same bridging).
   Goal: both within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from microturn.pipelines.media import read_flac
from microturn.pipelines.synthesize.run import run as synthesize
from microturn.pipelines.tables import read_table
from microturn.synth.engine import speak_dialogue
from microturn.synth.templates import generate, write_jsonl
from microturn.synth.timing import DEFAULT_TIMING
from microturn.synth.tts import get_tts

FRAME_MS = 10
BRIDGE_MS = 120  # the layout's phrase break: shorter silences are inside a phrase
ACTIVE_DBFS = -50.0


def tts_only(dialogues) -> tuple[float, float]:
    """Wall seconds and audio seconds of espeak-ng speaking everything synthesis speaks for
    ``dialogues`` (``speak_dialogue``: turns, timed responses, visual answers, mentions)."""
    tts = get_tts("espeak-ng")
    audio_ms = 0
    started = time.perf_counter()
    for d in dialogues:
        spoken, responses = speak_dialogue(d, tts)
        audio_ms += sum(s.duration_ms for s in spoken) + sum(s.duration_ms for rs in responses.values() for s in rs)
    return time.perf_counter() - started, audio_ms / 1000


def bridged(intervals: list[tuple[int, int]], bridge_ms: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if out and s - out[-1][1] < bridge_ms:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def frames(intervals, n_frames: int) -> np.ndarray:
    mask = np.zeros(n_frames, dtype=bool)
    for s, e in intervals:
        mask[s // FRAME_MS: -(-e // FRAME_MS)] = True
    return mask


def active_frames(wave_N: np.ndarray) -> np.ndarray:
    n = wave_N.size // (16 * FRAME_MS)
    rms = np.sqrt(np.mean(wave_N[: n * 16 * FRAME_MS].reshape(n, -1) ** 2, axis=1) + 1e-20)
    on = 20 * np.log10(rms) > ACTIVE_DBFS
    idx = np.flatnonzero(on)
    spans = [(int(i) * FRAME_MS, (int(i) + 1) * FRAME_MS) for i in idx]
    return frames(bridged(spans, BRIDGE_MS), n)


def overlap_ratio(masks: list[np.ndarray]) -> tuple[int, int]:
    n = min(m.size for m in masks)
    stack = np.stack([m[:n] for m in masks])
    count = stack.sum(axis=0)
    return int((count >= 2).sum()), int((count >= 1).sum())


def requested_statistics(out: str) -> dict:
    convs = read_table(out, "conversations").to_pylist()
    words = read_table(out, "words").to_pylist()
    by_conv: dict[str, dict[str, list]] = {}
    for w in words:
        by_conv.setdefault(w["conversation_id"], {}).setdefault(w["speaker"], []).append((w["start_ms"], w["end_ms"]))
    gaps = [g for c in convs for g in (c["stats"]["gaps_ms"] or [])]
    asked = [0, 0]
    measured = [0, 0]
    for c in convs:
        n = c["duration_ms"] // FRAME_MS
        plan = [frames(bridged(by_conv.get(c["conversation_id"], {}).get(s, []), BRIDGE_MS), n) for s in c["speakers"]]
        o, s = overlap_ratio(plan)
        asked[0] += o
        asked[1] += s
        stems = [active_frames(read_flac(os.path.join(out, c["media_dir"], f))) for f in c["audio_files"]]
        o, s = overlap_ratio(stems)
        measured[0] += o
        measured[1] += s
    return {
        "dialogues": len(convs),
        "gaps": len(gaps),
        "median_gap_asked_ms": DEFAULT_TIMING.median_gap_ms,
        "median_gap_measured_ms": float(np.median(gaps)),
        "overlap_ratio_asked": asked[0] / asked[1],
        "overlap_ratio_measured": measured[0] / measured[1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--dialogues", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    # The turn-taking kinds, as the figures of BENCHMARKS.md were measured on; the visual,
    # background and simultaneous kinds have their own benchmark (bench/behaviours.py).
    dialogues = generate(args.dialogues, seed=args.seed, kinds=("dialogue", "timed"))
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        scripts = os.path.join(tmp, "dialogues.jsonl")
        write_jsonl(dialogues, scripts)
        runners = {"in-process": [], "2 threads": ["--direct_running_mode=multi_threading",
                                                    "--direct_num_workers=2"]}
        tts_walls, pipe_walls = [], {name: [] for name in runners}
        for r in range(args.repeats):
            wall, tts_audio_s = tts_only(dialogues)
            tts_walls.append(wall)
            for name, flags in runners.items():
                out = os.path.join(tmp, f"out-{r}-{len(pipe_walls[name])}-{name.replace(' ', '')}")
                started = time.perf_counter()
                stats = synthesize(["--scripts", scripts, "--output", out, "--seed", str(args.seed), *flags],
                                   print_summary=False)
                pipe_walls[name].append(time.perf_counter() - started)
            print(f"run {r}: tts alone {wall:.1f} s, pipeline " + ", ".join(
                f"{n} {w[-1]:.1f} s" for n, w in pipe_walls.items()), file=sys.stderr)
        dialogue_s = stats.hours * 3600
        best_tts = min(tts_walls)
        best = {name: min(w) for name, w in pipe_walls.items()}
        req = requested_statistics(out)
    gap_err = req["median_gap_measured_ms"] / req["median_gap_asked_ms"] - 1
    ov_err = req["overlap_ratio_measured"] / req["overlap_ratio_asked"] - 1
    report = {
        "dialogues": args.dialogues, "dialogue_s": round(dialogue_s, 1), "tts_audio_s": round(tts_audio_s, 1),
        "tts_alone_wall_s": round(best_tts, 2),
        "tts_alone_x_realtime": round(tts_audio_s / best_tts, 1),
        **{f"pipeline_{n.replace(' ', '_').replace('-', '_')}_wall_s": round(w, 2) for n, w in best.items()},
        **{f"pipeline_{n.replace(' ', '_').replace('-', '_')}_over_tts": round(w / best_tts, 3)
           for n, w in best.items()},
        **{f"pipeline_{n.replace(' ', '_').replace('-', '_')}_dialogue_s_per_wall_s": round(dialogue_s / w, 1)
           for n, w in best.items()},
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in req.items()},
        "median_gap_rel_error": round(gap_err, 4), "overlap_ratio_rel_error": round(ov_err, 4),
    }
    print(json.dumps(report, indent=2))
    for name, w in best.items():
        print(f"synthesis ({name}) / TTS alone: {w / best_tts:.2f}x (goal <= 1.3x); "
              f"{dialogue_s / w:.1f} dialogue s per wall s")
    print(f"median gap: asked {req['median_gap_asked_ms']:.0f} ms, measured {req['median_gap_measured_ms']:.0f} ms "
          f"({gap_err:+.1%}); overlap ratio: asked {req['overlap_ratio_asked']:.3f}, measured on the stems "
          f"{req['overlap_ratio_measured']:.3f} ({ov_err:+.1%}) (goal: within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
