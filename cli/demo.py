"""``microturn demo``: ingest and synthesis end to end on the embedded backends, offline.

It turns the real two-person phone call that ships with pyannote.audio into a conversational
video (a test picture drawn by ffmpeg plus the call's audio), puts its transcript beside it as an
STM sidecar, ingests it, and prints the summary with the DER against the reference RTTM. Then it
synthesizes a handful of dialogues from the bundled templates (espeak-ng), remixes the ingested
call into per-speaker streams, and prints their turn-taking statistics against the real call's,
with a histogram PNG. Finally it cuts everything into micro-turn shards (WebDataset tars with
Parquet manifests), builds the DuckDB catalog over records and shards, prints three audit
queries and writes the HTML audit report.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shutil

import ffmpeg

# The three queries the demo prints: what an auditor asks first.
AUDIT_QUERIES = (
    ("hours by origin",
     "SELECT origin, sum(conversations) AS conversations, round(sum(hours), 4) AS hours "
     "FROM hours_by_split GROUP BY origin ORDER BY origin"),
    ("turn-taking by origin",
     "SELECT origin, gap_count, gap_p50_ms, overlap_count, overlap_p50_ms, round(overlap_ratio, 3) AS overlap_ratio, "
     "round(backchannels_per_min, 2) AS backchannels_per_min FROM turn_taking_by_origin ORDER BY origin"),
    ("rejects by stage", "SELECT stage, error_type, rejects FROM rejects_by_stage ORDER BY stage, error_type"),
)


def sample_files() -> dict[str, str]:
    """Paths of pyannote.audio's sample call and its references (wav, rttm, stm)."""
    root = importlib.resources.files("pyannote.audio") / "sample"
    paths = {ext: str(root / f"sample.{ext}") for ext in ("wav", "rttm", "stm")}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise ValueError(f"pyannote.audio's sample files are missing: {missing}; reinstall pyannote.audio")
    return paths


def make_video(wav: str, out_mp4: str, *, size: str = "640x360", fps: int = 25) -> None:
    """A video with a moving test picture and ``wav`` as its soundtrack (H.264 + AAC)."""
    picture = ffmpeg.input(f"testsrc2=size={size}:rate={fps}", f="lavfi")
    audio = ffmpeg.input(wav)
    (
        ffmpeg.output(picture, audio, out_mp4, vcodec="libx264", preset="veryfast", pix_fmt="yuv420p",
                      acodec="aac", shortest=None, fflags="+bitexact", map_metadata=-1)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
        .run(capture_stdout=True, capture_stderr=True)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="microturn demo", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--output", default="demo-out", help="working folder (default: demo-out)")
    p.add_argument("--dialogues", type=int, default=6, help="dialogues to synthesize (default: 6)")
    args, beam_args = p.parse_known_args(argv)

    from microturn.pipelines.ingest.run import run
    from microturn.pipelines.tables import read_table

    files = sample_files()
    inputs = os.path.join(args.output, "input")
    os.makedirs(inputs, exist_ok=True)
    video = os.path.join(inputs, "sample.mp4")
    make_video(files["wav"], video)
    shutil.copyfile(files["stm"], os.path.join(inputs, "sample.stm"))
    print(f"demo: made {video} (+ sample.stm sidecar) from pyannote.audio's sample call")

    out = os.path.join(args.output, "out")
    summary = run(["--input", os.path.join(inputs, "*"), "--output", out, *beam_args])

    from microturn.pipelines.eval_diarization import evaluate_diarization

    segments = read_table(out, "segments").to_pylist()
    hyp = {"sample": [(s["speaker"], s["start_ms"], s["end_ms"]) for s in segments]}
    report = evaluate_diarization(files["rttm"], hyp, collar_s=0.0)
    print(f"  DER vs reference  {report.total.der:.1%} (no collar), JER {report.total.jer:.1%}")

    from microturn.pipelines.synthesize.run import run as synthesize
    from microturn.pipelines.synthesize.stats import collect, plot, render

    synth_out = os.path.join(args.output, "synth")
    print(f"\ndemo: synthesizing {args.dialogues} dialogues and remixing the ingested call")
    made = synthesize(["--generate", str(args.dialogues), "--remix", out, "--output", synth_out, *beam_args])
    real = collect(out)
    print()
    print(render(real, title=f"real call: {out}"))
    png = os.path.join(synth_out, "turn_taking.png")
    plot(made, real, png, labels=("synthetic + remix", "real call"))
    print(f"\ndemo: gap and overlap histograms in {png}")

    from microturn.pipelines.catalog.run import audit_main, catalog_main
    from microturn.pipelines.shard.run import run as shard

    shards = os.path.join(args.output, "shards")
    print(f"\ndemo: sharding the real call and the synthetic dialogues into {shards}")
    sharded = shard(["--input", out, "--input", synth_out, "--output", shards, *beam_args])
    catalog = os.path.join(args.output, "catalog.duckdb")
    print()
    catalog_main(["build", out, synth_out, shards, "--catalog", catalog])
    for title, sql in AUDIT_QUERIES:
        print(f"\naudit: {title}\n$ microturn audit --catalog {catalog} \"{sql}\"")
        audit_main(["--catalog", catalog, sql])
    report = os.path.join(args.output, "report")
    audit_main(["report", "--catalog", catalog, "--output", report])
    ok = summary.conversations == 1 and made.conversations == args.dialogues + 1 and sharded["samples"] > 0
    return 0 if ok else 1
