"""The audit report rendered by a real browser: Debian's headless ``chromium``.

* A screenshot of the fixture catalog's report is a real picture (not blank) with the verdict's
  coloured status cells in its first screen.
* Nothing overflows the page horizontally, for the fixture catalog and for a catalog with long
  tables, long unbroken file names and hostile values, in a wide and a narrow window: a copy of
  the report with a small script added (the report itself has none) records the page's
  ``scrollWidth`` against its ``clientWidth`` into ``<body>``, and ``--dump-dom`` reads it back
  after the page has loaded. The report before the single-file layout fails this check (its
  turn-taking table ran off the page).

Chromium is found on PATH (``scripts/test_deps.sh`` installs it); without it these tests skip,
except under CI (env ``CI`` set), where they fail. Every run gets its own profile directory.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from catalog_fixtures import conversation, reject, stats, write_fixture_outputs, write_table
from microturn.pipelines.catalog.build import build_catalog
from microturn.pipelines.catalog.report import write_report

_LAYOUT_PROBE = """<script>
addEventListener("load", () => {
  const page = document.documentElement;
  document.body.dataset.scrollWidth = page.scrollWidth;
  document.body.dataset.clientWidth = page.clientWidth;
});
</script>"""
_PROBE_RE = re.compile(r'data-scroll-width="(\d+)"[^>]*data-client-width="(\d+)"')
# The verdict's FAIL cell background (report.py's CSS: #fbe3e1).
_FAIL_RGB = (0xFB, 0xE3, 0xE1)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/test_deps.sh installs it (make test-deps)")
        pytest.skip("chromium is not installed (bash scripts/test_deps.sh installs it)")
    return found


def _run_chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(tmp_path: Path, page: Path, width: int, height: int) -> Image.Image:
    """The PNG chromium takes of ``page`` in a ``width`` x ``height`` window."""
    png = tmp_path / f"shot-{width}.png"
    _run_chromium(tmp_path, f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri())
    return Image.open(io.BytesIO(png.read_bytes())).convert("RGB")


def page_widths(tmp_path: Path, page: Path, width: int) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of ``page`` laid out in a window ``width`` pixels wide."""
    probe = tmp_path / f"probe-{page.parent.name}-{width}.html"
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text  # the report has no script: the probe is the only one
    probe.write_text(text.replace("</body>", _LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = _run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", f"--window-size={width},1000",
                        probe.as_uri())
    found = _PROBE_RE.search(dom)
    assert found, "the layout probe did not run: " + dom[:300]
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def long_catalog(tmp_path_factory) -> str:
    """A catalog whose tables run long: 260 conversations with long unbroken source names and
    licenses, many rejects with long messages, and hostile markup in names."""
    root = tmp_path_factory.mktemp("long")
    out = str(root / "out")
    convs = []
    for i in range(260):
        c = conversation(f"c-{i:04d}", "real", 30_000 + 100 * i, "LicenseRef-" + "Long" * 30, "train",
                         stats(0.5, 0.1, 4, 1, [100 + i, 200], [50]))
        c["source_uri"] = f"file:///data/{'very_long_folder_name_' * 12}/<b>call</b>{i}.wav"
        c["backends"] = {"diarizer": "pyannote/speaker-diarization-community-1" * 3, "vad": "silero"}
        convs.append(c)
    write_table(out, "conversations", convs)
    write_table(out, "rejects", [reject(f"{'x' * 300}-{i}.mp4", "decode" * 10, "MediaError" * 8, "y" * 400)
                                 for i in range(30)])
    path = str(root / "catalog.duckdb")
    build_catalog([out], path)
    return path


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture")
    outputs = write_fixture_outputs(str(root / "outputs"))
    catalog = str(root / "catalog.duckdb")
    build_catalog(outputs.all, catalog)
    return Path(write_report(catalog, str(root / "report")))


def test_screenshot_shows_the_report_with_its_verdict_first(fixture_report, tmp_path):
    shot = screenshot(tmp_path, fixture_report, 1280, 2000)
    assert shot.size == (1280, 2000)
    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page
    white = sum(n for n, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.95 * 1280 * 2000
    # The verdict's FAIL cells (the fixture fails the license check) are in the first screen.
    top = shot.crop((0, 0, 1280, 800))
    assert any(rgb == _FAIL_RGB for _, rgb in top.getcolors(maxcolors=1 << 20) or [])


@pytest.mark.parametrize("width", [1280, 700])
def test_nothing_overflows_the_page_horizontally(fixture_report, long_catalog, tmp_path, width):
    long_report = Path(write_report(long_catalog, str(tmp_path / "long")))
    assert "Showing the first 200 of 260 rows" in long_report.read_text(encoding="utf-8")
    for page in (fixture_report, long_report):
        scroll_width, client_width = page_widths(tmp_path, page, width)
        assert client_width > 0 and scroll_width <= client_width, (page, width, scroll_width, client_width)
