"""The command line of ``microturn session``: its parser and ``main``.

Kept apart from :mod:`microturn.trainer.session_cli` (which runs the session and re-exports
these), so that ``--help`` and a usage error answer without loading numpy or torch.
"""

from __future__ import annotations

import argparse
import sys

from microturn.cli.logs import add_level_flag, setup_from_argv

KERNELS = ("deepspeed", "gemv", "grouped", "auto")
# One torch thread by default: a step runs GEMMs of a few rows, where a second thread costs more
# than it saves. 50 steps of tiny-cpu on a loaded 2-core machine: p50 82 ms with 1 thread, 564 ms
# with 2 (p95 107 ms against 5063 ms).
DEFAULT_THREADS = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="microturn session", allow_abbrev=False,
        description="Stream a recording into a trained model 200 ms at a time, as a live client would, and write "
                    "the model's audio, the two-sided conversation and a per-chunk timeline.",
        epilog="conversation.wav is stereo 16 kHz, the user left and the model right, time-aligned as in the "
               "training data: the model's chunk k beside the user's chunk k, with the vocoder's delay (50 ms for "
               "griffin-lim) removed. Bad input exits with status 2 and one line naming the problem.")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="the --output folder of `microturn train`")
    p.add_argument("--user-audio", required=True, metavar="FILE",
                   help="the user's recording (any file with an audio stream ffmpeg reads; mono 16 kHz is taken)")
    p.add_argument("--video", metavar="FILE", help="the user's video, from the same start as the audio: 10 fps, "
                   "scaled to the shard stage's patch grid")
    p.add_argument("--user-text", metavar="WORDS.json",
                   help="the user's transcript as the project's words JSON (a list of {\"text\", \"start_ms\"} "
                        "objects, as the words table's rows; or a sample's words.json); each word is fed in the "
                        "chunk where it starts")
    p.add_argument("--background-text", metavar="RESULTS.json",
                   help="results a background model delivers to the model, as a words JSON (a list of {\"text\", "
                        "\"start_ms\"} objects, start_ms the arrival; or a sample's words.json, whose \"background\" "
                        "list is read); each result is queued in the chunk where it arrives and fed over the next "
                        "chunks, max_background_per_chunk tokens a chunk")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for model.wav, conversation.wav, timeline.jsonl and session.json (new, empty, "
                        "or an earlier session's)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="SessionConfig settings, with [text] and [audio] tables for sampling; unknown keys are errors")
    p.add_argument("--tag", help="checkpoint tag, e.g. step60 (default: the run's latest)")
    p.add_argument("--moe-kernel", choices=KERNELS, help="MoE decode path (overrides the config file)")
    p.add_argument("--seed", type=int, help="seed of every draw (overrides the config file)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (overrides the config file)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch threads (default {DEFAULT_THREADS}: a step's GEMMs are too small to share)")
    p.add_argument("--patch-budget", type=int, default=None,
                   help="video patches per chunk at most (default: the shard stage's 48)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_level_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``microturn session``: its exit status (2 for bad input, 1 when the output cannot be
    written, 130 when interrupted)."""
    argv = setup_from_argv("microturn session", argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # unknown flags: exit 2 naming them
    from microturn.trainer.session_cli import run_session, session_config

    try:
        config = session_config(args.config, moe_kernel=args.moe_kernel, seed=args.seed, device=args.device)
        report = run_session(args.checkpoint, args.user_audio, args.output, video=args.video,
                             user_text=args.user_text, background_text=args.background_text, config=config,
                             tag=args.tag, patch_budget=args.patch_budget,
                             threads=args.threads, progress=args.progress)
    except ValueError as exc:
        print(f"microturn session: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the output (the inputs' faults are ValueErrors above)
        print(f"microturn session: error: cannot write {exc.filename or args.output}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(report.summary())
    return 130 if report.interrupted else 0
