"""The verdict at the top of the audit report, and the line naming the build and the render.

The verdict answers in one screen what an auditor asks first: how many hours, what share fails
the license check and why, how many inputs were rejected and at which stage, whether any
conversation leaks between splits, and whether any content is in the catalog twice. Each line
carries a status word (PASS, FAIL, CHECK, INFO) besides its colour, and the queries behind the
numbers are shown under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from microturn.pipelines.catalog.build_info import CodeVersion
from microturn.pipelines.catalog.report_format import count, esc, hms, percent, sql_details

HOURS_SQL = """
SELECT origin, count(*) AS conversations, sum(duration_ms) AS duration_ms
FROM unique_conversations
GROUP BY origin
ORDER BY origin"""
LICENSE_SQL = """
SELECT l.reason, count(*) AS conversations, sum(c.duration_ms) AS duration_ms,
       list(DISTINCT coalesce(l.license, 'NULL') ORDER BY coalesce(l.license, 'NULL')) AS licenses
FROM license_check AS l
JOIN unique_conversations AS c USING (conversation_id)
GROUP BY l.reason
ORDER BY duration_ms DESC, l.reason"""
REJECTS_SQL = """
SELECT stage, sum(rejects)::BIGINT AS rejects
FROM rejects_by_stage
GROUP BY stage
ORDER BY rejects DESC, stage"""
LEAKAGE_SQL = """
SELECT kind, count(DISTINCT conversation_id) AS conversations
FROM leakage
GROUP BY kind
ORDER BY kind"""
UNCHECKED_REMIXES_SQL = """
SELECT count(*) AS remixes_without_source
FROM unique_conversations AS r
WHERE r.origin = 'remix' AND NOT EXISTS (
    SELECT 1 FROM unique_conversations AS s
    WHERE json_valid(r.provenance) AND s.conversation_id = r.provenance ->> '$.remix_of')"""
DUPLICATES_SQL = """
SELECT kind, count(*) AS groups, sum(copies)::BIGINT AS records
FROM duplicate_content
GROUP BY kind
ORDER BY kind"""

# kind of `duplicate_content` → (what a group is, the rest of its phrase, what its records are, consequence)
_DUPLICATE_WORDS = {
    "conversation_id": ("conversation id", "loaded from several outputs", "records", "counted once"),
    "source_sha256": ("source file", "behind several conversation ids", "conversations",
                      "hours counted more than once"),
    "media": ("media folder", "shared by several conversations", "conversations", "hours counted more than once"),
}


def _plural(n: int, word: str) -> str:
    return f"{count(n)} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The numbers of the verdict block (durations in ms)."""

    conversations: int
    total_ms: int
    by_origin: tuple[tuple[str, int, int], ...]  # origin, conversations, ms
    license_fail_ms: int
    license_fail_conversations: int
    license_reasons: tuple[tuple[str, int, int, tuple[str, ...]], ...]  # reason, conversations, ms, licenses
    rejects: int
    rejects_by_stage: tuple[tuple[str, int], ...]
    leakage_conversations: int
    leakage_by_kind: tuple[tuple[str, int], ...]
    unchecked_remixes: int
    duplicates_by_kind: tuple[tuple[str, int, int], ...]  # kind, groups, records

    @property
    def license_fail_share(self) -> float | None:
        """Share of all hours failing the license check (None when the catalog has no hours)."""
        return self.license_fail_ms / self.total_ms if self.total_ms else None


def compute_verdict(con: duckdb.DuckDBPyConnection) -> tuple[Verdict, list[tuple[str, str]]]:
    """The verdict of the catalog open on ``con``, and the (label, SQL) of the queries it ran."""
    queries: list[tuple[str, str]] = []

    def rows(label: str, sql: str) -> list[tuple]:
        queries.append((label, sql))
        return con.execute(sql).fetchall()

    by_origin = tuple((o, int(n), int(ms)) for o, n, ms in rows("hours", HOURS_SQL))
    reasons = tuple((r, int(n), int(ms), tuple(lics)) for r, n, ms, lics in rows("license check", LICENSE_SQL))
    stages = tuple((st, int(n)) for st, n in rows("rejects", REJECTS_SQL))
    leaks = tuple((k, int(n)) for k, n in rows("leakage", LEAKAGE_SQL))
    (unchecked,), = rows("remixes whose source is not in the catalog", UNCHECKED_REMIXES_SQL)
    dups = tuple((k, int(g), int(n)) for k, g, n in rows("duplicate content", DUPLICATES_SQL))
    # A conversation can leak both ways; count it once.
    (leaking,), = rows("conversations that leak", "SELECT count(DISTINCT conversation_id) FROM leakage")
    verdict = Verdict(
        conversations=sum(n for _, n, _ in by_origin), total_ms=sum(ms for _, _, ms in by_origin), by_origin=by_origin,
        license_fail_ms=sum(ms for _, _, ms, _ in reasons), license_fail_conversations=sum(n for _, n, _, _ in reasons),
        license_reasons=reasons, rejects=sum(n for _, n in stages), rejects_by_stage=stages,
        leakage_conversations=int(leaking), leakage_by_kind=leaks, unchecked_remixes=int(unchecked),
        duplicates_by_kind=dups,
    )
    return verdict, queries


