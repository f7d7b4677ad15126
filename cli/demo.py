"""``microturn demo``: ingest and synthesis end to end on the embedded backends, offline.

It turns the real two-person phone call that ships with pyannote.audio into a conversational
video (a test picture drawn by ffmpeg plus the call's audio), puts its transcript beside it as an
STM sidecar, ingests it, and prints the summary with the DER against the reference RTTM. Then it
synthesizes a handful of dialogues from the bundled templates (espeak-ng): the generator's first
dialogues are one of each of its kinds (a conversation, a time-aware request, a visual-cue
request with its scene video, a background look-up, a simultaneous rendering), so the default six
show them all, and the bundled visual, background and simultaneous scripts
(``synth/data/{visual,background,simultaneous}.jsonl``, 13 dialogues) add a few more of each. It
remixes the ingested
call into per-speaker streams, and prints their turn-taking statistics against the real call's,
with a histogram PNG. Finally it cuts everything into micro-turn shards (WebDataset tars with
Parquet manifests), builds the DuckDB catalog over records and shards, prints three audit
queries and writes the HTML audit report.

Then it closes the loop: it trains ``tiny-cpu`` briefly on the train split of those shards
(``--train-steps``), synthesizes one more dialogue that no shard holds (another generator seed,
so other scripts; checked against the shards' samples), and streams its first speaker's stream,
with that speaker's words as the user's transcript, into a live session of the trained run
(``microturn session``'s own run function): ``OUT/session/conversation.wav`` holds the user and
the model side by side, and the latency summary and what the model said are printed.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import shutil

import ffmpeg

# The queries the demo prints: what an auditor asks first.
AUDIT_QUERIES = (
    ("hours by origin",
     "SELECT origin, sum(conversations) AS conversations, round(sum(hours), 4) AS hours "
     "FROM hours_by_split GROUP BY origin ORDER BY origin"),
    ("hours by task type",
     "SELECT task_type, origin, conversations, with_video, round(hours, 4) AS hours, items "
     "FROM task_types ORDER BY task_type, origin"),
    ("turn-taking by origin",
     "SELECT origin, gap_count, gap_p50_ms, overlap_count, overlap_p50_ms, round(overlap_ratio, 3) AS overlap_ratio, "
     "round(backchannels_per_min, 2) AS backchannels_per_min FROM turn_taking_by_origin ORDER BY origin"),
    ("rejects by stage", "SELECT stage, error_type, rejects FROM rejects_by_stage ORDER BY stage, error_type"),
)


# The demo's dialogues come from the generator's default seed 0; seed 1 gives other scripts (their
# dialogue ids, gen-1-*, differ from gen-0-*), so the held-out dialogue is in no shard.
HELDOUT_SEED = 1
# Steps of the demo's training: tiny-cpu on the demo's shards, a step takes about 1 s on the 2 idle
# cores of the reference machine (150 steps: 150.5 s). A session on the held-out dialogue (240
# chunks) after 30 steps: no text, flow log-mel up to +10, 76.5% of the model's samples clipped (noise
# at full scale); after 150: no text yet, 11 voiced chunks, nothing clipped; after 400: text in 69
# chunks (pseudo-words at the right moments), but 400 s of training would take the demo past 6 min.
TRAIN_STEPS = 150
# The generator makes one of each of its five kinds first (microturn.synth.templates.generate),
# so six dialogues show every kind and one drawn from the mix, at ~1-3 s of synthesis each.
DIALOGUES = 6
# The bundled scripts of the three behaviours beyond turn-taking: 5 visual (every cue kind),
# 4 background and 4 simultaneous (French, Spanish, German, shadowing), so the demo's shards and
# catalog hold a few of each, not one.
BEHAVIOUR_SCRIPTS = ("visual.jsonl", "background.jsonl", "simultaneous.jsonl")


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
    from microturn.cli.logs import add_level_flag, setup_from_argv
    from microturn.synth.names import KINDS

    argv = setup_from_argv("microturn demo", argv)
    p = argparse.ArgumentParser(prog="microturn demo", description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--output", default="demo-out", help="working folder (default: demo-out)")
    p.add_argument("--dialogues", type=int, default=DIALOGUES,
                   help=f"dialogues to synthesize (default: {DIALOGUES}; the first {len(KINDS)} are one of each kind: "
                        f"{', '.join(KINDS)})")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS,
                   help=f"training steps of the demo's tiny-cpu run (default: {TRAIN_STEPS}; 0 skips training and "
                        "the session)")
    add_level_flag(p)
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
    shown = ", ".join(KINDS[: args.dialogues]) + (", ..." if args.dialogues > len(KINDS) else "")
    data = importlib.resources.files("microturn.synth") / "data"
    scripts = [str(data / name) for name in BEHAVIOUR_SCRIPTS]
    bundled = sum(1 for name in BEHAVIOUR_SCRIPTS for line in (data / name).read_text(encoding="utf-8").splitlines()
                  if line.strip())
    print(f"\ndemo: synthesizing {args.dialogues} dialogues (kinds: {shown}), the {bundled} bundled visual, "
          "background and simultaneous scripts, and remixing the ingested call")
    made = synthesize(["--generate", str(args.dialogues), *(a for path in scripts for a in ("--scripts", path)),
                       "--remix", out, "--output", synth_out, *beam_args])
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
    ok = summary.conversations == 1 and made.conversations == args.dialogues + bundled + 1 and sharded["samples"] > 0
    if args.train_steps > 0:
        ok = talk_back(args.output, shards, steps=args.train_steps, beam_args=beam_args) and ok
    return 0 if ok else 1


def _train_demo_run(shards: str, run_dir: str, steps: int) -> None:
    from microturn.trainer.data import glob_shards
    from microturn.trainer.loop import train
    from microturn.trainer.train_config import load_named

    if os.path.exists(run_dir):  # an earlier demo's run: train afresh, so every demo shows the same steps
        if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
            raise ValueError(f"{run_dir} exists and is not a training run of an earlier demo; move it away")
        shutil.rmtree(run_dir)
    cfg = load_named("tiny-cpu", [f"train.steps={steps}", f"train.ckpt_every={steps}"])
    result = train(cfg, shards=glob_shards(os.path.join(shards, "train", "*.tar")), output=run_dir, progress=True)
    last = result.records[-1] if result.records else {}
    print(f"demo: trained {run_dir} for {result.step} step(s), loss {last.get('loss', float('nan')):.3f}")


def _held_out_user(heldout: str, shards: str, words_dir: str) -> tuple[str, str, str]:
    """(user audio, user words JSON, conversation id) of the held-out dialogue's first speaker."""
    from microturn.pipelines.tables import read_table

    conv = read_table(heldout, "conversations").to_pylist()[0]
    cid = conv["conversation_id"]
    sharded = set(read_table(shards, "samples").column("conversation_id").to_pylist())
    if cid in sharded:
        raise ValueError(f"the held-out dialogue {cid} is in the shards; pick another HELDOUT_SEED")
    user = conv["speakers"][0]
    audio = os.path.join(heldout, conv["media_dir"], conv["audio_files"][conv["speakers"].index(user)])
    words = [{"text": w["text"], "start_ms": w["start_ms"], "end_ms": w["end_ms"]}
             for w in read_table(heldout, "words").to_pylist()
             if w["conversation_id"] == cid and w["speaker"] == user]
    words_json = os.path.join(words_dir, "user_words.json")
    with open(words_json, "w", encoding="utf-8") as f:
        json.dump(words, f)
    return audio, words_json, cid


