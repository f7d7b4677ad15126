"""Does the data teach turn-taking? Shift/hold of a tiny model trained on generated dialogues,
against the user-only endpointer, on held-out generated dialogues and on real meetings.

    python bench/turn_taking.py --work DIR [--dialogues 300] [--steps 2400] [--user-text-dropout P] [--kinds K,...]
                                [--interruption-share P] [--timing JSON] [--ckpt-every K] [--brief]
                                [--synthesize-flag=--FLAG=VALUE ...]
                                [--ami ../shared/data/ami-dev] [--interaction N]

1. ``microturn synthesize --generate N --seed 1 --kinds K`` (training) and ``--seed 2`` (held out:
   other scripts, other timing draws, other conversation ids), each cut by ``microturn shard`` into
   50-chunk (10 s) windows, all of one split (``--splits train=1`` / ``test=1``). ``--kinds``
   defaults to the turn-taking kinds (``dialogue,timed``, the recipe's data); with ``visual``
   among them the shards keep their video (otherwise ``--no-video``), and the interaction step
   also makes and scores the items of the visual, background and simultaneous tasks.
2. ``microturn train --config turn-taking-cpu train.steps=S train.user_text_dropout=P`` (tiny-cpu's
   model, 768-position rows) on the training shards, timed (the goal's budget is 10 minutes of
   training on this 2-core machine).
3. ``microturn eval model`` on the held-out shards and, with ``--ami``, on real meetings: the
   ami-dev clips with their reference speaker turns as records (``bench/rttm_records.py``; no
   diarizer error), cut into 150-chunk windows so that VAP's 3 s of context fit more often. Each
   prints the shift/hold events, the model's balanced accuracy and AUC and the endpointer's
   balanced accuracy (the baseline, measured on the same events in the same run). The held-out
   figures come three times: at the fixed threshold (P >= 0.5) and at the threshold chosen on the
   training shards' events (``--calibrate``, as VAP chooses its thresholds on validation data),
   then calibrated again with every sample read without the user's words
   (``--without-user-text``: what the model takes from audio alone); ami-dev's (no words) with
   the threshold chosen without user words; then the same clips ingested as a user would
   (``microturn ingest --transcriber none``: the embedded diarizer's turns, no words).

4. With ``--interaction N``: the duplex evaluation in free-running sessions. ``N`` more
   dialogues (``--seed 3``) become Full-Duplex-Bench items (``microturn eval items --splits
   test=1 --max-per-conversation 1``), and ``microturn eval interaction`` answers them with the
   trained run (its session's ``speak_threshold`` set to the threshold chosen on the training
   shards in step 3, the user's words fed from each item's transcript), the VAD-gated cascade
   and the reference speaker, and scores all three in the same run.

Everything lands in ``--work`` and is reused when present (delete a folder to redo that step).
Goal (turn-taking data): balanced accuracy >= 0.75 on the held-out dialogues and above the
endpointer, and above 0.6 on ami-dev's real events.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _microturn(*args: str) -> str:
    """Run ``microturn`` with ``args`` (no shell) and return its output; stops on failure."""
    exe = os.path.join(os.path.dirname(sys.executable), "microturn")
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "apitools" not in line)
    if proc.returncode:
        sys.exit(f"microturn {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}")
    return out


def _step(path: str, what: str, *args: str) -> None:
    if os.path.exists(path):
        print(f"[reuse] {path}")
        return
    started = time.perf_counter()
    _microturn(*args)
    print(f"[{time.perf_counter() - started:6.0f} s] {what}")


def _turn_taking_lines(out: str) -> str:
    lines = out.splitlines()
    start = next((i for i, x in enumerate(lines) if "shift/hold" in x), None)
    return "\n".join(lines[start:start + 7]) if start is not None else "(no shift/hold lines)\n" + out[-2000:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0], allow_abbrev=False)
    p.add_argument("--work", required=True, help="working folder (created; reused when present)")
    p.add_argument("--dialogues", type=int, default=300, help="generated dialogues for training and for held-out")
    p.add_argument("--steps", type=int, default=2400, help="training steps (turn-taking-cpu's own: 2400)")
    p.add_argument("--user-text-dropout", type=float, default=0.0,
                   help="share of training samples without the user's words (train.user_text_dropout)")
    p.add_argument("--timing", metavar="JSON",
                   help="timing model of the training dialogues only (synthesize --timing; ablations), "
                        "the held-out ones keep the default")
    p.add_argument("--interruption-share", type=float, metavar="P",
                   help="share of the training dialogues with an extra interruption (synthesize "
                        "--interruption-share; default 0.3), the held-out ones keep the default")
    p.add_argument("--ckpt-every", type=int, default=0, metavar="K",
                   help="also keep a checkpoint every K steps (train.ckpt_every), for bench/turn_taking_curve.py")
    p.add_argument("--interaction", type=int, default=0, metavar="N",
                   help="also make items from N more dialogues and run eval interaction on them")
    p.add_argument("--ami", help="a folder of RTTM-annotated recordings (ami-dev) for real events")
    p.add_argument("--brief", action="store_true",
                   help="only the calibrated held-out reading (no fixed-threshold and audio-only ones): ablations")
    p.add_argument("--kinds", default="dialogue,timed",
                   help="generated dialogue kinds, as synthesize --kinds (default: the turn-taking recipe's)")
    p.add_argument("--synthesize-flag", action="append", default=[], metavar="FLAG",
                   help="another synthesize flag for the training dialogues only (repeatable, e.g. "
                        "--synthesize-flag=--noise-snr-db=20 or --synthesize-flag=--remix=OUT_OF_INGEST)")
    args = p.parse_args(argv)
    w = args.work
    os.makedirs(w, exist_ok=True)
    n = str(args.dialogues)
    kinds = ("--kinds", args.kinds)
    video = () if "visual" in args.kinds.split(",") else ("--no-video",)
    _step(f"{w}/train_rec", f"synthesize {n} (seed 1)", "synthesize", "--generate", n, "--seed", "1", *kinds,
          "--output", f"{w}/train_rec", *(("--timing", args.timing) if args.timing else ()),
          *(("--interruption-share", str(args.interruption_share)) if args.interruption_share is not None else ()),
          *args.synthesize_flag)
    _step(f"{w}/held_rec", f"synthesize {n} (seed 2, held out)", "synthesize", "--generate", n, "--seed", "2",
          *kinds, "--output", f"{w}/held_rec")
    for name, split in (("train", "train"), ("held", "test")):
        _step(f"{w}/{name}_sh", f"shard {name}", "shard", "--input", f"{w}/{name}_rec", "--output", f"{w}/{name}_sh",
              "--window-chunks", "50", "--splits", f"{split}=1", *video)
    run = f"{w}/run_{args.steps}" + (f"_drop{args.user_text_dropout:g}" if args.user_text_dropout else "")
    if not os.path.exists(run):
        started = time.perf_counter()
        _microturn("train", "--config", "turn-taking-cpu", "--shards", f"{w}/train_sh/train/*.tar", "--output",
                   run, "--no-progress", f"train.steps={args.steps}", f"train.ckpt_every={args.ckpt_every}",
                   f"train.user_text_dropout={args.user_text_dropout}")
        print(f"[{time.perf_counter() - started:6.0f} s] train turn-taking-cpu {args.steps} steps (budget: 600 s)")
    print(f"\nheld-out generated dialogues ({n}):")
    calibrate = ("--calibrate", f"{w}/train_sh/train/*.tar")
    audio_only = (*calibrate, "--without-user-text")
    chosen = None
    readings = (("fixed threshold 0.5", ()), ("threshold chosen on the training shards", calibrate),
                ("without the user's words, threshold chosen so on the training shards", audio_only))
    for how, extra in readings[1:2] if args.brief else readings:
        print(f"[{how}]")
        out = _microturn("eval", "model", "--checkpoint", run, "--shards", f"{w}/held_sh/test/*.tar", *extra)
        print(_turn_taking_lines(out))
        if extra == calibrate:
            found = re.search(r"threshold ([0-9.]+); threshold chosen", out)
            chosen = float(found.group(1)) if found else None
    if args.ami:
        if not os.path.exists(f"{w}/ami_rec"):
            subprocess.run([sys.executable, os.path.join(HERE, "rttm_records.py"), "--input", args.ami, "--output",
                            f"{w}/ami_rec"], check=True, capture_output=True)
        _step(f"{w}/ami_sh", "shard ami-dev", "shard", "--input", f"{w}/ami_rec", "--output", f"{w}/ami_sh",
              "--window-chunks", "150", "--splits", "test=1", "--no-video")
        print("\nami-dev (reference speaker turns, every speaker in turn as the model):")
        print(_turn_taking_lines(_microturn("eval", "model", "--checkpoint", run, "--shards",
                                            f"{w}/ami_sh/test/*.tar", *audio_only)))
        # The same clips as a user's ingest makes them (embedded diarizer, no transcript): the
        # events a real corpus yields today, with the diarizer's errors in them.
        _step(f"{w}/ami_ingest", "ingest ami-dev", "ingest", "--input", os.path.join(args.ami, "*.flac"),
              "--output", f"{w}/ami_ingest", "--transcriber", "none")
        _step(f"{w}/ami_ing_sh", "shard ingested ami-dev", "shard", "--input", f"{w}/ami_ingest", "--output",
              f"{w}/ami_ing_sh", "--window-chunks", "150", "--splits", "test=1", "--no-video")
        print("\nami-dev as ingested (embedded diarizer, no words):")
        print(_turn_taking_lines(_microturn("eval", "model", "--checkpoint", run, "--shards",
                                            f"{w}/ami_ing_sh/test/*.tar", *audio_only)))
    if args.interaction:
        _interaction(w, run, str(args.interaction), chosen, kinds)
    return 0


def _interaction(w: str, run: str, n: str, threshold: float | None, kinds: tuple[str, ...]) -> None:
    if threshold is None:
        sys.exit("eval model printed no calibrated threshold; the session's speak_threshold needs one")
    _step(f"{w}/items_rec", f"synthesize {n} (seed 3, items)", "synthesize", "--generate", n, "--seed", "3",
          *kinds, "--output", f"{w}/items_rec")
    _step(f"{w}/items", "eval items", "eval", "items", "--records", f"{w}/items_rec", "--output", f"{w}/items",
          "--splits", "test=1", "--max-per-conversation", "1")
    settings = f"{run}_session.toml"
    with open(settings, "w", encoding="utf-8") as f:
        f.write(f"# chosen by eval model --calibrate on the training shards\nspeak_threshold = {threshold}\n")
    started = time.perf_counter()
    out = _microturn("eval", "interaction", "--checkpoint", run, "--items", f"{w}/items", "--output",
                     f"{run}_interaction", "--config", settings, "--no-progress")
    print(f"\n[{time.perf_counter() - started:6.0f} s] eval interaction (speak_threshold {threshold}):\n{out}")


if __name__ == "__main__":
    sys.exit(main())