def _duplicate_item(kind: str, groups: int, records: int) -> str:
    noun, rest, members, effect = _DUPLICATE_WORDS.get(kind, (kind, "", "records", "see the table"))
    return f"<li>{_plural(groups, esc(noun))} {rest} ({count(records)} {members}; {effect})</li>"


def _line(status: str, label: str, text: str, anchor: str) -> str:
    return (f'<tr class="{status.lower()}"><th scope="row"><a href="#{anchor}">{esc(label)}</a></th>'
            f'<td class="status">{status}</td><td>{text}</td></tr>')


def verdict_lines(v: Verdict) -> list[tuple[str, str, str, str]]:
    """(status, label, HTML text, anchor) of each verdict line."""
    origins = ", ".join(f"{esc(o)} {hms(ms)} ({_plural(n, 'conversation')})" for o, n, ms in v.by_origin)
    hours = f"<b>{hms(v.total_ms)}</b> in {_plural(v.conversations, 'conversation')}"
    hours += f": {origins}" if origins else ""
    lines = [("INFO", "Hours", hours, "hours")]
    if v.license_fail_conversations:
        why = "".join(f"<li>{esc(r)}: {hms(ms)} in {_plural(n, 'conversation')} (license: {esc(', '.join(lics))})</li>"
                      for r, n, ms, lics in v.license_reasons)
        text = (f"<b>{hms(v.license_fail_ms)}</b> of {hms(v.total_ms)} (<b>{percent(v.license_fail_share)}</b>) fails, "
                f"in {_plural(v.license_fail_conversations, 'conversation')}:<ul>{why}</ul>")
        lines.append(("FAIL", "License check", text, "licenses"))
    else:
        lines.append(("PASS", "License check", "every conversation's license allows training (0:00:00 fails)",
                      "licenses"))
    if v.rejects:
        stages = ", ".join(f"{esc(st)} {count(n)}" for st, n in v.rejects_by_stage)
        lines.append(("CHECK", "Rejects", f"<b>{_plural(v.rejects, 'reject')}</b>, by stage: {stages}", "rejects"))
    else:
        lines.append(("PASS", "Rejects", "none", "rejects"))
    unchecked = (f"; {count(v.unchecked_remixes)} remix(es) not checked: their source is not in the catalog"
                 if v.unchecked_remixes else "")
    if v.leakage_conversations:
        kinds = ", ".join(f"{esc(k)} {count(n)}" for k, n in v.leakage_by_kind)
        lines.append(("FAIL", "Leakage", f"<b>yes</b>: {_plural(v.leakage_conversations, 'conversation')} ({kinds})"
                      + unchecked, "leakage"))
    else:
        lines.append(("CHECK" if v.unchecked_remixes else "PASS", "Leakage", "<b>no</b>" + unchecked, "leakage"))
    if v.duplicates_by_kind:
        what = "".join(_duplicate_item(k, g, n) for k, g, n in v.duplicates_by_kind)
        only_ids = {k for k, _, _ in v.duplicates_by_kind} == {"conversation_id"}
        status = "CHECK" if only_ids else "FAIL"
        lines.append((status, "Duplicate content", f"<b>yes</b>:<ul>{what}</ul>", "duplicates"))
    else:
        lines.append(("PASS", "Duplicate content", "<b>no</b>", "duplicates"))
    return lines


def verdict_html(v: Verdict, queries: list[tuple[str, str]]) -> str:
    """The verdict block: one line per question, then its queries folded."""
    body = "".join(_line(*line) for line in verdict_lines(v))
    return (f'<section id="verdict" class="verdict"><h2>Verdict</h2><div class="scroll"><table>{body}</table></div>'
            f"{sql_details(queries)}</section>")


def stamp_html(catalog: str, built_at, built_by: CodeVersion | None, rendered_at, rendered_by: CodeVersion) -> str:
    """The line under the title: the catalog, when and from which code it was built, and when and
    by which code the report was rendered."""
    if built_at is None or built_by is None:
        built = "built at an unrecorded time (this catalog has no build_info table; rebuild it to record one)"
    else:
        built = f"built <time>{esc(built_at.isoformat(sep=' '))} UTC</time> by {esc(built_by.describe())}"
    rendered = f"rendered <time>{esc(rendered_at.isoformat(sep=' '))} UTC</time> by {esc(rendered_by.describe())}"
    return f'<p class="stamp">Catalog <code>{esc(catalog)}</code> {built}.<br>This report {rendered}.</p>'
