"""The HTML report in a real browser: headless Chromium opens it from disk, with no server and no
network, takes a screenshot, and reports whether every embedded image decoded.

Chromium is Debian's `chromium` package (`.ci/install-chromium`). Without the networking flags it
stalls on an offline machine; a fresh `--user-data-dir` per run keeps runs independent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import report
from tasks.paths import Paths
from tests.evaluation_data import REPORT, run_evaluation, write_pipeline_inputs

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed: run .ci/install-chromium")


def chromium(workdir: Path, *args: str) -> str:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    write_pipeline_inputs(root)
    run_evaluation(root)
    built = report.build_report(report.load_inputs(("ann", "cnn"), Paths(root)), REPORT, 42)
    return report.write_report(built, Paths(root))


def test_screenshot_of_the_report(report_file):
    shot = report_file.parent / "screenshot.png"
    chromium(report_file.parent, f"--screenshot={shot}", "--window-size=1280,4000",
             report_file.as_uri())
    assert shot.exists() and shot.stat().st_size > 50_000
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (4000, 1280, 3)
    # Not a blank page: text, tables and figures give many colours and a lot of contrast.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500 and pixels.std() > 20


def test_every_image_loads_and_the_headline_table_is_there(report_file):
    html = report_file.read_text()
    images = html.count("<img ")
    # The page's own script counts decoded images (complete, naturalWidth > 0) once it has loaded.
    dom = chromium(report_file.parent, "--virtual-time-budget=15000", "--dump-dom",
                   report_file.as_uri())
    assert f'data-images-loaded="{images}/{images}"' in dom, re.findall(r"data-images-[^ >]*", dom)
    table = re.search(r'<table[^>]* id="headline"[^>]*>(.*?)</table>', dom, re.S)
    assert table is not None
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>", table.group(1))
    assert rows == ["ANN", "CNN"]
