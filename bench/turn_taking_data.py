"""Turn-taking in the data: pauses and gaps of generated dialogues beside real conversations.

    python bench/turn_taking_data.py [--generate 300] [--seed 1] [--ami DIR] [--fit-real]

For each source, the mutual silences of at least 200 ms that follow speech
(:func:`microturn.synth.silences.mutual_silences`: the moments where a duplex model must decide
whether the speaker goes on or the other starts), split into

- pauses (holds): the same speaker speaks before and after the silence;
- gaps (shifts): another speaker starts after it;

with their counts, medians and share, the pauses per minute of speech, and the AUC of silence
length alone for shift against hold (0.5: length does not tell them apart; the synthetic data
must stay within 0.35-0.65 so that a model has to use what is said and how).

Sources:

1. generated: ``--generate N --seed S`` dialogues of the bundled template generator, spoken with
   espeak-ng and laid out exactly as ``microturn synthesize --generate N --seed S`` does (same
   scripts, same per-dialogue generator, default timing model, or ``--fit-real``: the model
   :func:`microturn.synth.timing_fit.fit` learns from the real sources below); activity is the
   placed words' spans.
2. the pyannote sample call (real two-person phone call): reference RTTM turns, and the STM
   transcript's words (spread evenly over each utterance by the reference reader, so only
   silences between utterances are visible).
3. ami-dev (``/work/shared/data/ami-dev``, eleven 30 s AMI meeting clips): reference RTTM turns
   as segments (no words).
4. ``--records OUT`` (repeatable): the ``segments`` and ``words`` tables of a ``microturn ingest``
   output; a speaker's words give the activity where they exist, its segments otherwise.

Also prints, for the generated dialogues, how the silences sit in the text: the holds whose
last word before the silence ends in a comma or is a continuation word (or ends a sentence), and
the shifts whose last word ends in ".", "?" or "!" (or that start or end a backchannel).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from microturn.schemas.turns import Turn
from microturn.synth.engine import dialogue_rng, speak_dialogue
from microturn.synth.layout import CONTINUATION_WORDS, lay_out
from microturn.synth.silences import Silence, auc, merge, mutual_silences
from microturn.synth.templates import generate
from microturn.synth.timing import DEFAULT_TIMING, TimingModel
from microturn.synth.timing_fit import fit
from microturn.synth.tts import get_tts

AMI_DIR = Path("/work/shared/data/ami-dev")


def generated(n: int, seed: int, timing: TimingModel):
    """(silences, speech_ms, last word before each silence) over ``n`` generated dialogues."""
    tts = get_tts("espeak-ng")
    silences: list[Silence] = []
    last_words: list[str] = []
    speech_ms = 0
    # Conversations and time-aware requests only: a visual request's silent wait for its cue and
    # an interpreter's planned overlap are not turn-taking, and would blur what this measures.
    for d in generate(n, seed=seed, kinds=("dialogue", "timed")):
        spoken, responses = speak_dialogue(d, tts)
        layout = lay_out(d, spoken, responses, timing, dialogue_rng(seed, d.sha256()))
        activity: dict[str, list[tuple[int, int]]] = defaultdict(list)
        ends: dict[int, str] = {}
        backchannel_starts = set()
        for t in layout.turns:
            for w, s, e in t.words:
                activity[t.speaker].append((s, e))
                ends[e] = w
                if t.act == "backchannel":
                    ends[e] = "<backchannel>"
                    backchannel_starts.add(s)
        speech_ms += sum(e - s for ivs in activity.values() for s, e in merge(ivs))
        found = mutual_silences(activity)
        silences += found
        last_words += ["<to backchannel>" if s.end_ms in backchannel_starts else ends.get(s.start_ms, "")
                       for s in found]
    return silences, speech_ms, last_words


def read_rttm_turns(path: Path) -> list[Turn]:
    """SPEAKER lines of an RTTM file as turns (ms)."""
    turns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            start = round(float(f[3]) * 1000)
            turns.append(Turn(f[7], start, start + round(float(f[4]) * 1000), 0))
    return turns


def ingested(out_dir: str) -> tuple[dict[str, list[Turn]], dict[str, list[tuple]]]:
    """Turns and words per conversation of a ``microturn ingest`` output."""
    from microturn.pipelines.tables import read_table

    turns: dict[str, list[Turn]] = defaultdict(list)
    for r in read_table(out_dir, "segments").to_pylist():
        turns[r["conversation_id"]].append(Turn(r["speaker"], r["start_ms"], r["end_ms"], r["channel"] or 0))
    words: dict[str, list[tuple]] = defaultdict(list)
    for r in read_table(out_dir, "words").to_pylist():
        if r["speaker"] is not None:
            words[r["conversation_id"]].append((r["speaker"], r["text"], r["start_ms"], r["end_ms"]))
    return dict(turns), dict(words)


def real_sources(ami_dir: Path, records: list[str]) -> dict[str, tuple[dict[str, list[Turn]], dict[str, list[tuple]]]]:
    """source name -> (turns per conversation, words per conversation)."""
    out = {}
    for out_dir in records:
        out[f"ingested {out_dir}"] = ingested(out_dir)
    from microturn.testing.sample_call import sample_call

    call = sample_call()
    out["sample call"] = ({"sample": list(call.turns)}, {"sample": list(call.words)})
    if ami_dir.is_dir():
        clips = {p.stem: read_rttm_turns(p) for p in sorted(ami_dir.glob("*.rttm"))}
        out["ami-dev"] = (clips, {})
    return out


def real_silences(turns: dict[str, list[Turn]], words: dict[str, list[tuple]]):
    silences: list[Silence] = []
    speech_ms = 0
    for cid, conv_turns in turns.items():
        activity: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for spk, _, s, e in words.get(cid, []):
            activity[spk].append((s, e))
        worded = set(activity)
        for t in conv_turns:
            if t.speaker not in worded:
                activity[t.speaker].append((t.start_ms, t.end_ms))
        speech_ms += sum(e - s for ivs in activity.values() for s, e in merge(ivs))
        silences += mutual_silences(activity)
    return silences, speech_ms


def rows_of(turns: dict[str, list[Turn]], words: dict[str, list[tuple]]):
    seg_rows = [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms, "end_ms": t.end_ms,
                 "channel": t.channel} for cid, ts in turns.items() for t in ts]
    word_rows = [{"conversation_id": cid, "speaker": spk, "text": text, "start_ms": s, "end_ms": e}
                 for cid, ws in words.items() for spk, text, s, e in ws]
    return seg_rows, word_rows


def summary(name: str, silences: list[Silence], speech_ms: int) -> dict:
    holds = [s.duration_ms for s in silences if not s.is_shift]
    shifts = [s.duration_ms for s in silences if s.is_shift]
    row = {"source": name, "pauses": len(holds), "pause_median_ms": statistics.median(holds) if holds else None,
           "gaps": len(shifts), "gap_median_ms": statistics.median(shifts) if shifts else None,
           "hold_share": len(holds) / len(silences) if silences else None,
           "pauses_per_min": len(holds) / (speech_ms / 60_000) if speech_ms else None,
           "speech_min": speech_ms / 60_000,
           "auc_len": auc(shifts, holds) if holds and shifts else None}
    return row


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--generate", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ami", type=Path, default=AMI_DIR)
    p.add_argument("--records", action="append", default=[], metavar="OUT",
                   help="an ingest output directory (its segments and words tables); repeatable")
    p.add_argument("--fit-real", action="store_true",
                   help="lay the generated dialogues out with the timing model fitted on the real sources")
    args = p.parse_args(argv)

    rows = []
    real = real_sources(args.ami, args.records)
    for name, (turns, words) in real.items():
        rows.append(summary(name, *real_silences(turns, words)))
    timing, timing_name = DEFAULT_TIMING, "default timing"
    if args.fit_real:
        seg_rows, word_rows = [], []
        for turns, words in real.values():
            s, w = rows_of(turns, words)
            seg_rows += s
            word_rows += w
        timing, timing_name = fit(seg_rows, word_rows), "timing fitted on the real sources"
    started = time.perf_counter()
    sil, speech_ms, last_words = generated(args.generate, args.seed, timing)
    wall = time.perf_counter() - started
    rows.insert(0, summary(f"generated {args.generate} (seed {args.seed}, {timing_name})", sil, speech_ms))

    print(f"mutual silences >= 200 ms after speech; pause = same speaker goes on (hold), "
          f"gap = change of speaker (shift); generation took {wall:.0f} s")
    head = f"{'source':<58} {'pauses':>6} {'med ms':>6} {'gaps':>5} {'med ms':>6} {'hold %':>6} " \
           f"{'pauses/min':>10} {'speech min':>10} {'AUC len':>7}"
    print(head)
    for r in rows:
        print(f"{r['source']:<58} {r['pauses']:>6} {fmt(r['pause_median_ms'], '.0f'):>6} {r['gaps']:>5} "
              f"{fmt(r['gap_median_ms'], '.0f'):>6} {fmt(r['hold_share'] and 100 * r['hold_share'], '.0f'):>6} "
              f"{fmt(r['pauses_per_min'], '.1f'):>10} {r['speech_min']:>10.1f} {fmt(r['auc_len'], '.2f'):>7}")

    gen = rows[0]
    holds_text = [w for s, w in zip(sil, last_words, strict=True) if not s.is_shift]
    shifts_text = [w for s, w in zip(sil, last_words, strict=True) if s.is_shift]
    cont = sum(1 for w in holds_text if w.endswith((",", ";", ":")) or
               w.strip(",.;:!?").lower() in CONTINUATION_WORDS)
    after_final = sum(1 for w in holds_text if w.endswith((".", "?", "!")))
    final = sum(1 for w in shifts_text if w.endswith((".", "?", "!")))
    listener = sum(1 for w in shifts_text if w in ("<backchannel>", "<to backchannel>"))
    print(f"generated holds: after a comma or continuation word {cont}/{len(holds_text)}, after '.', '?' "
          f"or '!' (the same speaker's next scripted turn, timed responses) {after_final}/{len(holds_text)}")
    print(f"generated shifts: after '.', '?' or '!' {final}/{len(shifts_text)}, into or out of a "
          f"backchannel {listener}/{len(shifts_text)}")
    ok = gen["auc_len"] is not None and 0.35 <= gen["auc_len"] <= 0.65
    print(f"AUC of silence length, shift vs hold, generated: {fmt(gen['auc_len'], '.3f')} "
          f"(goal 0.35-0.65): {'ok' if ok else 'OUT OF RANGE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
