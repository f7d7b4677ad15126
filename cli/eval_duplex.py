"""``microturn eval duplex ITEMS_DIR``: Full-Duplex-Bench v1 / v1.5 metrics of a folder of items.

Reads Full-Duplex-Bench's item layout as it is (``input.wav``, ``output.wav``, ``output.json``
and ``turn_taking.json`` / ``pause.json`` / ``interrupt.json``; or a stereo ``conversation.wav``,
``timeline.jsonl`` words and ``backchannel.json``: :mod:`microturn.pipelines.duplex.layout`; and
microturn's behaviour tasks, ``visual_cue.json`` / ``repetition.json`` / ``background.json`` /
``simultaneous.json``: :mod:`microturn.pipelines.duplex.score_behaviours`) and prints a row per
task, or with ``--json`` the one report object of :mod:`microturn.pipelines.duplex.score`.
``--per-item FILE.jsonl`` writes each item's row (its TOR, latency, word source, backchannels and
v1.5 intervals; the behaviour tasks' per-cue, per-repetition and per-sentence figures).
LLM-judged scores are not computed.
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["add_duplex_parser", "render_report", "run_duplex"]

# Figures per task, in the table's column order (the report's keys).
_COLUMNS = {"smooth_turn_taking": ("tor", "latency_s", "response_latency_s"),
            "pause_handling": ("tor",),
            "user_interruption": ("tor", "latency_s", "stop_latency_s", "response_latency_s", "yield_n", "yield_rate",
                          "yield_s"),
            "backchannel": ("tor", "frequency", "jsd")}


def add_duplex_parser(sub) -> None:
    """The ``duplex`` subcommand on ``microturn eval``'s subparsers."""
    from microturn.pipelines.duplex.tasks import TASKS  # the names alone: the scorer loads numpy and Arrow

    d = sub.add_parser("duplex", help="Full-Duplex-Bench metrics (TOR, latency, backchannel JSD, "
                       "v1.5 stop/response latency) of a folder of items", allow_abbrev=False)
    d.add_argument("items", metavar="ITEMS_DIR",
                   help="a folder of items in Full-Duplex-Bench's layout (searched recursively)")
    d.add_argument("--json", action="store_true", help="print the report as one JSON object")
    d.add_argument("--per-item", metavar="FILE.jsonl", help="write one JSON line per item (how each figure came about)")
    d.add_argument("--task", choices=TASKS,
                   help="score only this task; items without an annotation file are taken as it")
    d.add_argument("--backchannel-reference", metavar="JSON",
                   help="reference backchannel distributions {item folder name: [p...]} "
                        "(Full-Duplex-Bench's icc_gt_distribution.json) for items without backchannel.json")


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_report(report: dict) -> str:
    """The report as a readable table: a row per task, its figures, and where its words came from."""
    from microturn.pipelines.duplex.score_behaviours import BEHAVIOUR_METRICS

    known = {**_COLUMNS, **BEHAVIOUR_METRICS}
    lines = []
    for task, columns in known.items():
        section = report.get(task)
        if section is None:
            continue
        figures = "  ".join(f"{c}={_cell(section.get(c))}" for c in columns)
        words = ", ".join(f"{k}: {v}" for k, v in section["words"].items())
        lines.append(f"{task:<20} n={section['n']:<4} {figures}  (words: {words})")
    for key, section in report.items():
        if key not in known:
            lines.append(f"{key:<20} {json.dumps(section, sort_keys=True)}")
    return "\n".join(lines)


def run_duplex(args: argparse.Namespace) -> int:
    """Score ``args.items``; ``ValueError`` (one line, exit 2 in ``microturn eval``) for bad input."""
    from microturn.pipelines.duplex.score import score_items

    if args.backchannel_reference and not os.path.isfile(args.backchannel_reference):
        raise ValueError(f"--backchannel-reference {args.backchannel_reference} does not exist or is not a file")
    if args.per_item and os.path.isdir(args.per_item):
        raise ValueError(f"--per-item {args.per_item} is a folder; give a file name (FILE.jsonl)")
    report, rows = score_items(args.items, task=args.task, backchannel_reference=args.backchannel_reference)
    if args.per_item:
        with open(args.per_item, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    print(json.dumps(report, sort_keys=True) if args.json else render_report(report))
    return 0
