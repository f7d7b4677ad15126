"""The closing summary of an ingest run: counts read back from the written tables, and the
per-stage realtime factors from Beam metrics where the runner reports them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from microturn.pipelines.tables import read_table

STAGES = ("normalise", "vad", "diarize", "transcribe", "stats")


@dataclass(frozen=True, kw_only=True)
class IngestSummary:
    output: str
    sources: int
    conversations: int
    audio_s: float
    speakers: int
    turns: int
    words: int
    overlap_ratio: float | None
    rejects: dict[str, int]
    wall_s: float
    stage_rtf: dict[str, float] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")

    def render(self) -> str:
        lines = [
            f"ingest → {self.output}",
            f"  inputs ok      {self.sources} source file(s), {self.conversations} conversation(s), "
            f"{self.audio_s / 60:.1f} min of audio",
            f"  speakers       {self.speakers} (summed over conversations)",
            f"  turns          {self.turns}",
            f"  words          {self.words}",
            "  overlap ratio  " + ("n/a" if self.overlap_ratio is None else f"{self.overlap_ratio:.3f}"),
            f"  wall time      {self.wall_s:.1f} s → {self.realtime_factor:.1f}x realtime",
        ]
        if self.stage_rtf:
            lines.append("  per stage      " + ", ".join(
                f"{k} {v:.0f}x" for k, v in self.stage_rtf.items()))
        if self.rejects:
            lines.append("  rejects        " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejects.items())))
        else:
            lines.append("  rejects        none")
        return "\n".join(lines)


def _stage_rtf(result) -> dict[str, float]:
    if result is None:
        return {}
    try:
        metrics = result.metrics().query()
    except Exception:  # noqa: BLE001 - some runners report no metrics; the summary still prints
        return {}
    ms: dict[str, float] = {}
    audio: dict[str, float] = {}
    for d in metrics.get("distributions", []):
        name = d.key.metric.name
        if name.endswith("_ms") and d.committed is not None:
            ms[name[:-3]] = d.committed.sum
    for c in metrics.get("counters", []):
        name = c.key.metric.name
        if name.endswith("_audio_ms"):
            audio[name[: -len("_audio_ms")]] = c.committed or 0
    return {s: audio[s] / ms[s] for s in STAGES if ms.get(s) and audio.get(s)}


def summarise(output: str, *, wall_s: float, result=None) -> IngestSummary:
    conv = read_table(output, "conversations").to_pylist()
    rejects = read_table(output, "rejects").to_pylist()
    # Each conversation with its own statistics (zipping all conversations with the non-empty
    # statistics would pair a conversation with the next one's after one without).
    with_stats = [(c, c["stats"]) for c in conv if c["stats"]]
    speech = sum(c["duration_ms"] * s["speech_ratio"] for c, s in with_stats)
    overlap = sum(c["duration_ms"] * s["speech_ratio"] * s["overlap_ratio"] for c, s in with_stats)
    return IngestSummary(
        output=output,
        sources=read_table(output, "sources").num_rows,
        conversations=len(conv),
        audio_s=sum(c["duration_ms"] for c in conv) / 1000,
        speakers=sum(c["num_speakers"] for c in conv),
        turns=sum(s["turns"] for _, s in with_stats),
        words=read_table(output, "words").num_rows,
        overlap_ratio=(overlap / speech) if speech else None,
        rejects=dict(Counter(f"{r['stage']}/{r['error_type']}" for r in rejects)),
        wall_s=wall_s,
        stage_rtf=_stage_rtf(result),
    )
