"""`microturn audit report`: one self-contained index.html with the verdict first, readable units,
small-sample markers, every value escaped, and the SQL of each section (which reruns as shown).

The fixture catalog's verdict is worked out by hand from catalog_fixtures.py: the kept records
are c-1 60 s, c-2 120 s, c-3 30 s (the first output's copy), s-1 90 s, s-2 45 s, r-1 60 s and
r-2 30 s, 435 s in all. The license check fails c-2 ('unknown', 120 s), c-3 (LicenseRef, 30 s),
s-2 (the <script> string, 45 s) and r-2 (no license, 30 s): 225 s, 51.7%; 'apache-2.0' passes
(the allow-list is case-insensitive). Rejects: decode 3, shard 1, synthesize 1, validate 1.
Leakage: c-2 (samples in train and test) and r-1 (valid, its source c-1 in train). Duplicates:
c-3 in two outputs, and one source sha256 ('1' * 64) behind c-1, c-2 and c-3.
"""

from __future__ import annotations

import base64
import html
import os
import re
from html.parser import HTMLParser

import duckdb
import pytest

from catalog_fixtures import SCRIPT_LICENSE, conversation, stats, write_table
from microturn.pipelines.catalog.audit import run_query
from microturn.pipelines.catalog.build import build_catalog
from microturn.pipelines.catalog.report import render_report
from microturn.pipelines.catalog.report_format import MIN_VALUES, few_marker, hms, hours_hms, percent, size
from microturn.pipelines.catalog.report_verdict import compute_verdict
from microturn.pipelines.catalog.run import audit_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE_NAME = "file:///data/<img src=x onerror=alert(1)>\x1b[31m\"'&amp;.wav"


