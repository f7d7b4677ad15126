"""Turn-taking statistics of an output directory (synthetic, remixed or real records), and plots.

The figures are pooled over conversations from the ``stats`` column of ``conversations``, whose
definitions live in :mod:`microturn.schemas.turns`, so real and synthetic outputs are measured
the same way.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np

from microturn.pipelines.media import write_bytes
from microturn.pipelines.tables import read_table


@dataclass(frozen=True, kw_only=True)
class OutputStats:
    conversations: int
    hours: float
    origins: dict[str, int]
    gaps_ms: np.ndarray
    overlaps_ms: np.ndarray
    overlap_ratio: float  # overlapped speech time / speech time, pooled over conversations
    speech_ratio: float
    turns_per_min: float
    backchannels_per_min: float
    rejects: dict[tuple[str, str], int]  # (stage, error type) → count

    @property
    def median_gap_ms(self) -> float | None:
        return float(np.median(self.gaps_ms)) if self.gaps_ms.size else None

    @property
    def median_overlap_ms(self) -> float | None:
        return float(np.median(self.overlaps_ms)) if self.overlaps_ms.size else None

    @property
    def overlap_share(self) -> float | None:
        """Share of speaker changes that start in overlap."""
        n = self.gaps_ms.size + self.overlaps_ms.size
        return self.overlaps_ms.size / n if n else None


def collect(output: str) -> OutputStats:
    """Pool the statistics of every conversation under ``output``."""
    convs = read_table(output, "conversations").to_pylist()
    rejects = read_table(output, "rejects").to_pylist()
    gaps, overlaps = [], []
    total_ms = speech_ms = overlap_ms = 0.0
    turns = backchannels = 0
    for c in convs:
        s = c["stats"] or {}
        dur = float(c["duration_ms"])
        total_ms += dur
        speech = (s.get("speech_ratio") or 0.0) * dur
        speech_ms += speech
        overlap_ms += (s.get("overlap_ratio") or 0.0) * speech
        gaps += s.get("gaps_ms") or []
        overlaps += s.get("overlaps_ms") or []
        turns += s.get("turns") or 0
        backchannels += s.get("backchannels") or 0
    minutes = total_ms / 60_000 or 1.0
    return OutputStats(
        conversations=len(convs), hours=total_ms / 3_600_000,
        origins=dict(sorted(Counter(c["origin"] for c in convs).items())),
        gaps_ms=np.asarray(gaps, dtype=np.int64), overlaps_ms=np.asarray(overlaps, dtype=np.int64),
        overlap_ratio=overlap_ms / speech_ms if speech_ms else 0.0,
        speech_ratio=speech_ms / total_ms if total_ms else 0.0,
        turns_per_min=turns / minutes, backchannels_per_min=backchannels / minutes,
        rejects=dict(sorted(Counter((r["stage"], r["error_type"]) for r in rejects).items())),
    )


def _fmt(v, unit: str = "") -> str:
    return "-" if v is None else f"{v:.0f}{unit}" if unit == " ms" else f"{v:.3f}{unit}"


def render(s: OutputStats, *, title: str) -> str:
    """A plain-text report of :class:`OutputStats`."""
    lines = [
        title,
        f"  conversations      {s.conversations} ({', '.join(f'{k} {v}' for k, v in s.origins.items()) or 'none'})",
        f"  duration           {s.hours * 60:.1f} min",
        f"  speech ratio       {_fmt(s.speech_ratio)}",
        f"  overlap ratio      {_fmt(s.overlap_ratio)}  (overlapped speech / speech)",
        f"  speaker changes    {s.gaps_ms.size + s.overlaps_ms.size}  "
        f"(in overlap: {_fmt(s.overlap_share)})",
        f"  median gap         {_fmt(s.median_gap_ms, ' ms')}  (n={s.gaps_ms.size})",
        f"  median overlap     {_fmt(s.median_overlap_ms, ' ms')}  (n={s.overlaps_ms.size})",
        f"  turns / min        {s.turns_per_min:.1f}",
        f"  backchannels / min {s.backchannels_per_min:.1f}",
    ]
    if s.rejects:
        lines.append("  rejects            " + ", ".join(f"{st}/{et}: {n}" for (st, et), n in s.rejects.items()))
    return "\n".join(lines)


def plot(ours: OutputStats, other: OutputStats | None, path: str, *, labels=("this", "other")) -> None:
    """PNG of gap and overlap histograms (densities), ``ours`` against ``other`` when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, name, key in ((axes[0], "gap", "gaps_ms"), (axes[1], "overlap", "overlaps_ms")):
        series = [(labels[0] or "this", getattr(ours, key), "tab:blue")]
        if other is not None:
            series.append((labels[1] or "other", getattr(other, key), "tab:orange"))
        top = max([np.percentile(v, 98) for _, v, _ in series if v.size] or [1000])
        bins = np.linspace(0, max(top, 100), 40)
        for label, values, color in series:
            if values.size:
                ax.hist(np.clip(values, 0, bins[-1]), bins=bins, density=True, alpha=0.55, color=color,
                        label=f"{label} (n={values.size}, median {np.median(values):.0f} ms)")
        ax.set_xlabel(f"{name} at a change of speaker (ms)")
        ax.set_ylabel("density")
        ax.set_title(f"{name} durations")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    write_bytes(path, buf.getvalue())
