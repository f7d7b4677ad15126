"""Ingest throughput on the embedded backends, against ffmpeg decoding the same files.

Builds a corpus of conversational videos and audio files from the real call that ships with
pyannote.audio (each file is the call looped, with a different gain so every file is a distinct
conversation), then in the same run:

1. baseline: ffmpeg decodes every file to 16 kHz float32 (what any audio pipeline must pay);
2. the ingest job (in-process DirectRunner, embedded backends, STM sidecars aligned).

Prints realtime factors (audio seconds per wall second) end to end and per stage (from the
stage timers in Beam metrics, models loaded), the ingest cost as a multiple of the baseline, and
the DER and word check on the 30 s sample call. Usage::

    .venv/bin/python bench/ingest.py [--files 6] [--loops 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from microturn.testing.sample_call import SAMPLE_DIR as SAMPLE

# The in-process DirectRunner uses one worker; multi_threading and multi_processing with 2 workers
# use both cores of this machine (each process loads its own models; threads share one process,
# and ffmpeg, torch and onnxruntime release the GIL while they work).
RUNNERS = {
    "in-process": [],
    "2 threads": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    "2 processes": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _looped_stm(loops: int, stem: str) -> str:
    lines = [line.split() for line in (SAMPLE / "sample.stm").read_text().splitlines() if line.strip()]
    out = []
    for k in range(loops):
        for _, ch, spk, s, e, *text in lines:
            out.append(f"{stem} {ch} {spk} {float(s) + 30 * k:.3f} {float(e) + 30 * k:.3f} {' '.join(text)}")
    return "\n".join(out) + "\n"


def build(root: str, files: int, loops: int, *, audio_only: bool = False) -> list[str]:
    wav = str(SAMPLE / "sample.wav")
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(files):
        stem = f"call{i:02d}"
        ext = ".flac" if audio_only else ".mp4"
        path = os.path.join(root, stem + ext)
        audio = ["-stream_loop", str(loops - 1), "-i", wav]
        gain = f"volume={0.8 + 0.05 * i:.2f}"
        if ext == ".mp4":
            _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", *audio, "-map", "0:v", "-map", "1:a",
                     "-af", gain, "-t", str(30 * loops), "-c:v", "libx264", "-preset", "ultrafast",
                     "-pix_fmt", "yuv420p", "-c:a", "aac", path)
        else:
            _ffmpeg(*audio, "-af", gain, "-t", str(30 * loops), path)
        with open(os.path.join(root, stem + ".stm"), "w") as f:
            f.write(_looped_stm(loops, stem))
        paths.append(path)
    return paths


def baseline_decode(paths: list[str]) -> float:
    started = time.perf_counter()
    for p in paths:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", p, "-map", "0:a:0", "-ac", "1",
                        "-ar", "16000", "-f", "f32le", "-"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--loops", type=int, default=6, help="30 s loops of the call per file")
    ap.add_argument("--audio-only", action="store_true", help="FLAC inputs instead of mp4 videos")
    args = ap.parse_args(argv)

    from microturn.pipelines.eval_diarization import evaluate_diarization
    from microturn.pipelines.eval_words import evaluate_words
    from microturn.pipelines.ingest.run import run
    from microturn.pipelines.tables import read_table

    with tempfile.TemporaryDirectory(prefix="microturn-bench-") as tmp:
        paths = build(os.path.join(tmp, "in"), args.files, args.loops, audio_only=args.audio_only)
        audio_s = args.files * args.loops * 30.0
        base_s = baseline_decode(paths)
        runs = {}
        for label, beam_flags in RUNNERS.items():
            runs[label] = run(["--input", os.path.join(tmp, "in", "*"),
                               "--output", os.path.join(tmp, f"out-{label}"), *beam_flags],
                              print_summary=False)
            assert runs[label].conversations == args.files, runs[label].render()

        sample_in = os.path.join(tmp, "sample")
        os.makedirs(sample_in)
        _ffmpeg("-i", str(SAMPLE / "sample.wav"), os.path.join(sample_in, "sample.flac"))
        with open(os.path.join(sample_in, "sample.stm"), "w") as f:
            f.write((SAMPLE / "sample.stm").read_text())
        quality = {}
        for label, extra in (("num_speakers=2", ["--num-speakers", "2"]), ("estimated", [])):
            out = os.path.join(tmp, f"sample-out-{len(extra)}")
            run(["--input", os.path.join(sample_in, "sample.flac"), "--output", out, *extra],
                print_summary=False)
            seg = read_table(out, "segments").to_pylist()
            der = evaluate_diarization(str(SAMPLE / "sample.rttm"),
                                       {"sample": [(s["speaker"], s["start_ms"], s["end_ms"]) for s in seg]})
            words = read_table(out, "words").to_pylist()
            wrep = evaluate_words(str(SAMPLE / "sample.stm"),
                                  {"sample": [(w["text"], w["start_ms"], w["end_ms"]) for w in words]})
            conv = read_table(out, "conversations").to_pylist()[0]
            quality[label] = (der.total.der, conv["num_speakers"], wrep.total.inside_share)

    print(f"corpus: {args.files} files x {args.loops * 30} s = {audio_s / 60:.1f} min "
          f"({'flac' if args.audio_only else 'mp4: 640x360 25 fps video + aac'}), STM sidecars")
    print(f"baseline  ffmpeg decode to 16 kHz: {base_s:.2f} s = {audio_s / base_s:.0f}x realtime")
    for label, summary in runs.items():
        print(f"ingest, {label}: end to end (incl. Beam start and model loading) {summary.wall_s:.1f} s"
              f" = {summary.realtime_factor:.1f}x realtime = {summary.wall_s / base_s:.1f}x the baseline time")
        for stage, rtf in summary.stage_rtf.items():
            print(f"          stage {stage:<11} {rtf:7.0f}x realtime (one worker, models loaded)")
        if summary.stage_rtf:
            steady = 1 / sum(1 / v for v in summary.stage_rtf.values())
            print(f"          all stages in sequence on one worker: {steady:.1f}x realtime")
    for label, (der, n, share) in quality.items():
        print(f"sample call, {label:<15} DER {der:.1%} (no collar), speakers {n}, "
              f"words inside reference segment {share:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
