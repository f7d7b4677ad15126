"""The sections of the audit report after its verdict: each runs its queries on the catalog,
records them (the page shows every query under its section, to rerun in ``microturn audit`` or
duckdb) and renders tables and plots.

Durations show as ``h:mm:ss``, shares as percentages, and a statistic computed from fewer than
:data:`~.report_format.MIN_VALUES` values carries a ``⚠ n=K`` marker. Long tables are cut at the
report's row limit, with a note counting the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from microturn.pipelines.catalog import report_plots as plots
from microturn.pipelines.catalog.report_format import (
    NONE,
    Col,
    col,
    count,
    decimal,
    esc,
    hms,
    hours_hms,
    label,
    percent,
    size,
    sql_details,
    table,
)


class Section:
    """One section of the page: a title, its HTML parts, and the queries it ran."""

    def __init__(self, con: duckdb.DuckDBPyConnection, title: str, anchor: str):
        self.con, self.title, self.anchor = con, title, anchor
        self.queries: list[tuple[str, str]] = []
        self.parts: list[str] = []

    def rows(self, label: str, sql: str) -> tuple[list[str], list[tuple]]:
        """Run ``sql`` (recorded under ``label``); its column names and every row."""
        self.queries.append((label, sql))
        cur = self.con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    def capped(self, label: str, sql: str, max_rows: int) -> tuple[list[str], list[tuple], int]:
        """Run ``sql`` (recorded under ``label``); its column names, the first ``max_rows`` rows
        and the number of rows it gives in all."""
        self.queries.append((label, sql))
        cur = self.con.execute(sql)
        columns = [d[0] for d in cur.description]
        rows = cur.fetchmany(max_rows + 1)
        total = len(rows)
        if total > max_rows:
            # A second run that only counts (the first result is dropped unread past the cut).
            total = int(self.con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0])
        return columns, rows[:max_rows], total

    def add(self, part: str) -> None:
        """Append an HTML part."""
        self.parts.append(part)

    def table(self, label: str, sql: str, *, max_rows: int, cols: Sequence[Col] | None = None, empty: str) -> None:
        """Run ``sql`` and append its rows as a table, at most ``max_rows`` of them."""
        columns, rows, total = self.capped(label, sql, max_rows)
        more = ""
        if total > len(rows):
            more = (f'<p class="note">Showing the first {len(rows):,} of {total:,} rows; for all of them run the '
                    f'query &ldquo;{esc(label)}&rdquo; below with <code>microturn audit --max-rows 0</code>.</p>')
        self.add(table(columns, rows, cols=cols, empty=empty, more=more))

    def html(self) -> str:
        """The section: heading, parts, then its queries folded."""
        return (f'<section id="{esc(self.anchor)}"><h2>{esc(self.title)}</h2>\n' + "\n".join(self.parts)
                + "\n" + sql_details(self.queries) + "</section>")


def _hours_col(name: str = "hours", header: str = "duration (h:mm:ss)") -> Col:
    return col(name, header, hours_hms, numeric=True)


def _ms_col(name: str, header: str, n: str | None = None) -> Col:
    return col(name, header, hms, numeric=True, n=n)


def _listed(value) -> str:
    return ", ".join(str(v) for v in value) if value else NONE


def _backends(value) -> str:
    return "\n".join(f"{k}: {v}" for k, v in sorted((value or {}).items())) or NONE


def hours_section(con, max_rows: int) -> Section:
    """Hours by effective split, origin and license: a stacked bar plot and the table."""
    s = Section(con, "Hours by split", "hours")
    _, plot_rows = s.rows("plot", "SELECT split, origin, sum(hours) AS hours FROM hours_by_split "
                                  "GROUP BY split, origin ORDER BY split, origin")
    s.add(plots.splits_plot(plot_rows).html())
    s.table("table", """
SELECT split, origin, license, conversations, hours,
       hours / sum(hours) OVER () AS share_of_all_hours
