"""Diarization on real meetings: the embedded diarizer against its previous settings, in one run.

    .venv/bin/python bench/diarization.py [--sweep] [--plot bench/figures/diarization.png]

Clips: the 11 AMI meeting clips of ``tests/data/ami-dev`` (1-4 speakers, overlapped speech,
scored over their UEM, no collar, overlap scored) and pyannote's 30 s two-person phone call.
Each configuration diarizes every clip twice: with the speaker count estimated and with the
reference count given (``num_speakers``). Printed per configuration: DER, JER, miss, false alarm
and confusion per clip and in total, the confusion table of speaker counts (reference against
estimated), the overlap share of reference and hypothesis, and the realtime factor of the
diarizer call (audio seconds per second of compute, models loaded, one thread).

The baseline is the previous default: silero-vad regions gate the windows and cut the turns
(``speech = "vad"``). ``--sweep`` runs a small grid of settings and a leave-some-out check:
settings are chosen on one half of the clips (by total DER, count estimated) and reported on the
other half, both ways round, so that a choice is defended by clips it was not chosen on.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import soundfile as sf

from microturn.pipelines.backends.base import SAMPLE_RATE, SpeakerCount
from microturn.pipelines.backends.embedded_diarizer import EmbeddedDiarizer, EmbeddedDiarizerConfig
from microturn.pipelines.backends.silero import SileroVad
from microturn.pipelines.eval_diarization import DiarizationReport, evaluate_diarization, read_rttm, read_uem
from microturn.testing.ami import AMI_DIR, ami_uris
from microturn.testing.sample_call import sample_path

# The settings before ami-dev was measured: VAD-gated windows and turns.
BASELINE: dict[str, Any] = {"speech": "vad", "step_s": 3.0, "onset": 0.5, "offset": None, "cluster_threshold": 0.3,
                             "level_dbfs": None, "link_iou": 0.7}

# The grid of --sweep: the settings that moved totals in exploratory runs.
SWEEP: dict[str, list] = {"step_s": [2.0, 3.0], "link_iou": [0.7, 0.95], "cluster_threshold": [0.25, 0.3]}


def load() -> tuple[dict[str, np.ndarray], dict, dict]:
    waves = {}
    for uri in ami_uris():
        waves[uri], rate = sf.read(AMI_DIR / f"{uri}.flac", dtype="float32")
        assert rate == SAMPLE_RATE
    waves["sample"], _ = sf.read(sample_path("wav"), dtype="float32")
    refs = read_rttm(AMI_DIR) | read_rttm(sample_path("rttm"))
    uems = read_uem(AMI_DIR)
    from pyannote.core import Segment, Timeline

    uems["sample"] = Timeline([Segment(0, len(waves["sample"]) / SAMPLE_RATE)], uri="sample")
    return waves, refs, uems


def run(config: EmbeddedDiarizerConfig, waves, refs, speech, *, known: bool) -> tuple[dict, float]:
    diarizer = EmbeddedDiarizer(config)
    hyp, seconds = {}, 0.0
    for uri, wave_N in waves.items():
        count = SpeakerCount(num_speakers=len(refs[uri].labels())) if known else SpeakerCount()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n speakers found, m requested" is scored below
            turns = diarizer(wave_N, speech=speech[uri], count=count)
        seconds += time.perf_counter() - started
        hyp[uri] = [(t.speaker, t.start_ms, t.end_ms) for t in turns]
    return hyp, seconds


def score(hyp: dict, refs, uems, uris: list[str]) -> DiarizationReport:
    return evaluate_diarization({u: refs[u] for u in uris}, {u: hyp[u] for u in uris},
                                uem={u: uems[u] for u in uris})


def show(name: str, report: DiarizationReport) -> None:
    print(f"  {name}")
    print(f"    {'clip':<8} {'DER':>6} {'JER':>6} {'miss':>6} {'FA':>6} {'conf':>6} {'spk':>5} "
          f"{'ovl ref':>8} {'hyp':>5}")
    for f in [*report.files, report.total]:
        r = f.reference_s or 1.0
        print(f"    {f.uri:<8} {f.der:>6.1%} {f.jer:>6.1%} {f.missed_s / r:>6.1%} {f.false_alarm_s / r:>6.1%} "
              f"{f.confusion_s / r:>6.1%} {f.reference_speakers:>2}/{f.hypothesis_speakers:<2} "
              f"{f.reference_overlap:>8.1%} {f.hypothesis_overlap:>5.1%}")


def count_table(report: DiarizationReport, refs) -> str:
    pairs = Counter((f.reference_speakers, f.hypothesis_speakers) for f in report.files)
    hyps = sorted({h for _, h in pairs} | {1, 2, 3, 4})
    lines = ["    reference \\ estimated " + " ".join(f"{h:>3}" for h in hyps)]
    for r in sorted({r for r, _ in pairs}):
        lines.append(f"    {r:>21}   " + " ".join(f"{pairs.get((r, h), 0):>3}" for h in hyps))
    right = sum(n for (r, h), n in pairs.items() if r == h)
    lines.append(f"    right on {right} of {len(report.files)} clips")
    # Many ami-dev speakers say one word (0.3-0.8 s in 30 s): also count, per clip, only the
    # reference speakers with at least 2 s of speech (min_cluster_s, the evidence the
    # estimate asks of a voice), at least one.
    audible = {f.uri: max(1, sum(refs[f.uri].label_timeline(label).support().duration() >= 2.0
                                 for label in refs[f.uri].labels())) for f in report.files}
    right_audible = sum(audible[f.uri] == f.hypothesis_speakers for f in report.files)
    lines.append(f"    right on {right_audible} of {len(report.files)} clips counting speakers with >= 2 s of speech "
                 f"({' '.join(f'{f.uri}:{audible[f.uri]}/{f.hypothesis_speakers}' for f in report.files)})")
    return "\n".join(lines)


def evaluate(label: str, config: EmbeddedDiarizerConfig, waves, refs, uems, speech) -> dict:
    ami = ami_uris()
    print(f"\n{label}: {config_text(config)}")
    out = {}
    for known in (False, True):
        hyp, seconds = run(config, waves, refs, speech, known=known)
        report = score(hyp, refs, uems, ami)
        sample = score(hyp, refs, uems, ["sample"]).total
        show(f"ami-dev, count {'given' if known else 'estimated'}", report)
        if not known:
            print(count_table(report, refs))
        audio_s = sum(len(w) for w in waves.values()) / SAMPLE_RATE
        print(f"    sample call: DER {sample.der:.1%} (miss {sample.missed_s / sample.reference_s:.1%}, "
              f"FA {sample.false_alarm_s / sample.reference_s:.1%}); diarizer {audio_s / seconds:.0f}x realtime")
        out["known" if known else "estimated"] = {"ami": report, "sample": sample, "realtime": audio_s / seconds}
    return out


def config_text(config: EmbeddedDiarizerConfig) -> str:
    default = EmbeddedDiarizerConfig()
    changed = {k: v for k, v in asdict(config).items() if getattr(default, k) != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "the defaults"


def sweep(waves, refs, uems, speech) -> None:
    ami = ami_uris()
    halves = (ami[0::2], ami[1::2])
    print(f"\nleave-some-out: half A {halves[0]}, half B {halves[1]}")
    totals = []
    for values in itertools.product(*SWEEP.values()):
        settings: dict[str, Any] = dict(zip(SWEEP, values, strict=True))
        hyp, _ = run(EmbeddedDiarizerConfig(**settings), waves, refs, speech, known=False)
        der = [score(hyp, refs, uems, half).total.der for half in halves]
        everything = score(hyp, refs, uems, ami).total.der
        totals.append((settings, der, everything))
        print(f"  {settings}: A {der[0]:.1%}  B {der[1]:.1%}  all {everything:.1%}", flush=True)
    for chosen_on, reported_on in ((0, 1), (1, 0)):
        best = min(totals, key=lambda t: t[1][chosen_on])
        print(f"  chosen on half {'AB'[chosen_on]}: {best[0]} -> half {'AB'[reported_on]} DER "
              f"{best[1][reported_on]:.1%} (best possible there "
              f"{min(t[1][reported_on] for t in totals):.1%}), all clips {best[2]:.1%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0], allow_abbrev=False)
    p.add_argument("--sweep", action="store_true", help="also run the settings grid and the leave-some-out check")
    p.add_argument("--plot", help="write a per-clip DER figure (PNG) here")
    args = p.parse_args(argv)
    waves, refs, uems = load()
    vad = SileroVad()
    speech = {uri: vad(w) for uri, w in waves.items()}
    base = evaluate("baseline (previous defaults)", EmbeddedDiarizerConfig(**BASELINE), waves, refs, uems, speech)
    new = evaluate("current defaults", EmbeddedDiarizerConfig(), waves, refs, uems, speech)
    print("\nsummary (ami-dev totals; goals: DER <= 25% estimated, <= 22% known, sample <= 6%, >= 60x realtime)")
    for mode in ("estimated", "known"):
        b, n = base[mode], new[mode]
        print(f"  count {mode:<9}: DER {b['ami'].total.der:.1%} -> {n['ami'].total.der:.1%} "
              f"(x{n['ami'].total.der / b['ami'].total.der:.2f}); sample {b['sample'].der:.1%} -> "
              f"{n['sample'].der:.1%}; realtime {b['realtime']:.0f}x -> {n['realtime']:.0f}x "
              f"(x{n['realtime'] / b['realtime']:.2f})")
    if args.plot:
        plot(args.plot, base, new)
    if args.sweep:
        sweep(waves, refs, uems, speech)
    return 0


def plot(path: str, base: dict, new: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, mode in zip(axes, ("estimated", "known"), strict=True):
        files = [*base[mode]["ami"].files, base[mode]["ami"].total]
        names = [f.uri for f in files]
        x = np.arange(len(names))
        for shift, result, label in ((-0.2, base, "baseline"), (0.2, new, "current")):
            rows = [*result[mode]["ami"].files, result[mode]["ami"].total]
            ax.bar(x + shift, [min(f.der, 1.5) for f in rows], 0.4, label=label)
        ax.set_xticks(x, names, rotation=45, fontsize=8)
        ax.set_title(f"ami-dev DER, speaker count {mode}")
        ax.axhline(0.25 if mode == "estimated" else 0.22, color="k", lw=0.8, ls="--")
    axes[0].set_ylabel("DER (no collar, overlap scored)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    sys.exit(main())
