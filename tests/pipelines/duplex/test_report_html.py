"""report.html of ``microturn eval interaction`` (pipelines/duplex/report_html.py).

* The page is one file: one timeline picture per item, every picture an inline PNG that
  decodes, no URL to anything outside the page (no http(s), no protocol-relative src/href, no
  script, stylesheet link or frame).
* Summary tables: a row per system per task present, with the report's figures and word
  sources; a missing figure is "-". Each item shows each system's per-item row.
* Text from the items (the model's words, item names) is escaped.
* The events and the model's text the pictures draw are read from the item files.

Shape suffixes follow microturn.schemas.legend: N audio samples.
"""

from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

from microturn.pipelines.duplex import systems
from microturn.pipelines.duplex.audio import SAMPLE_RATE
from microturn.pipelines.duplex.cascade import cascade_output
from microturn.pipelines.duplex.report_html import item_events, model_texts, timeline_png, write_report
from microturn.testing.duplex_items import write_items
from microturn.testing.speechlike import place

SYSTEMS = ["model", "cascade", "reference"]
REPORTS = {
    "model": {"smooth_turn_taking": {"n": 1, "tor": 0.0, "latency_s": None, "response_latency_s": None},
              "pause_handling": {"n": 1, "tor": 1.0}},
    "cascade": {"smooth_turn_taking": {"n": 1, "tor": 1.0, "latency_s": 0.8125, "response_latency_s": 0.75,
                                       "words": {"output.json": 1}},
                "user_interruption": {"n": 1, "tor": 1.0, "latency_s": 0.9, "stop_latency_s": 0.3,
                                      "yield_n": 1, "yield_rate": 1.0, "yield_s": 0.25}},
    "reference": {"smooth_turn_taking": {"n": 1, "tor": 1.0, "latency_s": 0.5},
                  "vap": {"items": 3, "shift_hold": {"n_shift": 3, "n_hold": 2, "shift_accuracy": 1.0,
                                                     "balanced_accuracy": 0.75, "auc": None, "n_after_reference": 1},
                          "backchannel_prediction": {"n_backchannel": 0, "n_negative": 4, "balanced_accuracy": None,
                                                     "auc": None}}},
}
ROWS = {
    "model": [{"item": "smooth_turn_taking/a-0", "task": "smooth_turn_taking", "tor": 0, "latency_s": None,
               "response_latency_s": None, "words": "timeline.jsonl"}],
    "cascade": [{"item": "smooth_turn_taking/a-0", "task": "smooth_turn_taking", "tor": 1, "latency_s": 0.8125,
                 "response_latency_s": 0.75, "words": "output.json"},
                {"item": "pause_handling/b-0", "task": "pause_handling", "tor": 0, "words": "output.json"}],
}
SAID = "hello <b>there</b> & you"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[str, list[str]]:
    """An interaction output tree of the three hand-made items: the cascade and the reference
    as the command writes them; "model" a speech-like answer with a timeline that says ``SAID``."""
    root = tmp_path_factory.mktemp("report")
    write_items(str(root / "items"))
    items = systems.find_items(str(root / "items"))
    out = str(root / "out")
    for item in items:
        for system in SYSTEMS:
            dest = os.path.join(out, system, item.rel)
            samples = systems.prepare_item(item, dest)
            if system == "reference":
                systems.write_reference(item, dest, samples)
            elif system == "cascade":
                answer = cascade_output(systems.item_input_N(item))
                systems.write_answer(item, dest, answer.wave_N, samples=samples, words=answer.words)
            else:
                systems.write_answer(item, dest, place(samples / SAMPLE_RATE, [(3.0, 4.5)]), samples=samples)
                with open(os.path.join(dest, "timeline.jsonl"), "w") as f:
                    for k in range(samples // 3200):
                        text = SAID if k == 15 else ("yes" if k == 16 else "")
                        f.write(json.dumps({"chunk": k, "start_ms": 200 * k, "text": text}) + "\n")
    return out, [i.rel for i in items]


@pytest.fixture(scope="module")
def page(tree) -> tuple[str, _Page]:
    out, rels = tree
    path = write_report(out, SYSTEMS, rels, REPORTS, ROWS)
    assert path == os.path.join(out, "report.html")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parsed = _Page()
    parsed.feed(text)
    return text, parsed


def test_one_inline_timeline_per_item_and_nothing_from_outside(page, tree):
    text, parsed = page
    timelines = [a for tag, a in parsed.tags if tag == "img" and a.get("class") == "timeline"]
    assert len(timelines) == len(tree[1]) == 3
    assert [a["alt"] for a in timelines] == [f"timeline of {rel}" for rel in tree[1]]
    for attrs in timelines:
        head, _, data = attrs["src"].partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(data, validate=True)
        from matplotlib.image import imread

        picture = imread(io.BytesIO(png), format="png")
        assert picture.shape[0] > 150 and picture.shape[1] > 800  # drawn at 11 in x 100 dpi
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith("data:"), (tag, attrs)
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_summary_tables_hold_a_row_per_system_and_task(page):
    _, parsed = page
    tables = {tuple(t[0]): t[1:] for t in parsed.tables}
    smooth = tables[("system", "n", "tor", "latency_s", "response_latency_s", "words")]
    assert smooth == [["model", "1", "0.000", "-", "-", "-"],
                      ["cascade", "1", "1.000", "0.812", "0.750", "output.json 1"],
                      ["reference", "1", "1.000", "0.500", "-", "-"]]
    assert tables[("system", "n", "tor", "words")] == [["model", "1", "1.000", "-"]]
    assert tables[("system", "n", "tor", "latency_s", "stop_latency_s", "response_latency_s", "yield_n", "yield_rate",
                   "yield_s", "words")] == [
        ["cascade", "1", "1.000", "0.900", "0.300", "-", "1", "1.000", "0.250", "-"]]
    vap = tables[("system", "category", "positives", "negatives", "balanced_accuracy", "auc")]
    assert vap == [["reference", "shift_hold", "shift 3", "hold 2", "0.750", "-"],
                   ["reference", "backchannel_prediction", "backchannel 0", "negative 4", "-", "-"]]
    assert not any("jsd" in h for h in tables)  # no system has backchannel items


def test_each_item_shows_each_systems_row(page):
    text, parsed = page
    per_item = [t for t in parsed.tables if t[0][1] not in ("n", "category")]  # not the summary tables
    # In item order (pause, smooth, interruption): rows only for the systems the scorer gave rows for.
    assert per_item == [[["system", "tor", "words"], ["cascade", "0", "output.json"]],
                        [["system", "tor", "latency_s", "response_latency_s", "words"],
                         ["model", "0", "-", "-", "timeline.jsonl"], ["cascade", "1", "0.812", "0.750", "output.json"]]]
    section = text[text.index("<h3>smooth_turn_taking/a-0"):]
    assert section.index("timeline.jsonl") < section.index('<img class="timeline"')


def test_item_text_is_escaped(page):
    text, parsed = page
    assert "<b>there</b>" not in text and "hello &lt;b&gt;there&lt;/b&gt; &amp; you yes" in text
    assert f"The model said: {SAID} yes" in "".join(parsed.text)


def test_events_and_texts_come_from_the_item_files(tree, tmp_path):
    out, _ = tree
    assert item_events(os.path.join(out, "model", "smooth_turn_taking/a-0")) == [("turn end", 2.5, 2.5)]
    assert item_events(os.path.join(out, "model", "pause_handling/b-0")) == [("pause", 1.8, 2.3)]
    assert item_events(os.path.join(out, "model", "user_interruption/c-0")) == [("interrupt", 2.0, 3.2)]
    (tmp_path / "backchannel.json").write_text(json.dumps({"window_s": 0.2, "distribution": [1.0],
                                                           "backchannels": [[1.0, 1.4], [3.0, 3.2]]}))
    assert item_events(str(tmp_path)) == [("backchannel", 1.0, 1.4), ("backchannel", 3.0, 3.2)]
    assert model_texts(os.path.join(out, "model", "pause_handling/b-0")) == [(3.0, SAID), (3.2, "yes")]
    assert model_texts(os.path.join(out, "cascade", "pause_handling/b-0")) == []


def test_a_picture_draws_every_lane():
    """Lanes are drawn where their speech is: the pixels of the user's bar (blue) lie left of the
    model's (orange)."""
    from matplotlib.image import imread

    png = timeline_png(4.0, [("user", [(0.2, 1.0)]), ("model", [(2.5, 3.5)])], [("turn end", 1.0, 1.0)],
                       [(2.6, "hi")])
    rgb = imread(io.BytesIO(png), format="png")[..., :3]
    blue = np.argwhere(np.all(np.abs(rgb - np.array([0.122, 0.467, 0.706])) < 0.02, axis=-1))
    orange = np.argwhere(np.all(np.abs(rgb - np.array([1.0, 0.498, 0.055])) < 0.02, axis=-1))
    assert blue.size and orange.size
    assert blue[:, 1].max() < orange[:, 1].min()  # columns: the user's speech ends before the model's starts
    assert blue[:, 0].max() < orange[:, 0].min()  # rows: the user's lane above the model's