FROM hours_by_split
ORDER BY split, origin, license NULLS LAST""", max_rows=max_rows, empty="No conversations.", cols=[
        label("split"), label("origin"), col("license"), col("conversations", fmt=count, numeric=True),
        _hours_col(), col("share_of_all_hours", "share of all hours", percent, numeric=True)])
    return s


def license_section(con, max_rows: int) -> Section:
    """Conversations whose license does not allow training, and the allow-list."""
    s = Section(con, "License check", "licenses")
    s.table("conversations failing the check", "SELECT * FROM license_check ORDER BY reason, conversation_id",
            max_rows=max_rows, empty="Every conversation has a license on the allow-list.", cols=[
                col("conversation_id", "conversation", cls="hash"), label("origin"), col("license"),
                _hours_col(), label("reason")])
    _, allowed = s.rows("allow-list", "SELECT license, added_by FROM license_allowlist ORDER BY added_by, license")
    items = ", ".join(f"{esc(lic)}{' (added)' if by != 'default' else ''}" for lic, by in allowed)
    s.add(f'<p class="note">Allowed for training (case-insensitive): {items or NONE}.</p>')
    return s


def leakage_section(con, max_rows: int) -> Section:
    """Conversations in several splits, and remixes in another split than their source."""
    s = Section(con, "Leakage between splits", "leakage")
    s.table("leakage", "SELECT * FROM leakage", max_rows=max_rows,
            empty="No leakage: every conversation's samples sit in one split and every remix shares its "
                  "source's split.", cols=[
                col("conversation_id", "conversation", cls="hash"), label("kind"),
                col("splits", fmt=_listed), col("detail")])
    return s


def duplicates_section(con, max_rows: int) -> Section:
    """The same content under several records (ids, source bytes, media folders)."""
    s = Section(con, "Duplicate content", "duplicates")
    s.table("duplicate content", "SELECT * FROM duplicate_content", max_rows=max_rows,
            empty="No duplicate content: no conversation id in several outputs, no source file behind several "
                  "conversations, no media folder shared.", cols=[
                label("kind"), col("key", cls="hash"), col("copies", fmt=count, numeric=True),
                col("conversation_ids", "conversations", _listed), col("outputs", fmt=_listed)])
    return s


def rejects_section(con, max_rows: int) -> Section:
    """Rejects by stage and error type: bars and the table with one example each."""
    s = Section(con, "Rejects", "rejects")
    # Stages times error types (exception class names): a short list, read whole for the plot.
    _, bars = s.rows("plot", "SELECT stage, error_type, rejects FROM rejects_by_stage")
    if bars:  # with none, the table's note says so
        s.add(plots.rejects_plot(bars).html())
    s.table("table", "SELECT * FROM rejects_by_stage", max_rows=max_rows, empty="No rejects.", cols=[
        label("stage"), label("error_type", "error type"), col("rejects", fmt=count, numeric=True),
        col("example_input", "example input"), col("example_message", "its message")])
    return s


CONVERSATIONS_SQL = """
SELECT c.conversation_id, c.origin, s.split, c.duration_ms, c.num_speakers, c.speakers,
       c.license, l.reason AS license_problem, c.source_uri, c.backends
