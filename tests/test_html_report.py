"""The HTML report of a real run (Ray, Spark, Delta), rendered in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from alray.cli import main
from alray.config import config_from_dict
from alray.html_report import (
    class_figure,
    funnel_figure,
    load_run,
    pca_2d,
    projection_figure,
    score_histograms,
    write_report,
)
from alray.lake import Lake
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


def _file_pool_run(demo_files, root, pool_format: str):
    """A run whose pool names image files: a CSV listing of ``id,uri`` or a folder of PNGs (``images``)."""
    table = pq.read_table(demo_files.pool).slice(0, 80)
    folder = root / "files"
    folder.mkdir(parents=True)
    rows = []
    for identifier, payload in zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True):
        (folder / f"{identifier}.png").write_bytes(payload)
        rows.append(f"{identifier},{folder / f'{identifier}.png'}")
    if pool_format == "csv":
        (root / "listing.csv").write_text("id,uri\n" + "\n".join(rows) + "\n")
        pool = {"path": str(root / "listing.csv"), "format": "csv"}
    else:
        pool = {"path": str(folder), "format": "images"}
    config = config_from_dict({
        "run": {"seed": 0, "run_id": f"files-{pool_format}"}, "pool": pool,
        "model": {"checkpoint": demo_files.checkpoint}, "score": {"mc_samples": 4, "batch_size": 64},
        "selection": {"n_samples": 12, "engine": "local",
                      "strategies": [{"input": "embeddings", "strategy": "diversity"}]},
        "output": {"path": str(root / "lake")}})
    run_pipeline(config, progress=Progress(quiet=True))
    path = write_report(config, config.run.run_id, root / "report")
    return config, path, path.read_text()


@pytest.fixture(scope="module", params=["csv", "images"])
def file_pool_report(request, ray_session, demo_files, tmp_path_factory):
    return _file_pool_run(demo_files, tmp_path_factory.mktemp(request.param), request.param)


def test_thumbnails_come_from_listings_and_folders_of_files(file_pool_report):
    config, _, page = file_pool_report
    cards = re.findall(r"<div class='thumb'>(.*?)</div></div>", page)
    assert len(cards) == 12 and "(no image)" not in page
    assert len(DATA_PNG.findall(page)) == 4 + 12
    # the first card is rank 1, with the image of the file the pool names for that id
    first = re.search(r"<img alt='([^']+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
    assert first is not None
    identifier = first.group(1)
    expected = Image.open(io.BytesIO(_pool_image(config, identifier))).convert("L")
    shown = Image.open(io.BytesIO(base64.b64decode(first.group(2)))).convert("L")
    assert shown.size == (96, 96)
    assert np.array_equal(np.asarray(shown)[::3, ::3], np.asarray(expected))  # scaled up 3x, nearest


def _pool_image(config, identifier: str) -> bytes:
    folder = config.pool.path if config.pool.format == "images" else str(config.pool.path).rsplit("/", 1)[0] + "/files"
    return open(f"{folder}/{identifier.removesuffix('.png')}.png", "rb").read()


def _legend_counts(figure) -> list[dict[str, int]]:
    return [{re.sub(r" \(\d+\)$", "", t.get_text()): int(re.search(r"\((\d+)\)$", t.get_text()).group(1))
             for t in ax.get_legend().get_texts()} for ax in figure.axes if ax.get_visible() and ax.get_legend()]


def test_every_figure_labels_its_axes_and_counts_its_legends(report):
    config, _, _ = report
    data = load_run(config, "report-1")
    n_scored, n_selected, n_labeled = data.features.num_rows, int(data.selected.sum()), int(data.labeled.sum())
    figures = {"funnel": funnel_figure(data.run), "scores": score_histograms(data),
               "projection": projection_figure(data), "classes": class_figure(data)}
    for name, figure in figures.items():
        for ax in figure.axes:
            if ax.get_visible():
                assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_xlabel(), ax.get_ylabel())
    (projection,) = _legend_counts(figures["projection"])
    assert projection == {"other scored rows": n_scored - n_selected - n_labeled,
                          "labeled, in the pool": n_labeled, "selected": n_selected}
    assert n_selected == 30 and n_labeled == 50
    assert _legend_counts(figures["classes"]) == [{"all scored": n_scored, "selected": n_selected}]
    histograms = _legend_counts(figures["scores"])
    assert len(histograms) >= 6
    for legend, ax in zip(histograms, [a for a in figures["scores"].axes if a.get_visible()], strict=True):
        column = data.features.column(ax.get_xlabel()).to_numpy(zero_copy_only=False).astype(float)
        assert legend == {"all scored": int(np.isfinite(column).sum()),
                          "selected": int(np.isfinite(column[data.selected]).sum())}


def test_the_reject_reasons_are_listed_with_counts_and_ids(report):
    config, _, page = report
    rejects = Lake.from_output(config.output).read_run("rejects", "report-1").to_pylist()
    assert rejects  # the demo subset holds corrupt images
    section = page[page.index("<h2>Rejected rows</h2>"):]
    for reason in {r["reason"] for r in rejects}:
        count = sum(r["reason"] == reason for r in rejects)
        assert re.search(rf"<td>{re.escape(reason)}</td><td class='num'>{count}</td><td>corrupt-\d+", section), reason


def test_the_report_uses_the_config_the_run_recorded(report, tmp_path, capsys):
    config, _, page = report
    # Another job's config on the same lake: another pool, model and labeled set.
    other = config.model_dump(mode="json")
    other["pool"]["path"] = str(tmp_path / "another-pool")
    other["labeled"]["path"] = None
    other["model"]["checkpoint"] = str(tmp_path / "another-model.pt")
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    assert main(["report", "report-1", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    again = (tmp_path / "out" / "report-1.html").read_text()
    assert f"<b>{config.pool.path} (parquet)</b>" in again and "another-pool" not in again
    assert f"<b>{config.labeled.path}</b>" in again
    assert len(DATA_PNG.findall(again)) == len(DATA_PNG.findall(page)) == 4 + 24
    # --lake finds the run without a config of that lake
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump({**other, "output": {"path": str(tmp_path / "no-lake")}}))
    assert main(["report", "report-1", "--config", str(elsewhere), "--lake", config.output.path,
                 "--out", str(tmp_path / "lake-out"), "--json"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written == {"run_id": "report-1", "path": str(tmp_path / "lake-out" / "report-1.html")}
    assert len(DATA_PNG.findall((tmp_path / "lake-out" / "report-1.html").read_text())) == 4 + 24


def test_cli_writes_the_report_and_names_a_missing_run(report, tmp_path, capsys):
    config, _, _ = report
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["report", "report-1", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report-1.html").stat().st_size > 10_000
    assert main(["report", "no-such-run", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no-such-run" in capsys.readouterr().err


def _render_in_chromium(path, page: str, tmp_path) -> str:
    """Screenshot the page and count, after load, the images the browser decoded: every one of them."""
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
    return dom.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_renders_in_headless_chromium(report, tmp_path):
    _, path, page = report
    dom = _render_in_chromium(path, page, tmp_path)
    # the reject reasons are a table the browser lays out: a header and one row per reason
    table = re.search(r"<h2>Rejected rows</h2><table class=\"grid\">(.*?)</table>", dom, re.S)
    assert table is not None and "<th>reason</th>" in table.group(1)
    assert len(re.findall(r"<tr>", table.group(1))) == 1 + len(re.findall(r"<td class=\"num\">", table.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_a_file_pool_report_renders_its_thumbnails_in_headless_chromium(file_pool_report, tmp_path):
    _, path, page = file_pool_report
    _render_in_chromium(path, page, tmp_path)
