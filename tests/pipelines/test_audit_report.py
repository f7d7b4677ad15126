"""`microturn audit report`: index.html with PNG plots, opening from disk, every value escaped."""

from __future__ import annotations

import os
from html.parser import HTMLParser

import pytest

from catalog_fixtures import SCRIPT_LICENSE  # the fixtures outputs and catalog come from conftest.py
from microturn.pipelines.catalog.build import build_catalog
from microturn.pipelines.catalog.run import audit_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects the tags, image sources and links of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"] or "")
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key] or "")


def parse(path) -> tuple[str, Page]:
    text = open(path, encoding="utf-8").read()
    page = Page()
    page.feed(text)
    return text, page


def test_report_has_plots_beside_it_and_escapes_values(catalog, tmp_path, capsys):
    out = tmp_path / "report"
    assert audit_main(["report", "--catalog", catalog, "--output", str(out)]) == 0
    assert "index.html" in capsys.readouterr().out
    text, page = parse(out / "index.html")
    assert sorted(page.images) == ["durations.png", "gaps.png", "overlaps.png", "rejects.png", "splits.png"]
    for name in page.images:
        assert "/" not in name and ":" not in name  # relative, beside index.html
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    # Self-contained: no scripts, stylesheets or remote resources.
    assert "script" not in page.tags and "link" not in page.tags and page.links == []
    assert "http://" not in text and "https://" not in text
    # The license string with a <script> tag shows as text.
    assert SCRIPT_LICENSE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # The views' rows are there: leakage and license check.
    assert "remix in valid, its source c-1 in train" in text
    assert "LicenseRef-Corpus-X" in text and "not in allow-list" in text
    assert sorted(os.listdir(out)) == sorted([*page.images, "index.html"])  # no temporary files left


def test_rerun_replaces_the_report(catalog, tmp_path):
    out = tmp_path / "report"
    assert audit_main(["report", "--catalog", catalog, "--output", str(out)]) == 0
    first = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert audit_main(["report", "--catalog", catalog, "--output", str(out)]) == 0
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == first


def test_empty_catalog_gives_notes_instead_of_plots(catalog, tmp_path):
    empty = tmp_path / "empty"
    (empty / "rejects").mkdir(parents=True)  # an output whose table has no rows
    path = str(tmp_path / "empty.duckdb")
    with pytest.warns(UserWarning, match="no rows"):
        build_catalog([str(empty)], path)
    out = tmp_path / "report"
    # Written over the report of a full catalog: its plots go, as index.html no longer shows them.
    assert audit_main(["report", "--catalog", catalog, "--output", str(out)]) == 0
    assert audit_main(["report", "--catalog", path, "--output", str(out)]) == 0
    text, page = parse(out / "index.html")
    assert page.images == [] and os.listdir(out) == ["index.html"]
    for note in ("No conversations in the catalog.", "No gap values in the catalog.",
                 "No overlap values in the catalog.", "No rejects in the catalog.", "No leakage"):
        assert note in text


def test_synthetic_only_catalog_notes_the_missing_real_data(outputs, tmp_path):
    path = str(tmp_path / "synth.duckdb")
    with pytest.warns(UserWarning, match="remix"):
        build_catalog([outputs.synth], path)
    out = tmp_path / "report"
    assert audit_main(["report", "--catalog", path, "--output", str(out)]) == 0
    text, page = parse(out / "index.html")
    assert "gaps.png" in page.images and "No real gap values to compare against." in text


def test_report_errors(tmp_path, capsys):
    import duckdb

    plain = str(tmp_path / "plain.duckdb")
    duckdb.connect(plain).close()
    assert audit_main(["report", "--catalog", plain, "--output", str(tmp_path / "r")]) == 2
    assert "not a microturn catalog" in capsys.readouterr().err
    assert audit_main(["report", "--catalog", str(tmp_path / "missing.duckdb"), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("microturn audit report: error:") and "does not exist" in err
    assert not (tmp_path / "missing.duckdb").exists() and not (tmp_path / "r").exists()