FROM unique_conversations AS c
JOIN conversation_splits AS s USING (conversation_id)
LEFT JOIN license_check AS l USING (conversation_id)
ORDER BY c.origin, c.conversation_id"""


def _license_cell(row) -> str:
    problem = row["license_problem"]
    lic = NONE if row["license"] is None else row["license"]
    return f"{lic} (fails: {problem})" if problem else lic


def conversations_section(con, max_rows: int) -> Section:
    """One row per conversation: origin, split, duration, speakers, license, source, backends."""
    s = Section(con, "Conversations", "conversations")
    s.table("conversations", CONVERSATIONS_SQL, max_rows=max_rows, empty="No conversations.", cols=[
        col("conversation_id", "conversation", cls="hash"), label("origin"), label("split"),
        _ms_col("duration_ms", "duration"),
        Col(header="speakers", value=lambda r: (r["num_speakers"], r["speakers"]),
            fmt=lambda v: f"{v[0]}: {_listed(v[1])}"),
        Col(header="license", value=lambda r: r, fmt=_license_cell),
        col("source_uri", "source"), col("backends", "tools (diarizer, VAD, ...)", _backends, cls="lines")])
    return s


def shards_section(con, max_rows: int) -> Section:
    """The shard files: path, split, samples, size and SHA-256, with totals."""
    s = Section(con, "Shards", "shards")
    _, ((n, samples, nbytes, ms),) = s.rows(
        "totals", "SELECT count(*) AS shards, sum(samples) AS samples, sum(bytes) AS bytes, "
                  "sum(duration_ms) AS duration_ms FROM shards")
    if n:
        s.add(f"<p>{count(n)} shard{'s' if n != 1 else ''}, {count(samples)} samples, {esc(size(nbytes))} "
              f"({count(nbytes)} bytes), {hms(ms)} of samples.</p>")
    s.table("shards", """
SELECT output || '/' || path AS path, split, samples, bytes, duration_ms, sha256
FROM shards
ORDER BY output, split, index""", max_rows=max_rows, empty="No shards in the catalog (no shard output given).", cols=[
        col("path"), label("split"), col("samples", fmt=count, numeric=True),
        Col(header="bytes", value=lambda r: r["bytes"], fmt=lambda b: f"{size(b)} ({count(b)})", numeric=True),
        _ms_col("duration_ms", "duration"), col("sha256", "SHA-256", cls="hash")])
    return s


def quality_section(con, max_rows: int) -> Section:
    """Aligner score distribution, share of words interpolated, and backends (diarizer) used."""
    s = Section(con, "Quality: alignment and tools", "quality")
    _, bins = s.rows("score histogram", f"""
SELECT c.origin, least(floor(w.score * {plots.SCORE_BINS}), {plots.SCORE_BINS - 1})::INTEGER AS bin, count(*) AS words
FROM words AS w
JOIN unique_conversations AS c ON w.conversation_id = c.conversation_id AND w.output = c.output
WHERE w.score IS NOT NULL
GROUP BY ALL
ORDER BY ALL""")
    s.add(plots.scores_plot(bins).html())
    s.add("<h3>Word timings by origin</h3>")
    s.table("word quality", "SELECT * FROM word_quality_by_origin", max_rows=max_rows,
            empty="No words in the catalog.", cols=[
                label("origin"), col("words", fmt=count, numeric=True), col("scored", fmt=count, numeric=True),
                col("interpolated", fmt=count, numeric=True),
                col("interpolated_share", "interpolated share", percent, numeric=True, n="words"),
                col("mean_score", "mean score", decimal, numeric=True, n="scored"),
                Col(header="score p10 / p50 / p90", numeric=True, n=lambda r: r["scored"],
                    value=lambda r: None if r["p50_score"] is None else tuple(r[f"p{q}_score"] for q in (10, 50, 90)),
                    fmt=lambda v: " / ".join(decimal(x) for x in v) if v else NONE)])
    s.add('<p class="note">Interpolated: words the aligner gave no time for, timed between their neighbours '
          "(score NULL).</p>")
    s.add("<h3>Tools used (diarizer and the others) by origin</h3>")
    s.table("backends", "SELECT * FROM backend_usage", max_rows=max_rows, empty="No backends recorded.", cols=[
        label("role"), col("backend"), label("origin"), col("conversations", fmt=count, numeric=True), _hours_col()])
    return s


def durations_section(con, max_rows: int) -> Section:
    """Conversation durations: histogram by origin and a summary table."""
    s = Section(con, "Durations", "durations")
    _, rows = s.rows("plot", "SELECT origin, duration_ms FROM unique_conversations ORDER BY origin, duration_ms")
    s.add(plots.durations_plot(rows).html())
    s.table("summary", """
