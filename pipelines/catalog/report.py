"""``microturn audit report``: the audit report of a catalog, one self-contained HTML file.

``DIR/index.html`` holds everything: inline CSS, plots as ``data:image/png`` URLs, no script and
nothing fetched, so it opens from disk anywhere. From the top:

- the title, and when and from which code (microturn version, git commit) the catalog was built
  (its ``build_info`` table) and the report rendered;
- the verdict (:mod:`.report_verdict`): hours, hours failing the license check and why, rejects
  by stage, leakage between splits, duplicate content;
- sections (:mod:`.report_sections`): license check, leakage, duplicate content, rejects, hours
  by split, one row per conversation, the shards with their SHA-256, quality (aligner scores,
  interpolated words, diarizer and other tools), durations, turn-taking, task types, and the
  catalog's inputs and row counts.

Each section shows the SQL it ran. Durations read ``h:mm:ss``, shares are percentages, and a
statistic computed from fewer than 30 values carries a ``⚠ n=K`` marker. Tables scroll inside
the page and their cells wrap; long ones stop at ``max_table_rows`` with a note. Every value
from the catalog is HTML-escaped, its control and format characters shown as visible escapes.
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os

from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.catalog import report_sections as sections
from microturn.pipelines.catalog.audit import open_catalog
from microturn.pipelines.catalog.build_info import CodeVersion, code_version, utc_now
from microturn.pipelines.catalog.report_format import MIN_VALUES, esc, html_table
from microturn.pipelines.catalog.report_verdict import compute_verdict, stamp_html, verdict_html
from microturn.pipelines.catalog.views import VIEW_NAMES

__all__ = ["html_table", "write_report"]

DEFAULT_MAX_TABLE_ROWS = 200
# Plots that reports before the single-file layout wrote beside index.html; a report written
# over such a folder removes them, so the folder holds only what index.html is.
_OLD_PLOT_FILES = ("durations.png", "gaps.png", "overlaps.png", "rejects.png", "splits.png")

_STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1.5em; max-width: 72em; color: #222;
       line-height: 1.4; overflow-wrap: anywhere; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 1.2em 0 0.3em; }
p.stamp, p.note, nav { color: #555; font-size: 0.9em; }
p.note { font-style: italic; }
nav a { margin-right: 0.8em; white-space: nowrap; }
.scroll { max-width: 100%; overflow-x: auto; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
th { background: #f3f3f3; overflow-wrap: normal; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num > .v, td.num:not(:has(.v)) { white-space: nowrap; }
td.label { white-space: nowrap; }
td.lines { white-space: pre-line; }
td.hash { font-family: ui-monospace, monospace; font-size: 0.9em; min-width: 9em; }
.few { color: #9a4a00; font-weight: 600; white-space: nowrap; cursor: help; }
.verdict table { font-size: 0.95em; width: 100%; }
.verdict th { width: 10em; background: #fafafa; }
.verdict th a { color: inherit; }
.verdict td.status { width: 5em; white-space: nowrap; font-weight: 700; text-align: center; }
.verdict tr.pass td.status { background: #e3f4e6; color: #12632a; }
.verdict tr.fail td.status { background: #fbe3e1; color: #a3140c; }
.verdict tr.check td.status { background: #fdf1d6; color: #7a4d00; }
.verdict tr.info td.status { background: #e8eefb; color: #23408e; }
details.sql { margin: 0.6em 0 0; font-size: 0.85em; }
details.sql summary { cursor: pointer; color: #345; }
details.sql pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; padding: 0.5em;
                  margin: 0.2em 0 0.6em; }
img { max-width: 100%; height: auto; }
code { font-family: ui-monospace, monospace; }
"""

_SECTIONS = (
    sections.license_section, sections.leakage_section, sections.duplicates_section, sections.rejects_section,
    sections.hours_section, sections.conversations_section, sections.shards_section, sections.quality_section,
    sections.durations_section, sections.turn_taking_section, sections.task_types_section,
)


