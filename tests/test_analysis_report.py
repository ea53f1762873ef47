"""The post-mortem report: files written, tables present, and the page rendered in real headless Chromium."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from poolwarden.analysis.report import FIGURES, bucket_for, main_analyze, write_report
from poolwarden.errors import ConfigurationError, DatabaseUnavailable
from poolwarden.policy import BreakerPolicy
from tests.analysis_scenario import create_empty_store, write_scenario

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def scenario_db(tmp_path: Path) -> Path:
    """A fresh file holding the scenario log."""
    path = tmp_path / "scenario.db"
    asyncio.run(write_scenario(path))
    return path


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    """A store with its schema and no events."""
    return create_empty_store(tmp_path / "empty.db")


def _non_white_share(png: Path) -> float:
    pixels = matplotlib.image.imread(png)[..., :3]
    return float(np.mean(np.any(pixels < 0.95, axis=-1)))


def test_report_writes_page_and_every_figure(scenario_db: Path, tmp_path: Path) -> None:
    """The page links each PNG, each PNG has drawing on it, and the tables carry the scenario's numbers."""
    page = write_report(scenario_db, tmp_path / "out" / "nested")
    assert page == tmp_path / "out" / "nested" / "report.html"
    text = page.read_text(encoding="utf-8")
    for name in FIGURES:
        assert f'src="{name}"' in text
        assert _non_white_share(page.parent / name) > 0.01, name
    assert "33 events on 4 streams" in text
    assert "ping:timed_out → reconnect:succeeded" in text
    assert "budget_exhausted" in text
    assert "<script" not in text


def test_report_of_an_empty_log_says_no_data(empty_db: Path, tmp_path: Path) -> None:
    """An empty log still gives a page and six figures, each a 'no data' panel."""
    page = write_report(empty_db, tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    assert "The log holds no events." in text
    for name in FIGURES:
        share = _non_white_share(page.parent / name)
        assert 0.0 < share < 0.2, name  # some text, mostly white


def test_main_analyze_prints_the_page_and_returns_zero(
    scenario_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main_analyze writes the report and prints where it went."""
    assert main_analyze(scenario_db, tmp_path / "r") == 0
    assert str(tmp_path / "r" / "report.html") in capsys.readouterr().out


def test_main_analyze_on_a_missing_log_raises_the_typed_error(tmp_path: Path) -> None:
    """A missing log raises DatabaseUnavailable (the CLI prints it) and writes no report."""
    with pytest.raises(DatabaseUnavailable):
        main_analyze(tmp_path / "missing.db", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_bucket_width_follows_the_span() -> None:
    """A short log gets second buckets, a day-long one hour-scale buckets."""
    import pandas as pd

    assert bucket_for(pd.Timedelta(seconds=60)) == "1s"
    assert bucket_for(pd.Timedelta(hours=1)) == "30s"
    assert bucket_for(pd.Timedelta(days=1)) == "30min"


# --- real headless Chromium ----------------------------------------------------------------------

_CHECK_PAGE = """<!DOCTYPE html>
<html><body>
<iframe id="report" src="report.html" style="width:1200px;height:900px"></iframe>
<pre id="result">pending</pre>
<script>
window.addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const found = [];
  for (const img of doc.images) {
    const item = {src: img.getAttribute("src"), complete: img.complete,
                  width: img.naturalWidth, height: img.naturalHeight, colours: 0, inked: 0};
    if (img.complete && img.naturalWidth > 0) {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const colours = new Set();
      let inked = 0, sampled = 0;
      for (let i = 0; i < data.length; i += 4 * 7) {
        sampled += 1;
        if (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240) inked += 1;
        if (colours.size < 64) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      }
      item.colours = colours.size;
      item.inked = inked / sampled;
    }
    found.push(item);
  }
  document.getElementById("result").textContent = JSON.stringify(found);
});
</script>
</body></html>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads Chromium's verdict, not the access log


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback (same origin for the page, its images and the check page)."""
    folder = tmp_path / "site"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _render_in_chromium(url: str, profile: Path) -> list[dict[str, Any]]:
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match is not None, done.stdout[-2000:]
    assert match.group(1) != "pending", "the check script did not run"
    result: list[dict[str, Any]] = json.loads(match.group(1))
    return result


@pytest.mark.browser
@pytest.mark.parametrize("log", ["scenario", "empty"])
def test_report_renders_in_headless_chromium(
    log: str, served: tuple[Path, str], tmp_path: Path, scenario_db: Path, empty_db: Path
) -> None:
    """In real Chromium every image of the page loads, has the PNG's size and is not blank."""
    folder, base = served
    write_report(scenario_db if log == "scenario" else empty_db, folder)
    (folder / "check.html").write_text(_CHECK_PAGE, encoding="utf-8")
    images = _render_in_chromium(f"{base}/check.html", tmp_path / "profile")
    assert [image["src"] for image in images] == list(FIGURES)
    for image in images:
        height, width = matplotlib.image.imread(folder / image["src"]).shape[:2]
        assert image["complete"], image
        assert (image["width"], image["height"]) == (width, height), image
        assert image["colours"] >= 3, image
        assert image["inked"] > 0.005, image


def test_report_with_a_policy_adds_the_whatif_section(scenario_db: Path, tmp_path: Path) -> None:
    """Given a policy file, the page ends with what that policy would have done to each breaker."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BreakerPolicy(consecutive_failures=2).to_dict()), encoding="utf-8")
    assert main_analyze(scenario_db, tmp_path / "r", policy) == 0
    text = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<h2>What-if</h2>" in text
    assert "whatif_opens" in text
    assert "conn-1/toy-mlp" in text.split("<h2>What-if</h2>")[1]


def test_a_bad_policy_file_is_a_configuration_error(scenario_db: Path, tmp_path: Path) -> None:
    """A policy file that is not JSON, or names an unknown knob, is refused before any report is written."""
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{consecutive_failures: 2", encoding="utf-8")
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"trip_on_full_moon": true}', encoding="utf-8")
    for path in (garbled, unknown, tmp_path / "missing.json"):
        with pytest.raises(ConfigurationError):
            main_analyze(scenario_db, tmp_path / "r", path)
    assert not (tmp_path / "r").exists()