SELECT origin, count(*) AS conversations, sum(duration_ms) AS total_ms, min(duration_ms) AS min_ms,
       quantile_cont(duration_ms, 0.5) AS p50_ms, max(duration_ms) AS max_ms
FROM unique_conversations
GROUP BY origin
ORDER BY origin""", max_rows=max_rows, empty="No conversations.", cols=[
        label("origin"), col("conversations", fmt=count, numeric=True), _ms_col("total_ms", "total"),
        _ms_col("min_ms", "shortest"), _ms_col("p50_ms", "median", n="conversations"), _ms_col("max_ms", "longest")])
    return s


def _triple(prefix: str) -> Col:
    keys = [f"{prefix}_p10_ms", f"{prefix}_p50_ms", f"{prefix}_p90_ms"]
    return Col(header=f"{prefix} p10 / p50 / p90", numeric=True, n=lambda r: r[f"{prefix}_count"],
               value=lambda r: None if r[keys[1]] is None else tuple(r[k] for k in keys),
               fmt=lambda v: NONE if v is None else " / ".join(f"{x:,.0f}" for x in v) + " ms")


def turn_taking_section(con, max_rows: int) -> Section:
    """Gap and overlap histograms per origin, turn-taking statistics, speaker balance."""
    s = Section(con, "Turn-taking", "turn-taking")
    for kind in ("gap", "overlap"):
        _, rows = s.rows(f"{kind} plot", f"SELECT origin, list(ms ORDER BY ms) AS values FROM gap_overlap_values "
                                         f"WHERE kind = '{kind}' GROUP BY origin ORDER BY origin")
        s.add(plots.values_plot(kind, rows).html())
    s.add("<h3>Statistics by origin</h3>")
    per_conv = "conversations"
    s.table("turn-taking", "SELECT * FROM turn_taking_by_origin", max_rows=max_rows, empty="No conversations.", cols=[
        label("origin"), col("conversations", fmt=count, numeric=True), _hours_col(),
        col("gap_count", "gaps", count, numeric=True), _triple("gap"),
        col("overlap_count", "overlaps", count, numeric=True), _triple("overlap"),
        col("overlap_ratio", "overlap / speech", percent, numeric=True, n=per_conv),
        col("backchannels_per_min", "backchannels per min of speech", decimal, numeric=True, n=per_conv),
        col("turns_per_min", "turns per min", decimal, numeric=True, n=per_conv)])
    s.add("<h3>Speaker balance</h3>")
    s.table("speaker balance", "SELECT * FROM speaker_balance_by_origin", max_rows=max_rows,
            empty="No conversations.", cols=[
                label("origin"), col("conversations", fmt=count, numeric=True),
                col("mean_speakers", "mean speakers", decimal, numeric=True, n=per_conv),
                col("mean_dominant_share", "dominant speaker's share: mean", percent, numeric=True, n=per_conv),
                col("p50_dominant_share", "p50", percent, numeric=True, n=per_conv),
                col("p90_dominant_share", "p90", percent, numeric=True, n=per_conv),
                col("max_dominant_share", "max", percent, numeric=True)])
    s.add('<p class="note">Gaps and overlaps are measured at each change of speaker; the rates pool the '
          "conversations of an origin, so their n is the number of conversations.</p>")
    return s


def task_types_section(con, max_rows: int) -> Section:
    """Hours and item counts per task type (visual cues, background results, ...)."""
    s = Section(con, "Task types", "task-types")
    s.table("task types", "SELECT * FROM task_types", max_rows=max_rows, empty="No conversations.", cols=[
        label("task_type", "task type"), label("origin"), col("conversations", fmt=count, numeric=True),
        col("with_video", "with video", count, numeric=True), _hours_col(), col("items", fmt=count, numeric=True)])
    s.add('<p class="note">A conversation with several task types counts under each: durations do not add up '
          "across types.</p>")
    return s
