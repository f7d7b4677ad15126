"""``microturn eval interaction``: a trained model against baselines on the duplex evaluation items.

::

    microturn eval interaction --checkpoint RUN --items ITEMS --output DIR [--tag T]
        [--config session.toml] [--systems model,cascade,reference] [--seed S] [--json] [--no-progress]

Every item of ``ITEMS`` (``microturn eval items``' output, or any set in Full-Duplex-Bench's
layout) is answered by each system, and each system's answers become a tree
``DIR/<system>/<item's path>/`` in that layout (:mod:`microturn.pipelines.duplex.systems`):

- ``model``: the trained run streamed over the item's ``input.wav`` 200 ms at a time by the live
  session (:func:`microturn.trainer.session_cli.run_session`, one session per item, each from
  the same seed), with the user's words of the item's ``transcription.json`` fed at their start
  chunks as a streaming recogniser would give them (audio alone when the item has none), the
  item's video ``input.mp4`` (visual items) decoded to 10 fps and scaled to the patch grid the
  session expects, two frames a chunk (the session's own reader,
  :class:`microturn.trainer.session_media.VideoFrames`), and the background result of
  ``background.json`` given as ``Session.step(background_text=...)`` in the chunk it arrives in
  (``arrival_s // 0.2``, as the shard stage numbers a background word's chunk):
  ``output.wav`` is its audio, time-aligned with the input and as long as it;
  ``timeline.jsonl`` its per-chunk text, from which the scorer reads its words (each word of a
  chunk's text spans that chunk), and ``session.json`` its settings;
- ``cascade``: the VAD-gated cascade of :mod:`microturn.pipelines.duplex.cascade` (one fixed
  espeak answer 0.7 s after each end of the user's speech, cut 0.25 s after a barge-in), with
  its words in ``output.json``; it hears ``input.wav`` only (no video, no background text);
- ``reference``: the item's true second speaker, ``reference.wav`` and ``reference.json``.

Each tree is scored with the Full-Duplex-Bench scorer in the same run; the command prints one
table per task with a row per system (``--json``: one object ``{system: report}``), and writes
``DIR/report.json`` (the reports and per-item rows) and ``DIR/report.html`` (summary tables and a
timeline picture per item: :mod:`microturn.pipelines.duplex.report_html`).

``DIR`` is marked ``_microturn_stage.json`` ``{"stage": "eval-interaction"}``; a folder holding
anything else is refused, and a rerun replaces the trees and reports of the earlier run. Every
input (items, run, settings, espeak for the cascade) is checked before any item is answered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

SYSTEMS = ("model", "cascade", "reference")
STAGE = "eval-interaction"
REPORTS = ("report.json", "report.html")


def add_interaction_parser(sub) -> None:
    """The ``interaction`` subcommand of ``microturn eval``."""
    p = sub.add_parser("interaction", allow_abbrev=False,
                       help="a trained model, a VAD-gated cascade and the reference speaker on duplex items",
                       description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--checkpoint", metavar="RUN", help="the --output folder of `microturn train` "
                   "(needed when --systems holds model)")
    p.add_argument("--items", required=True, metavar="ITEMS",
                   help="the --output folder of `microturn eval items`, or a Full-Duplex-Bench item set")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for each system's answers, report.json and report.html (new, empty, or an "
                        "earlier run's)")
    p.add_argument("--tag", help="checkpoint tag, e.g. step60 (default: the run's latest)")
    p.add_argument("--config", metavar="FILE.toml", help="the session's settings (as `microturn session --config`)")
    p.add_argument("--systems", default=",".join(SYSTEMS), type=_systems,
                   help=f"comma-separated systems to answer the items (default {','.join(SYSTEMS)})")
    p.add_argument("--seed", type=int, help="the session's seed (overrides the config file)")
    p.add_argument("--json", action="store_true", help="print one JSON object {system: report}")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give distinct systems from {', '.join(SYSTEMS)}, comma-separated")
    return names


# ----------------------------------------------------------------- the output folder
def check_output(output: str, items: str) -> None:
    """``ValueError`` unless ``output`` is missing, empty, or this command's earlier output, and
    lies neither inside nor around ``items``."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file; give a folder")
    out, src = os.path.realpath(output), os.path.realpath(items)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        raise ValueError(f"--output {output} overlaps --items {items}; give a folder outside the item set")
    if not os.path.isdir(output):
        return
    from microturn.schemas.stage_marker import read_marker  # imported here: it loads Arrow

    mark = read_marker(output)
    if mark is not None and mark.get("stage") != STAGE:
        who = mark.get("stage") if isinstance(mark.get("stage"), str) else "an unknown writer"
        raise ValueError(f"--output {output} holds the output of {who}; give `eval interaction` a folder of its own")
    if mark is None and os.listdir(output):
        raise ValueError(f"--output {output} holds files `eval interaction` did not write "
                         f"({', '.join(sorted(os.listdir(output))[:3])}); give a new or empty folder")


