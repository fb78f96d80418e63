"""benchmarks/accuracy.py (and fast_path.py) reuse finished runs and cached probabilities only when
they were made by the same recipe, on the same rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.accuracy import run_probabilities, train_or_reuse
from vdcnn.checkpoint import read_config
from vdcnn.config import RunConfig
from vdcnn.data import Splits, TextDataset
from vdcnn.errors import ConfigError


def test_a_finished_run_of_another_recipe_is_not_reused(tmp_path):
    run = tmp_path / "ag_news_quick-seed0"
    run.mkdir()
    trained = RunConfig()
    trained.set("data.dataset", "ag_news")
    trained.set("train.lr", 0.003)
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model": {}, "encoder": {}, "labels": [],
                                                "run": trained.to_dict(), "results": {"test_acc": 0.9}}))
    assert train_or_reuse(trained, run)["results"] == {"test_acc": 0.9}  # the same recipe: reused
    edited = RunConfig.from_dict(trained.to_dict())
    edited.set("train.lr", 0.01)  # the preset was edited since
    with pytest.raises(ConfigError, match="train.lr"):
        train_or_reuse(edited, run)


def _dataset(texts: list[str], labels: list[int], names: list[str]) -> TextDataset:
    return TextDataset(texts, np.array(labels), names, "test rows")


def test_cached_probabilities_of_other_rows_are_computed_again(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = read_config(run)
    names = meta["labels"]
    first = _dataset(["the striker scored a late goal", "shares fell after the bank cut its forecast"], [1, 0], names)
    other = _dataset(["engineers tested a quantum computer chip"] * 3, [2, 2, 2], names)
    splits = Splits(train=first, val=first, test=first, val_note="", label_rule=None)
    probs = run_probabilities(run, meta, splits, first)
    assert probs["val"].shape == (2, 3)
    assert np.array_equal(run_probabilities(run, meta, splits, first)["val"], probs["val"])  # cached
    moved = Splits(train=other, val=other, test=other, val_note="", label_rule=None)
    again = run_probabilities(run, meta, moved, other)
    assert again["val"].shape == (3, 3) and again["holdout"].shape == (3, 3)
