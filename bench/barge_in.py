"""Does the model react to a barge-in? Its P(a word starts) around each barge-in it was speaking at.

    python bench/barge_in.py --interaction OUT [--before 3] [--after 3]

``OUT`` is the ``--output`` of ``microturn eval interaction`` (model answers with the session's
``timeline.jsonl``, which records ``p_speak`` per chunk, and ``report.json``). For every user
interruption item that counts as a barge-in on the model (``yield_s`` set: the model was
speaking when the user barged in, or began within 0.6 s), with k0 the chunk of the barge-in's
start (the item's ``interrupt.json``), it compares the text head's ``p_speak`` in the ``--before``
chunks before k0 with the ``--after`` chunks after it (k0 + 1 ...: the chunks in which a speaker
who yields within 600 ms has stopped starting words). A model that yields drops its P(a word
starts) after the barge-in; one that talks through keeps it. Also counted: the chunks that
started a word (text not empty). Prints one line per barge-in and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

CHUNK_S = 0.2


def _timeline(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if rows and "p_speak" not in rows[0]:
        sys.exit(f"{path}: no p_speak in the timeline (a session of an older microturn); run eval interaction again")
    return rows


def barge_ins(out: str, before: int, after: int) -> list[dict]:
    """One row per barge-in on the model: item, k0, yield_s and p_speak / text per side."""
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    rows = []
    for it in report["items"].get("model", []):
        if it["task"] != "user_interruption" or it.get("yield_s") is None:
            continue
        folder = os.path.join(out, "model", it["item"])
        with open(os.path.join(folder, "interrupt.json"), encoding="utf-8") as f:
            start_s = json.load(f)[0]["timestamp"][0]
        k0 = int(start_s / CHUNK_S)
        chunks = _timeline(os.path.join(folder, "timeline.jsonl"))
        pre, post = chunks[max(0, k0 - before):k0], chunks[k0 + 1:k0 + 1 + after]
        rows.append({"item": it["item"], "k0": k0, "yield_s": it["yield_s"],
                     "p_before": [c["p_speak"] for c in pre], "p_after": [c["p_speak"] for c in post],
                     "words_before": sum(bool(c["text"]) for c in pre),
                     "words_after": sum(bool(c["text"]) for c in post),
                     "n_before": len(pre), "n_after": len(post)})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0], allow_abbrev=False)
    p.add_argument("--interaction", required=True, help="an `eval interaction --output` folder with model answers")
    p.add_argument("--before", type=int, default=3, help="chunks before the barge-in's chunk (default 3)")
    p.add_argument("--after", type=int, default=3, help="chunks after the barge-in's chunk (default 3: 600 ms)")
    args = p.parse_args(argv)
    if args.before < 1 or args.after < 1:
        p.error("--before and --after must be at least 1")
    rows = barge_ins(args.interaction, args.before, args.after)
    if not rows:
        sys.exit(f"{args.interaction}: no barge-in on the model among its user interruption items")
    for r in rows:
        print(f"{r['item']}: yield {r['yield_s']:.2f} s; p_speak before {r['p_before']} after {r['p_after']}")
    pre = [p for r in rows for p in r["p_before"]]
    post = [p for r in rows for p in r["p_after"]]
    print(f"{len(rows)} barge-ins on the model: p_speak before mean {statistics.mean(pre):.3f} "
          f"(median {statistics.median(pre):.3f}), after mean {statistics.mean(post):.3f} "
          f"(median {statistics.median(post):.3f}); chunks starting a word: "
          f"{sum(r['words_before'] for r in rows)} of {len(pre)} before, {sum(r['words_after'] for r in rows)} "
          f"of {len(post)} after")


if __name__ == "__main__":
    main()