def claim_output(output: str, record: dict) -> None:
    """Mark ``output`` as this command's and remove an earlier run's trees and reports."""
    os.makedirs(output, exist_ok=True)
    for name in SYSTEMS:
        shutil.rmtree(os.path.join(output, name), ignore_errors=True)
    for name in REPORTS:
        if os.path.exists(os.path.join(output, name)):
            os.remove(os.path.join(output, name))
    from microturn.schemas.stage_marker import MARKER

    _write_json(os.path.join(output, MARKER), {"stage": STAGE, "layout_version": 1, **record})


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------- the systems
class ItemSession:
    """A loaded session as ``run_session`` drives it, handing an item's background results to
    :meth:`Session.step` (``background_text=``) in the chunks they arrive in; everything else is
    the session's own."""

    def __init__(self, session, background: dict[int, str]) -> None:
        self._session = session
        self._background = background

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def step(self, user_audio_N, video_frames=None, user_text: str | None = None):
        """:meth:`Session.step`, with ``background_text`` in a chunk where a result arrives."""
        text = self._background.get(self._session.chunk)
        if text is None:
            return self._session.step(user_audio_N, video_frames, user_text)
        return self._session.step(user_audio_N, video_frames, user_text, background_text=text)


def background_texts(folder: str) -> dict[int, str]:
    """Chunk → background text of the item in ``folder`` (its ``background.json``: the result
    arrives in chunk ``arrival_s // 0.2``); empty for an item without one. ``ValueError`` naming
    the file for a malformed one."""
    from microturn.pipelines.duplex.layout_behaviours import read_annotation
    from microturn.schemas.sample import CHUNK_MS

    path = os.path.join(folder, "background.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None
    figures = read_annotation("background_result", data, path)
    if figures["arrival_s"] < 0:
        raise ValueError(f"{path}: arrival_s is {figures['arrival_s']} s; an arrival is a time >= 0 in the item")
    return {round(figures["arrival_s"] * 1000) // CHUNK_MS: figures["result"]} if figures["result"].strip() else {}


def takes_background_text(session) -> bool:
    """Whether this tree's ``Session.step`` has the ``background_text`` keyword."""
    import inspect

    return "background_text" in inspect.signature(type(session).step).parameters


class ModelRunner:
    """The trained run as a system: one live session per item (``run_session``'s chunk loop), all
    items streamed through one loaded model, reset between items, with the item's video and
    background results (:class:`ItemSession`)."""

    def __init__(self, checkpoint: str, *, tag: str | None, config) -> None:
        from microturn.trainer.session import Session
        from microturn.trainer.trained_run import load_trained_run

        self.checkpoint = checkpoint
        # Load once, now: a bad run, tag or setting fails before any item is answered, and the
        # weights are read once for all items (run_session resets the session per item).
        self.session = Session(load_trained_run(checkpoint, tag=tag), config)
        self.max_time = self.session.model_cfg.max_time

    def answer(self, item, dest: str, samples: int) -> None:
        from microturn.pipelines.duplex.audio import read_mono_N
        from microturn.pipelines.duplex.systems import write_answer
        from microturn.trainer.session_cli import run_session

        with tempfile.TemporaryDirectory(prefix="microturn-eval-session-") as tmp:
            out = os.path.join(tmp, "session")
            video = os.path.join(dest, "input.mp4")
            report = run_session(self.checkpoint, os.path.join(dest, "input.wav"), out,
                                 session=ItemSession(self.session, background_texts(dest)),
                                 video=video if os.path.isfile(video) else None,
                                 user_text=_user_words_file(dest, tmp), progress=False)
            if report.interrupted:  # the session stops its stream at Ctrl-C; the command stops too
                raise KeyboardInterrupt
            # model.wav is whole chunks long and already time-aligned with the input (the
            # vocoder's delay removed): cut to the input's length.
            write_answer(item, dest, read_mono_N(os.path.join(out, "model.wav")), samples=samples)
            for name in ("timeline.jsonl", "session.json"):
                shutil.copyfile(os.path.join(out, name), os.path.join(dest, name))


def user_words(folder: str) -> list[dict] | None:
    """The words of the item's ``transcription.json`` (the user's words, as a streaming recogniser
    would give them) as the session's words (``text``, ``start_ms``); None when the item has none
    (Full-Duplex-Bench's own items may not), and the model then hears the audio alone.
    ``ValueError`` naming the file for a malformed one or a start that is not a time >= 0."""
    from microturn.pipelines.duplex.systems import read_fdb_words

    path = os.path.join(folder, "transcription.json")
    if not os.path.isfile(path):
        return None
    words = []
    for text, start, _ in read_fdb_words(path):
        if not (math.isfinite(start) and start >= 0):
            raise ValueError(f"{path}: word {text!r} starts at {start} s; starts are seconds >= 0")
        if text:
            words.append({"text": text, "start_ms": round(start * 1000)})
    return words


def _user_words_file(dest: str, tmp: str) -> str | None:
    """:func:`user_words` of the item copied to ``dest``, written to ``tmp`` for the session."""
    words = user_words(dest)
    if words is None:
        return None
    out = os.path.join(tmp, "user_words.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(words, f)
    return out


def _cascade_answer(item, dest: str, samples: int) -> None:
    from microturn.pipelines.duplex.cascade import cascade_output
    from microturn.pipelines.duplex.systems import read_mono_N, write_answer

    out = cascade_output(read_mono_N(os.path.join(dest, "input.wav")))
    write_answer(item, dest, out.wave_N, samples=samples, words=out.words)


def _reference_answer(item, dest: str, samples: int) -> None:
    from microturn.pipelines.duplex.systems import write_reference

    write_reference(item, dest, samples)


def _check_inputs(args: argparse.Namespace, items: list) -> tuple[dict[str, Callable], dict[str, int]]:
    """Every check before work: each system's answerer and each item's input length in samples,
    or ``ValueError`` naming the problem."""
    from microturn.pipelines.duplex.audio import SAMPLE_RATE
    from microturn.pipelines.duplex.systems import item_input_N

    samples = {item.rel: int(item_input_N(item).size) for item in items}  # every input readable
    answerers: dict[str, Callable] = {}
    if "reference" in args.systems:
        lacking = [i.rel for i in items if not os.path.isfile(os.path.join(i.path, "reference.wav"))]
        if lacking:
            raise ValueError(f"{len(lacking)} of {len(items)} items have no reference.wav (first: {lacking[0]}); "
                             "the reference system needs the item's second speaker: leave it out of --systems")
        answerers["reference"] = _reference_answer
    if "cascade" in args.systems:
        from microturn.pipelines.duplex.cascade import spoken_response

        spoken_response()  # espeak-ng speaks the answer now, or fails before any item
        answerers["cascade"] = _cascade_answer
    if "model" in args.systems:
        if not args.checkpoint:
            raise ValueError("--systems holds model: give --checkpoint RUN (or leave model out of --systems)")
        from microturn.trainer.session_cli import session_config

        runner = ModelRunner(args.checkpoint, tag=args.tag, config=session_config(args.config, seed=args.seed))
        chunk = SAMPLE_RATE // 5
        background = [i.rel for i in items if background_texts(i.path)]  # malformed files fail now
        if background and not takes_background_text(runner.session):
            raise ValueError(f"{len(background)} item(s) hold a background result (first: {background[0]}) but this "
                             "tree's Session.step takes no background_text, so the model could not receive it; "
                             "update microturn, or give --items a folder without background_result items")
        for item in items:
            user_words(item.path)  # a malformed transcript fails now, not after other items were answered
            chunks = -(-samples[item.rel] // chunk)
            if chunks > runner.max_time:
                raise ValueError(f"item {item.rel}: {chunks} chunks; the model takes at most max_time="
                                 f"{runner.max_time} chunks: make shorter items")
        answerers["model"] = runner.answer
    elif args.checkpoint or args.config or args.tag or args.seed is not None:
        raise ValueError("--checkpoint, --tag, --config and --seed set the model; --systems leaves it out")
    return {name: answerers[name] for name in args.systems}, samples


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="answering", unit="item", dynamic_ncols=True, file=sys.stderr,
                disable=not enabled)


def answer_items(args: argparse.Namespace, items: list, answerers: dict[str, Callable],
                 samples: dict[str, int]) -> None:
    """Each system answers each item into ``DIR/<system>/<item's path>``."""
    from microturn.pipelines.duplex.systems import prepare_item

    with _progress(len(items) * len(answerers), args.progress) as bar:
        for system, answer in answerers.items():
            for item in items:
                bar.set_postfix_str(f"{system} {item.rel}"[-40:], refresh=False)
                dest = os.path.join(args.output, system, item.rel)
                prepare_item(item, dest)
                answer(item, dest, samples[item.rel])
                bar.update(1)


# ----------------------------------------------------------------- scores and tables
def score_systems(output: str, systems: Sequence[str]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Each system's tree scored by the Full-Duplex-Bench scorer: ``{system: report}`` and
    ``{system: per-item rows}``."""
    from microturn.pipelines.duplex.score import score_items

    reports, rows = {}, {}
    for system in systems:
        reports[system], rows[system] = score_items(os.path.join(output, system))
    return reports, rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)


def render_tables(reports: dict[str, dict]) -> str:
    """One table per task present in any report, one row per system."""
    from microturn.pipelines.duplex.report_html import TASK_METRICS, vap_rows

    blocks = []
    for task, metrics in TASK_METRICS.items():
        present = {s: r[task] for s, r in reports.items() if isinstance(r.get(task), dict)}
        if not present:
            continue
        head = f"{'system':<10} {'n':>4} " + " ".join(f"{m:>18}" for m in metrics) + "  words from"
        lines = [task, head]
        for system, figures in present.items():
            sources = figures.get("words")
            sources = ", ".join(f"{k} {v}" for k, v in sources.items()) if isinstance(sources, dict) else "-"
            lines.append(f"{system:<10} {_cell(figures.get('n')):>4} "
                         + " ".join(f"{_cell(figures.get(m)):>18}" for m in metrics) + f"  {sources}")
        blocks.append("\n".join(lines))
    vap = vap_rows(reports)
    if vap:
        lines = ["vap", f"{'system':<10} {'category':<23} {'positives':>14} {'negatives':>14} "
                        f"{'balanced_accuracy':>18} {'auc':>6}"]
        for system, category, positives, negatives, accuracy, area in vap:
            lines.append(f"{system:<10} {category:<23} {positives:>14} {negatives:>14} {_cell(accuracy):>18} "
                         f"{_cell(area):>6}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no task of any system has a score"


def run_interaction(args: argparse.Namespace) -> int:
    """The command (the module notes); ``ValueError`` for bad input before any work."""
    from microturn.cli.json_stdout import stdout_to_stderr
    from microturn.pipelines.duplex.report_html import write_report
    from microturn.pipelines.duplex.systems import find_items

    items = find_items(args.items)
    check_output(args.output, args.items)
    # From here on libraries may print (DeepSpeed notes its accelerator when the checkpoint's
    # model is built in _check_inputs): with --json, standard output keeps only the object.
    with stdout_to_stderr(args.json):
        answerers, samples = _check_inputs(args, items)
        claim_output(args.output, {"items": os.path.abspath(args.items), "systems": list(args.systems),
                                   "checkpoint": args.checkpoint and os.path.abspath(args.checkpoint),
                                   "tag": args.tag, "seed": args.seed})
        answer_items(args, items, answerers, samples)
        reports, rows = score_systems(args.output, args.systems)
    _write_json(os.path.join(args.output, "report.json"), {"reports": reports, "items": rows})
    write_report(args.output, list(args.systems), [i.rel for i in items], reports, rows)
    if args.json:
        print(json.dumps(reports, indent=1, sort_keys=True))
    else:
        print(render_tables(reports))
        print(f"wrote {os.path.join(args.output, 'report.json')} and {os.path.join(args.output, 'report.html')}")
    return 0