def talk_back(out_dir: str, shards: str, *, steps: int, beam_args: list[str]) -> bool:
    """Train tiny-cpu on ``shards``' train split, then run a session on a held-out dialogue."""
    from microturn.pipelines.synthesize.run import run as synthesize
    from microturn.schemas.text import visible
    from microturn.trainer.session_cli import run_session

    run_dir = os.path.join(out_dir, "run")
    print(f"\ndemo: training tiny-cpu for {steps} steps on {shards}/train into {run_dir}")
    _train_demo_run(shards, run_dir, steps)

    heldout = os.path.join(out_dir, "heldout")
    print(f"\ndemo: synthesizing a held-out dialogue (seed {HELDOUT_SEED}, in no shard) into {heldout}")
    synthesize(["--generate", "1", "--seed", str(HELDOUT_SEED), "--output", heldout, *beam_args])
    # Not in OUT/input: the ingest of a rerun reads everything there.
    words_dir = os.path.join(out_dir, "heldout_input")
    os.makedirs(words_dir, exist_ok=True)
    audio, words, cid = _held_out_user(heldout, shards, words_dir)

    session_dir = os.path.join(out_dir, "session")
    print(f"\ndemo: streaming {cid}'s user stream ({audio}) into a live session of {run_dir}")
    report = run_session(run_dir, audio, session_dir, user_text=words)
    said = [(k, text) for k, text in enumerate(report.texts) if text]
    if said:
        print(f"  the model said (chunk time: text), in {len(said)} of {report.chunks} chunk(s):")
    else:
        print(f"  the model said no text: its text head ended all {report.chunks} chunks' text at once "
              "(most chunks of the training data carry none); it answered in audio only")
    for k, text in said[:12]:
        print(f"    {k * 0.2:5.1f} s: {visible(text)!r}")
    if len(said) > 12:
        print(f"    ... {len(said) - 12} more in {session_dir}/timeline.jsonl")
    print(report.summary())
    return report.chunks > 0 and not report.interrupted
