"""``microturn eval``: score an ingest output against references.

- ``eval diarization --reference RTTM_OR_DIR --hypothesis OUT [--collar S]``: DER and JER.
- ``eval model --checkpoint RUN --shards GLOB``: held-out loss per head of a trained model, and
  its shift/hold balanced accuracy and AUC at mutual silences after user speech beside a
  user-only endpointer's (:mod:`microturn.trainer.turn_taking_eval`).
- ``eval duplex ITEMS_DIR [--json]``: Full-Duplex-Bench v1 / v1.5 metrics of a folder of items
  (:mod:`microturn.cli.eval_duplex`).
- ``eval interaction --checkpoint RUN --items ITEMS --output DIR``: a trained model, a VAD-gated
  cascade and the reference speaker answer duplex evaluation items, scored side by side
  (:mod:`microturn.cli.eval_interaction`).
- ``eval words --reference STM_OR_DIR --hypothesis OUT``: share of words inside their reference
  segment, and the median boundary error where word-level references exist.
- ``eval items --records OUT [OUT ...] --output ITEMS``: Full-Duplex-Bench-style evaluation items
  (user stream, true second stream, event annotations) from held-out conversation records
  (:mod:`microturn.cli.eval_items`).

Reference files name their recordings (RTTM/STM file ids); conversations are matched to them by
the stem of their source file (``calls/abc.mp4`` ↔ ``abc``). When the reference holds a single
recording and the output a single conversation, the two are paired whatever their names.

Beam, Arrow and the scorers are imported only when a subcommand runs, so ``--help`` answers at
once. Every path is checked before any work: a missing reference, a hypothesis that is not an output
directory holding a ``conversations`` table, or a missing ``--word-reference`` is a one-line error
with exit status 2 (never a score of an empty output with status 0). Names read from references
and tables are printed with control characters escaped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict

from microturn.cli.eval_duplex import add_duplex_parser, run_duplex
from microturn.cli.eval_interaction import add_interaction_parser, run_interaction
from microturn.cli.eval_items import add_items_parser, run_items
from microturn.cli.json_stdout import stdout_to_stderr
from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.cli.usage import unknown

PROG = "microturn eval"


def visible(text: str) -> str:
    """:func:`microturn.schemas.text.visible` (imported when first needed: it loads Arrow)."""
    from microturn.schemas.text import visible as escape

    return escape(text)


def _is_url(path: str) -> bool:
    return "://" in path


def _collar(text: str) -> float:
    """A finite, non-negative number of seconds (``inf`` and ``nan`` parse as floats but mean nothing here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def check_reference(flag: str, path: str) -> None:
    """``ValueError`` unless ``path`` (a reference file or folder of them) exists."""
    from apache_beam.io.filesystems import FileSystems

    if _is_url(path):
        if not FileSystems.exists(path):
            raise ValueError(f"{flag} {path} does not exist")
    elif not os.path.exists(path):
        raise ValueError(f"{flag} {path} does not exist; give a reference file or a folder of them")


def check_hypothesis(path: str) -> None:
    """``ValueError`` unless ``path`` is an output directory with a ``conversations`` table."""
    from apache_beam.io.filesystems import FileSystems

    if not _is_url(path) and not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise ValueError(f"--hypothesis {path} {what}; give the --output directory of `microturn ingest`")
    pattern = FileSystems.join(path, "conversations", "*.parquet")
    if not FileSystems.match([pattern])[0].metadata_list:
        raise ValueError(f"--hypothesis {path} holds no conversations table ({pattern} matches nothing); "
                         "give the --output directory of `microturn ingest`")


def _stems(out: str) -> dict[str, str]:
    """conversation_id → stem of its source file name."""
    from microturn.pipelines.tables import read_table

    return {c["conversation_id"]: os.path.splitext(os.path.basename(c["source_uri"] or ""))[0]
            for c in read_table(out, "conversations").to_pylist()}


def _pair(by_stem: dict[str, list], reference_ids: set[str]) -> dict[str, list]:
    if set(by_stem) & reference_ids or len(by_stem) != 1 or len(reference_ids) != 1:
        return by_stem
    (only,) = by_stem.values()
    (ref,) = reference_ids
    print(f"note: pairing the only conversation with the only reference recording {visible(repr(ref))}")
    return {ref: only}


def _hypothesis(out: str, table: str, fields: tuple[str, ...]) -> dict[str, list]:
    from microturn.pipelines.tables import read_table

    stems = _stems(out)
    rows: dict[str, list] = defaultdict(list)
    for r in read_table(out, table).to_pylist():
        cid: str = r["conversation_id"]
        rows[stems.get(cid, cid)].append(tuple(r[f] for f in fields))
    for stem in stems.values():
        rows.setdefault(stem, [])
    return dict(rows)


def _diarization(args: argparse.Namespace) -> int:
    from microturn.pipelines.eval_diarization import evaluate_diarization, read_rttm

    check_reference("--reference", args.reference)
    check_hypothesis(args.hypothesis)
    if args.uem:
        check_reference("--uem", args.uem)
    refs = read_rttm(args.reference)
    hyp = _pair(_hypothesis(args.hypothesis, "segments", ("speaker", "start_ms", "end_ms")), set(refs))
    report = evaluate_diarization(refs, hyp, collar_s=args.collar, uem=args.uem)
    scored = "UEM" if args.uem else "first to last turn"
    print(f"{'file':<32} {'DER':>7} {'JER':>7} {'miss':>7} {'FA':>7} {'conf':>7} {'spk ref':>7} {'hyp':>4} "
          f"{'overlap ref':>11} {'hyp':>6}  (collar {args.collar} s, scored: {scored})")
    for f in [*report.files, report.total]:
        ref = f.reference_s or 1.0
        print(f"{visible(f.uri)[:32]:<32} {f.der:>7.2%} {f.jer:>7.2%} {f.missed_s / ref:>7.2%} "
              f"{f.false_alarm_s / ref:>7.2%} {f.confusion_s / ref:>7.2%} {f.reference_speakers:>7} "
              f"{f.hypothesis_speakers:>4} {f.reference_overlap:>11.1%} {f.hypothesis_overlap:>6.1%}")
    wrong = [f for f in report.files if f.reference_speakers != f.hypothesis_speakers]
    print(f"speaker count right on {len(report.files) - len(wrong)} of {len(report.files)} file(s)")
    return 0


def _words(args: argparse.Namespace) -> int:
    from microturn.pipelines import eval_words

    check_reference("--reference", args.reference)
    check_hypothesis(args.hypothesis)
    if args.word_reference:
        check_reference("--word-reference", args.word_reference)
    refs = eval_words.read_stm(args.reference)
    hyp = _pair(_hypothesis(args.hypothesis, "words", ("text", "start_ms", "end_ms")), set(refs))
    word_refs = None
    if args.word_reference:
        paths = ([os.path.join(args.word_reference, n) for n in sorted(os.listdir(args.word_reference))
                  if n.endswith(".json")] if os.path.isdir(args.word_reference) else [args.word_reference])
        word_refs = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
    report = eval_words.evaluate_words(args.reference, hyp, word_refs, collar_ms=args.collar_ms)
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    ms = lambda v: "n/a" if v is None else f"{v:.0f} ms"  # noqa: E731
    print(f"{'file':<32} {'words':>6} {'inside':>8} {'coverage':>9} {'median |boundary|':>18}")
    for name, f in [*sorted(report.files.items()), ("TOTAL", report.total)]:
        print(f"{visible(name)[:32]:<32} {f.n_hypothesis:>6} {pct(f.inside_share):>8} {pct(f.coverage):>9} "
              f"{ms(f.median_abs_boundary_ms):>18}")
    if report.missing_hypothesis:
        print(f"note: no words for reference recording(s) {visible(str(report.missing_hypothesis))}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from microturn.trainer.data import glob_shards
    from microturn.trainer.evaluate import evaluate, render

    shards = [s for pattern in args.shards for s in glob_shards(pattern)]
    calibration = [s for pattern in args.calibrate or () for s in glob_shards(pattern)]
    with stdout_to_stderr(args.json):
        result = evaluate(args.checkpoint, shards, tag=args.tag, max_batches=args.max_batches,
                          calibration_shards=calibration or None, user_text=not args.without_user_text)
    print(json.dumps(result, sort_keys=True) if args.json else render(result, args.checkpoint))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = setup_from_argv(PROG, argv)
    # No abbreviations: `--hyp` must not silently mean `--hypothesis`, nor a typo of a future flag.
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").partition("\n")[0],
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("diarization", help="DER and JER against RTTM references", allow_abbrev=False)
    d.add_argument("--reference", required=True, help="an RTTM file or a folder of them")
    d.add_argument("--hypothesis", required=True, help="an ingest output directory (OUT)")
    d.add_argument("--collar", type=_collar, default=0.0,
                   help="total forgiveness collar in seconds around reference boundaries (default 0)")
    d.add_argument("--uem", metavar="UEM_OR_DIR",
                   help="scored regions (a UEM file or a folder of *.uem); every reference file needs one "
                        "(default: each file from its first to its last turn)")
    w = sub.add_parser("words", help="word timing against STM references", allow_abbrev=False)
    w.add_argument("--reference", required=True, help="an STM file or a folder of them")
    w.add_argument("--hypothesis", required=True, help="an ingest output directory (OUT)")
    w.add_argument("--word-reference", metavar="JSON_OR_DIR",
                   help="word-level references (whisperx-style JSON named by recording id) for "
                        "the median boundary error")
    w.add_argument("--collar-ms", type=int, default=0,
                   help="widen reference segments by this many ms on each side (default 0)")
    m = sub.add_parser("model", help="held-out loss per head and shift/hold scores of a trained run",
                       allow_abbrev=False)
    m.add_argument("--checkpoint", required=True, metavar="RUN", help="the --output directory of `microturn train`")
    m.add_argument("--shards", required=True, action="append", help="held-out shard glob or URL; repeatable")
    m.add_argument("--calibrate", action="append", metavar="GLOB",
                   help="other shards (e.g. the training split) on whose shift/hold events the decision threshold "
                        "is chosen, as VAP does on validation data (default: a fixed P >= 0.5); repeatable")
    m.add_argument("--without-user-text", action="store_true",
                   help="read every sample without the user's words, as a session without a streaming recogniser "
                        "hears the user (also the --calibrate shards): the model's turn-taking from audio alone")
    m.add_argument("--tag", help="checkpoint tag (default: the latest)")
    m.add_argument("--json", action="store_true", help="print the result as one JSON object (losses, turn_taking)")
    m.add_argument("--max-batches", type=int, help="stop after this many batches")
    add_duplex_parser(sub)
    add_interaction_parser(sub)
    add_items_parser(sub)
    add_level_flag(p)
    for command in sub.choices.values():
        add_level_flag(command)
    if argv and not argv[0].startswith("-") and argv[0] not in sub.choices:
        print(unknown(PROG, "subcommand", argv[0], sub.choices), file=sys.stderr)
        return 2
    args = p.parse_args(argv)
    try:
        if args.what == "model":
            return _model(args)
        if args.what == "duplex":
            return run_duplex(args)
        if args.what == "interaction":
            return run_interaction(args)
        if args.what == "items":
            return run_items(args)
        return _diarization(args) if args.what == "diarization" else _words(args)
    except (ValueError, OSError) as exc:
        # OSError: a reference that cannot be read (FileNotFoundError, permissions), one line.
        print(f"{PROG}: error: {visible(str(exc))}", file=sys.stderr)
        return 2
