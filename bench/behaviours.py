"""Benchmark of synthesizing visual-cue, background-result and simultaneous-speech dialogues:
speed against their parts measured alone in the same run, and bytes per hour with video.

    python bench/behaviours.py [--per-kind 12] [--seed 0] [--repeats 2] [--json report.json]

For each kind, the same generated dialogues (``generate(kinds=[kind])``) are made three ways,
alternated ``--repeats`` times (best of each kept; the machine is noisy):

1. TTS alone: espeak-ng speaks every text the pipeline speaks (``speak_dialogue``: turns, timed
   responses, cue answers, mentions), in process, nothing else;
2. video alone (visual kind): the scene of every dialogue is drawn and encoded to H.264
   (``write_scene_video``), with the cue times the layout gave (computed once, outside the
   timing), and, apart, the encoder alone on the same frames held in memory;
3. the whole ``microturn synthesize`` pipeline on the DirectRunner with 2 threads (the setting
   BENCHMARKS.md recommends on 2 cores).

Figures: pipeline / TTS alone and, for the visual kind, pipeline / (TTS + video alone) and video
alone / TTS alone. Then the pipeline's output is sharded (default settings) and bytes are
counted per hour of conversation: FLAC stems, scene video, and shard tar bytes per hour of sample
time, for samples with video against samples without.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

from microturn.pipelines.shard.run import run as shard
from microturn.pipelines.synthesize.run import run as synthesize
from microturn.pipelines.tables import read_table
from microturn.schemas.dialogue import Dialogue
from microturn.synth.engine import scene_spec, speak_dialogue, synthesize_dialogue
from microturn.synth.mix import MixConfig
from microturn.synth.scene import render_frames
from microturn.synth.scene_video import encode_frames, write_scene_video
from microturn.synth.templates import generate, write_jsonl
from microturn.synth.timing import DEFAULT_TIMING
from microturn.synth.tts import get_tts

KINDS = ("visual", "background", "simultaneous")
THREADS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def tts_alone(dialogues: list[Dialogue]) -> float:
    """Wall seconds of espeak-ng speaking everything the pipeline speaks for ``dialogues``."""
    tts = get_tts("espeak-ng")
    started = time.perf_counter()
    for d in dialogues:
        speak_dialogue(d, tts)
    return time.perf_counter() - started


def scenes(dialogues: list[Dialogue], seed: int) -> list:
    """The scene specs of the visual dialogues, as synthesis lays them out (not timed)."""
    tts = get_tts("espeak-ng")
    out = []
    for i, d in enumerate(dialogues):
        conv = synthesize_dialogue(d, tts=tts, timing=DEFAULT_TIMING, mix=MixConfig(), seed=seed)
        spec = scene_spec(conv, seed=i)
        if spec is not None:
            out.append(spec)
    return out


def video_alone(specs: list, tmp: str) -> tuple[float, float, int]:
    """Wall seconds of drawing + encoding every scene, of encoding alone (frames drawn before,
    held in memory), and the bytes written."""
    started = time.perf_counter()
    written = 0
    for k, spec in enumerate(specs):
        written += write_scene_video(spec, os.path.join(tmp, f"scene-{k}.mp4"))
    both = time.perf_counter() - started
    encode = 0.0
    for k, spec in enumerate(specs):
        frames = list(render_frames(spec))
        started = time.perf_counter()
        encode_frames(frames, width=spec.width, height=spec.height, fps=spec.fps,
                      path=os.path.join(tmp, f"enc-{k}.mp4"))
        encode += time.perf_counter() - started
    return both, encode, written


def tree_bytes(root: str, pattern: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(root, pattern), recursive=True))


def byte_figures(out: str, shards: str) -> dict:
    convs = read_table(out, "conversations").to_pylist()
    hours = sum(c["duration_ms"] for c in convs) / 3_600_000
    video_hours = sum(c["duration_ms"] for c in convs if c["has_video"]) / 3_600_000
    flac = tree_bytes(out, "media/*/*.flac")
    video = tree_bytes(out, "media/*/video.mp4")
    rows = read_table(shards, "samples").to_pylist()
    per: dict[bool, list[float]] = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for r in rows:  # one row per sample: its bytes in the tar and its duration
        per[bool(r["has_video"])][0] += r["tar_bytes"]
        per[bool(r["has_video"])][1] += r["duration_ms"] / 3_600_000
    return {
        "hours": round(hours, 4), "flac_mb_per_hour": round(flac / 1e6 / hours, 1),
        "video_mb_per_hour_of_video": round(video / 1e6 / video_hours, 1) if video_hours else None,
        "samples_with_video_mb_per_hour": round(per[True][0] / 1e6 / per[True][1], 1) if per[True][1] else None,
        "samples_audio_only_mb_per_hour": round(per[False][0] / 1e6 / per[False][1], 1) if per[False][1] else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--per-kind", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", metavar="PATH", help="also write the report here")
    args = p.parse_args(argv)
    report: dict = {"per_kind": args.per_kind, "seed": args.seed, "repeats": args.repeats, "kinds": {}}
    with tempfile.TemporaryDirectory(prefix="bench-behaviours-") as tmp:
        for kind in KINDS:
            dialogues = generate(args.per_kind, seed=args.seed, kinds=[kind])
            scripts = os.path.join(tmp, f"{kind}.jsonl")
            write_jsonl(dialogues, scripts)
            specs = scenes(dialogues, args.seed) if kind == "visual" else []
            tts_walls, video_walls, encode_walls, pipe_walls = [], [], [], []
            out = ""
            for r in range(args.repeats):
                tts_walls.append(tts_alone(dialogues))
                if specs:
                    both, encode, _ = video_alone(specs, tmp)
                    video_walls.append(both)
                    encode_walls.append(encode)
                out = os.path.join(tmp, f"out-{kind}-{r}")
                started = time.perf_counter()
                stats = synthesize(["--scripts", scripts, "--output", out, "--seed", str(args.seed), *THREADS],
                                   print_summary=False)
                pipe_walls.append(time.perf_counter() - started)
                print(f"{kind} run {r}: tts {tts_walls[-1]:.1f} s, video {video_walls[-1] if specs else 0:.1f} s, "
                      f"pipeline {pipe_walls[-1]:.1f} s", file=sys.stderr)
            shards = os.path.join(tmp, f"shards-{kind}")
            shard(["--input", out, "--output", shards], print_summary=False)
            tts, pipe = min(tts_walls), min(pipe_walls)
            figures = {"dialogues": len(dialogues), "dialogue_s": round(stats.hours * 3600, 1),
                       "tts_alone_wall_s": round(tts, 2), "pipeline_wall_s": round(pipe, 2),
                       "pipeline_over_tts": round(pipe / tts, 3),
                       "dialogue_s_per_wall_s": round(stats.hours * 3600 / pipe, 1)}
            if specs:
                video, encode = min(video_walls), min(encode_walls)
                figures.update(scenes=len(specs), video_alone_wall_s=round(video, 2),
                               encode_alone_wall_s=round(encode, 2), video_over_tts=round(video / tts, 3),
                               pipeline_over_tts_plus_video=round(pipe / (tts + video), 3))
            figures.update(byte_figures(out, shards))
            report["kinds"][kind] = figures
    print(json.dumps(report, indent=2))
    for kind, f in report["kinds"].items():
        line = f"{kind}: synthesis / TTS alone {f['pipeline_over_tts']:.2f}x"
        if "video_over_tts" in f:
            line += (f", video alone / TTS alone {f['video_over_tts']:.2f}x, synthesis / (TTS + video) "
                     f"{f['pipeline_over_tts_plus_video']:.2f}x, video {f['video_mb_per_hour_of_video']} MB/h, "
                     f"samples with video {f['samples_with_video_mb_per_hour']} MB/h")
        else:
            line += f", samples {f['samples_audio_only_mb_per_hour']} MB/h"
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