class Page(HTMLParser):
    """Collects the tags, image sources, links and the text of each <pre> of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.pre: list[str] = []
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"] or "")
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key] or "")

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre[-1] += data


def parse(path) -> tuple[str, Page]:
    text = open(path, encoding="utf-8").read()
    page = Page()
    page.feed(text)
    return text, page


def report(catalog, out) -> tuple[str, Page]:
    assert audit_main(["report", "--catalog", catalog, "--output", str(out)]) == 0
    return parse(out / "index.html")


def test_units():
    assert hms(0) == "0:00:00" and hms(499) == "0:00:00" and hms(500) == "0:00:01"
    assert hms(30_016) == "0:00:30" and hms(3_600_000) == "1:00:00" and hms(360_000_000) == "100:00:00"
    assert hms(None) == "–"
    assert hours_hms(0.008338) == "0:00:30"  # the demo's real call, as the old report showed it
    assert percent(0.517241) == "51.7%" and percent(1.0) == "100.0%" and percent(0.0) == "0.0%"
    assert percent(0.0001) == "<0.1%" and percent(0.9999) == ">99.9%"
    assert size(1000) == "1,000 B" and size(3072) == "3.0 KiB" and size(5 * 2**20) == "5.0 MiB"


def test_small_sample_marker():
    assert few_marker(MIN_VALUES - 1) and "n=29" in few_marker(MIN_VALUES - 1)
    assert few_marker(MIN_VALUES) == "" and few_marker(None) == ""


def test_verdict_numbers_match_the_fixture(catalog):
    with duckdb.connect(catalog, read_only=True) as con:
        v, queries = compute_verdict(con)
    assert v.conversations == 7 and v.total_ms == 435_000
    assert v.by_origin == (("real", 3, 210_000), ("remix", 2, 90_000), ("synthetic", 2, 135_000))
    assert v.license_fail_ms == 225_000 and v.license_fail_conversations == 4
    assert round(v.license_fail_share or 0, 4) == 0.5172
    assert {r: (n, ms) for r, n, ms, _ in v.license_reasons} == {
        "unknown": (1, 120_000), "not in allow-list": (2, 75_000), "missing": (1, 30_000)}
    assert v.rejects == 6 and dict(v.rejects_by_stage) == {"decode": 3, "shard": 1, "synthesize": 1, "validate": 1}
    assert v.leakage_conversations == 2 and dict(v.leakage_by_kind) == {"multi_split": 1, "remix_source": 1}
    assert v.unchecked_remixes == 0
    assert v.duplicates_by_kind == (("conversation_id", 1, 2), ("source_sha256", 1, 3))
    assert len(queries) == 7


def test_report_is_one_file_with_the_verdict_first(catalog, tmp_path, capsys):
    out = tmp_path / "report"
    text, page = report(catalog, out)
    assert "index.html" in capsys.readouterr().out
    assert os.listdir(out) == ["index.html"]  # plots inline, no temporary files left
    assert len(page.images) == 6  # splits, rejects, aligner scores, durations, gaps, overlaps: data URLs
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    # Self-contained: no scripts, stylesheets or remote resources; links are in-page anchors.
    assert "script" not in page.tags and "link" not in page.tags
    assert all(link.startswith("#") for link in page.links)
    assert "http://" not in text and "https://" not in text
    # The verdict comes before every section, with its numbers in readable units.
    verdict = text[text.index('id="verdict"'):text.index("</section>")]
    assert text.index('id="verdict"') < text.index('id="licenses"')
    assert "<b>0:07:15</b> in 7 conversations" in verdict
    assert "<b>0:03:45</b> of 0:07:15 (<b>51.7%</b>) fails" in verdict
    assert "unknown: 0:02:00 in 1 conversation" in verdict and "missing: 0:00:30 in 1 conversation" in verdict
    assert "<b>6 rejects</b>, by stage: decode 3, shard 1, synthesize 1, validate 1" in verdict
    assert "<b>yes</b>: 2 conversations (multi_split 1, remix_source 1)" in verdict
    assert "1 source file behind several conversation ids (3 conversations" in verdict
    assert re.search(r'<tr class="fail">.*?License check', verdict)
    assert "0.00" not in verdict  # no fractions of hours


def test_sections_tables_and_quality_figures(catalog, tmp_path):
    text, _ = report(catalog, tmp_path / "report")
    for anchor in ("licenses", "leakage", "duplicates", "rejects", "hours", "conversations", "shards", "quality",
                   "durations", "turn-taking", "task-types", "catalog"):
        assert f'<section id="{anchor}">' in text
    # Every table scrolls inside the page.
    assert text.count("<table>") == text.count('<div class="scroll"><table>')
    # Per conversation: origin, split, duration, speakers, license with its problem, source, tools.
    conv = text[text.index('id="conversations"'):text.index('id="shards"')]
    assert "file:///data/c-2.wav" in conv and "unknown (fails: unknown)" in conv and "2: A, B" in conv
    assert "diarization: embedded\nvad: silero" in conv and "test+train" in conv and "0:02:00" in conv
    # Shards: path under its output, samples, bytes, sha256.
    shards = text[text.index('id="shards"'):text.index('id="quality"')]
    assert "/shard/train/train-000000.tar" in shards and "3.0 KiB (3,072)" in shards and "2" * 64 in shards
    # Quality: one of c-1's two words is interpolated; few values carry the marker with their n.
    quality = text[text.index('id="quality"'):text.index('id="durations"')]
    assert '50.0%</span> <span class="few"' in quality and "⚠ n=2" in quality
    assert "embedded" in quality and "diarization" in quality
    # Turn-taking: real conversations have 6 gaps in all (c-1 3, c-2 2, c-3 1): marked n=6.
    turns = text[text.index('id="turn-taking"'):text.index('id="task-types"')]
    assert '150 / 350 / 650 ms</span> <span class="few"' in turns and "⚠ n=6" in turns
    # Build time and commit: the catalog's build_info and the render.
    with duckdb.connect(catalog, read_only=True) as con:
        (version, commit), = con.execute("SELECT microturn_version, git_commit FROM build_info").fetchall()
    stamp = text[text.index('<p class="stamp">'):text.index('id="verdict"')]
    assert stamp.count("<time>") == 2 and f"microturn {version}" in stamp
    if commit:  # a git checkout (this repository); an installed wheel records none
        assert commit in stamp


def test_every_section_shows_sql_that_reruns_read_only(catalog, tmp_path):
    text, page = report(catalog, tmp_path / "report")
    assert text.count('<details class="sql">') == 13  # the verdict and twelve sections
    assert len(page.pre) >= 25
    for sql in page.pre:
        result = run_query(catalog, html.unescape(sql))  # the checks of `microturn audit` pass it
        assert result.columns


def test_no_marker_when_a_statistic_rests_on_30_values_or_more(tmp_path):
    out = str(tmp_path / "out")
    write_table(out, "conversations", [
        conversation("s-1", "synthetic", 600_000, "CC0-1.0", "train",
                     stats(0.9, 0.1, 40, 0, list(range(100, 140)), [])),
        conversation("c-1", "real", 60_000, "CC0-1.0", "train", stats(0.5, 0.1, 3, 0, [150, 250], [])),
    ])
    path = str(tmp_path / "catalog.duckdb")
    build_catalog([out], path)
    text, _ = report(path, tmp_path / "report")
    turns = text[text.index("<h3>Statistics by origin"):text.index("<h3>Speaker balance")]
    rows = dict(re.findall(r'<tr><td class="label">(\w+)</td>(.*?)</tr>', turns))
    assert '<td class="num">104 / 120 / 135 ms</td>' in rows["synthetic"]  # 40 gaps: no marker
    assert '160 / 200 / 240 ms</span> <span class="few"' in rows["real"] and "⚠ n=2" in rows["real"]
    assert "⚠ n=1" in rows["synthetic"]  # its rates pool one conversation


def test_hostile_names_are_escaped(tmp_path):
    out = str(tmp_path / "out")
    c = conversation("c-1", "real", 60_000, SCRIPT_LICENSE, "train", stats(0.5, 0.1, 3, 0, [150], []))
    c["source_uri"] = HOSTILE_NAME
    c["backends"] = {"diarizer": "<b>bold</b>"}
    write_table(out, "conversations", [c])
    write_table(out, "shards", [{"path": "train/<script>x</script>.tar", "split": "train", "index": 0, "bytes": 1,
                                 "samples": 1, "duration_ms": 1, "sha256": "a" * 64, "manifest": "m.parquet"}])
    path = str(tmp_path / "catalog.duckdb")
    build_catalog([out], path)
    page = render_report(path)
    for raw in (HOSTILE_NAME, SCRIPT_LICENSE, "<b>bold</b>", "<script>x</script>", "\x1b"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(1)&gt;\\x1b[31m&quot;&#x27;&amp;amp;.wav" in page
    assert "&lt;script&gt;x&lt;/script&gt;.tar" in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_long_tables_stop_with_a_note(catalog, tmp_path):
    page = render_report(catalog, max_table_rows=2)
    assert "Showing the first 2 of 7 rows" in page
    assert "microturn audit --max-rows 0" in page
    with pytest.raises(ValueError, match="at least 1"):
        render_report(catalog, max_table_rows=0)


def test_rerun_with_a_fixed_clock_gives_the_same_bytes(outputs, tmp_path, monkeypatch):
    # SOURCE_DATE_EPOCH stands in for the clock (build time and render time), so reruns match.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    path = str(tmp_path / "catalog.duckdb")
    build_catalog(outputs.all, path)
    out = tmp_path / "report"
    (out).mkdir()
    (out / "gaps.png").write_bytes(b"a plot of an older report")
    first, _ = report(path, out)
    assert os.listdir(out) == ["index.html"]  # the old layout's plot files go
    assert first.count("2026-01-01 00:00:00 UTC") == 2
    build_catalog(outputs.all, path)
    again, _ = report(path, out)
    assert again == first
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        render_report(path)


def test_a_rebuild_and_rerender_differ_only_inside_time_elements(outputs, tmp_path, monkeypatch):
    # What a retried pipeline does: the catalog is built again and the page rendered again, each
    # at another time. Orchestration compares the pages without their <time> elements.
    path = str(tmp_path / "catalog.duckdb")
    pages = []
    for epoch in ("1767225600", "1767312000"):  # 2026-01-01 and a day later
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        build_catalog(outputs.all, path)
        pages.append(report(path, tmp_path / f"report-{epoch}")[0])
    assert pages[0] != pages[1]
    assert "2026-01-02" not in re.sub(r"<time>[^<]*</time>", "", pages[1])
    assert re.sub(r"<time>[^<]*</time>", "", pages[0]) == re.sub(r"<time>[^<]*</time>", "", pages[1])


def test_empty_catalog_gives_notes_instead_of_plots(tmp_path):
    empty = tmp_path / "empty"
    (empty / "rejects").mkdir(parents=True)  # an output whose table has no rows
    path = str(tmp_path / "empty.duckdb")
    with pytest.warns(UserWarning, match="no rows"):
        build_catalog([str(empty)], path)
    text, page = report(path, tmp_path / "report")
    assert page.images == []
    for note in ("No conversations in the catalog.", "No gap values in the catalog.",
                 "No overlap values in the catalog.", "No rejects.", "No leakage",
                 "No scored words in the catalog.", "No shards in the catalog", "No duplicate content"):
        assert note in text
    assert "<b>0:00:00</b> in 0 conversations" in text and "License check</a></th><td class=\"status\">PASS" in text


def test_synthetic_only_catalog_notes_the_missing_real_data(outputs, tmp_path):
    path = str(tmp_path / "synth.duckdb")
    with pytest.warns(UserWarning, match="remix"):
        build_catalog([outputs.synth], path)
    text, page = report(path, tmp_path / "report")
    assert "No real gap values to compare against." in text
    assert "2 remix(es) not checked" in text  # r-1 and r-2: their sources are not in this catalog


def test_report_errors(tmp_path, capsys):
    plain = str(tmp_path / "plain.duckdb")
    duckdb.connect(plain).close()
    assert audit_main(["report", "--catalog", plain, "--output", str(tmp_path / "r")]) == 2
    assert "not a microturn catalog" in capsys.readouterr().err
    assert audit_main(["report", "--catalog", str(tmp_path / "missing.duckdb"), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("microturn audit report: error:") and "does not exist" in err
    assert not (tmp_path / "missing.duckdb").exists() and not (tmp_path / "r").exists()


def test_catalog_of_an_older_build_is_refused_with_the_fix(catalog, tmp_path, capsys):
    old = str(tmp_path / "old.duckdb")
    with duckdb.connect(old) as con:
        con.execute(f"ATTACH '{catalog}' AS src (READ_ONLY)")
        con.execute("CREATE TABLE catalog_meta AS SELECT * FROM src.catalog_meta")
    assert audit_main(["report", "--catalog", old, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "older microturn" in err and "microturn catalog build" in err
