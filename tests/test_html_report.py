"""The HTML report of a real run (Ray, Spark, Delta), rendered in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image

from alray.cli import main
from alray.html_report import pca_2d, write_report
from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import demo_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DATA_PNG = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def report(ray_session, spark, demo_files, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    config = demo_config(demo_files, lake)
    config.run.run_id = "report-1"
    run_pipeline(config, progress=Progress(quiet=True))
    path = write_report(config, "report-1", tmp_path_factory.mktemp("report"))
    return config, path, path.read_text()


def test_report_has_every_section(report):
    _, _, page = report
    for title in ("Funnel", "Scores", "Embeddings (PCA)", "Predicted classes", "Top selected", "coverage radius"):
        assert title in page
    assert "report-1" in page


def test_figures_are_real_non_uniform_pngs(report):
    _, _, page = report
    payloads = [base64.b64decode(p) for p in DATA_PNG.findall(page)]
    # four figures plus the thumbnails of the 24 top selected demo images
    assert len(payloads) == 4 + 24
    for payload in payloads:
        image = Image.open(io.BytesIO(payload))
        image.load()
        pixels = np.asarray(image.convert("L"))
        assert pixels.size > 0 and pixels.std() > 0


def test_pca_keeps_the_largest_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([10.0, 3.0, 0.1, 0.1, 0.1])
    points = pca_2d(x)
    assert points.shape == (200, 2)
    assert points[:, 0].std() > points[:, 1].std() > 1.0


def test_cli_writes_the_report_and_names_a_missing_run(report, tmp_path, capsys):
    config, _, _ = report
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["report", "report-1", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report-1.html").stat().st_size > 10_000
    assert main(["report", "no-such-run", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no-such-run" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_renders_in_headless_chromium(report, tmp_path):
    _, path, page = report
    # A copy that records, after load, how many images the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "document.body.setAttribute('data-decoded', [...document.images].filter("
                                  "i => i.complete && i.naturalWidth > 0).length);});</script></body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert "Uncaught" not in done.stderr and "ERROR:CONSOLE" not in done.stderr, done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200) and pixels.std() > 10
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr, dom.stderr[-2000:]
    decoded = re.search(r'data-decoded="(\d+)"', dom.stdout)
    assert decoded is not None and int(decoded.group(1)) == len(DATA_PNG.findall(page))
