"""One table of score columns: the scorer, the features schema, the quality metrics, the report, the config and
the README agree."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from alray.config import StrategyConfig
from alray.html_report import DRAWN_SCORES
from alray.quality import QUALITY_COLUMNS, statistics_of
from alray.scoring import all_scores, all_scores_torch
from alray.tables import (
    IMAGE_COLUMNS,
    MC_SCORES,
    RANKING_COLUMNS,
    RANKING_SCHEMA,
    RESERVED_COLUMNS,
    SCORE_COLUMNS,
    UNCERTAINTY_SCORES,
    features_schema,
)


def test_the_scorers_compute_exactly_the_mc_scores():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 3))
    assert set(all_scores(probs)) - {"probs", "pred"} == set(MC_SCORES)
    assert set(all_scores_torch(torch.from_numpy(probs))) - {"probs", "pred"} == set(MC_SCORES)


def test_features_schema_holds_every_score_and_quality_metric():
    names = features_schema(pa.schema([])).names
    assert set(SCORE_COLUMNS) <= set(names)
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    assert set(statistics_of(pixels).quality) == set(QUALITY_COLUMNS)
    assert set(IMAGE_COLUMNS) == {*QUALITY_COLUMNS, "size_in_bytes"}


def test_report_and_config_read_the_same_table():
    assert set(DRAWN_SCORES) <= set(SCORE_COLUMNS) and set(UNCERTAINTY_SCORES) <= set(DRAWN_SCORES)
    described = StrategyConfig.model_fields["input"].description or ""
    assert all(score in described for score in UNCERTAINTY_SCORES)
    assert set(RANKING_COLUMNS) == set(RANKING_SCHEMA.names)


def test_the_readme_lists_every_reserved_column():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("A metadata\ncolumn may not take a name the features table gives itself")
    paragraph = readme[start: readme.index("\n\n", start)]
    listed = set(re.findall(r"`([a-z_]+)`", paragraph.split("The columns a run reads")[0]))
    assert listed == set(RESERVED_COLUMNS)