def _catalog_section(con, catalog: str, build: tuple | None) -> sections.Section:
    s = sections.Section(con, "Catalog and build", "catalog")
    _, ((schema_version, inputs, allowed, table_rows, _),) = s.rows(
        "catalog", "SELECT schema_version, inputs, allowed_licenses, table_rows, microturn_version FROM catalog_meta")
    items = "".join(f"<li><code>{esc(i)}</code></li>" for i in inputs)
    s.add(f"<p>Catalog <code>{esc(catalog)}</code>, schema version {esc(schema_version)}, built from:</p>"
          f"<ul>{items}</ul>")
    if build is not None:
        s.queries.append(("build", _BUILD_SQL))
        built_at, version, commit, dirty, duckdb_version = build
        # Times sit in <time> elements only, so that a rerun's page differs from the last in them alone.
        s.add(f"<p>Built <time>{esc(built_at)}</time> UTC by:</p>")
        s.add(html_table(["microturn", "git commit", "uncommitted changes", "DuckDB"],
                         [(version, commit, dirty, duckdb_version)], empty=""))
    s.add(html_table(["table", "rows"], sorted(table_rows.items()), empty="No tables."))
    s.add(f'<p class="note">Licenses allowed for training: {esc(", ".join(allowed))}.</p>')
    return s


_BUILD_SQL = "SELECT built_at_utc, microturn_version, git_commit, git_dirty, duckdb_version FROM build_info"


def _page(catalog: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>microturn audit: {esc(catalog)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def render_report(catalog: str, *, max_table_rows: int = DEFAULT_MAX_TABLE_ROWS) -> str:
    """The HTML page of the audit report of ``catalog`` (a local DuckDB file)."""
    if max_table_rows < 1:
        raise ValueError(f"max_table_rows must be at least 1, got {max_table_rows}")
    rendered_at, rendered_by = utc_now(), code_version()
    with open_catalog(catalog) as con:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "catalog_meta" not in names:
            raise ValueError(f"{catalog} is not a microturn catalog (no catalog_meta); build one with "
                             "`microturn catalog build`")
        missing = [v for v in VIEW_NAMES if v not in names]
        if missing:
            raise ValueError(f"{catalog} was built by an older microturn: it lacks the view(s) {', '.join(missing)}; "
                             "rebuild it with `microturn catalog build`")
        build = con.execute(_BUILD_SQL).fetchall()[0] if "build_info" in names else None
        built_by = None if build is None else CodeVersion(microturn_version=build[1], git_commit=build[2],
                                                          git_dirty=build[3])
        verdict, queries = compute_verdict(con)
        parts = [sections_fn(con, max_table_rows) for sections_fn in _SECTIONS]
        parts.append(_catalog_section(con, catalog, build))
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in parts)
    body = "\n".join([
        "<h1>microturn audit report</h1>",
        stamp_html(catalog, None if build is None else build[0], built_by, rendered_at, rendered_by),
        verdict_html(verdict, queries),
        f'<p class="note">Durations are h:mm:ss. <span class="few">⚠ n=K</span> marks a statistic computed from '
        f"fewer than {MIN_VALUES} values: a rough estimate. Each section ends with the SQL it ran.</p>",
        f"<nav>Sections: {nav}</nav>",
        *(s.html() for s in parts),
    ])
    return _page(catalog, body)


def _publish(directory: str, name: str, data: bytes) -> None:
    """Write ``directory/name`` under a temporary name, then rename it into place."""
    final = FileSystems.join(directory, name)
    tmp = FileSystems.join(directory, f".{name}.tmp-{os.getpid()}")
    if "://" not in directory:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
        return
    with FileSystems.create(tmp) as f:
        f.write(data)
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])


def write_report(catalog: str, output: str, *, max_table_rows: int = DEFAULT_MAX_TABLE_ROWS) -> str:
    """Write the report of ``catalog`` as ``output/index.html``; returns its path.

    ``output`` is a local directory (created when missing) or a Beam filesystem URL. Tables
    show at most ``max_table_rows`` rows each, with a note counting the rest.
    """
    if max_table_rows < 1:
        raise ValueError(f"max_table_rows must be at least 1, got {max_table_rows}")
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file; give a directory for the report")
    page = render_report(catalog, max_table_rows=max_table_rows)
    if "://" not in output:
        os.makedirs(output, exist_ok=True)
    for name in _OLD_PLOT_FILES:
        path = FileSystems.join(output, name)
        if FileSystems.exists(path):
            FileSystems.delete([path])
    _publish(output, "index.html", page.encode("utf-8"))
    return FileSystems.join(output, "index.html")
