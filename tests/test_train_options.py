"""Issue 12 training options: balanced class weights, best epoch by macro-F1, per-class recall summary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TOPICS
from tests.test_train import _tiny_cfg
from vdcnn import train as train_mod
from vdcnn.train import class_weights, load_training_data, train

COUNTS = {"business": 60, "sports": 20, "tech": 8}


def write_imbalanced_csv(path: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for label, n in COUNTS.items():
        for _ in range(n):
            a, b = rng.sample(TOPICS[label], 2)
            rows.append(f'"{a.capitalize()}, and {b}.",{label}')
    rng.shuffle(rows)
    path.write_text("\n".join(["text,label", *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def imbalanced_csv(tmp_path: Path) -> Path:
    return write_imbalanced_csv(tmp_path / "imbalanced.csv")


def test_balanced_weights_are_inverse_class_frequencies():
    labels = np.array([0] * 60 + [1] * 20 + [2] * 8 + [4] * 2)
    w = class_weights(labels, 5)
    n = len(labels)
    torch.testing.assert_close(w, torch.tensor([n / (5 * 60), n / (5 * 20), n / (5 * 8), 0.0, n / (5 * 2)]))
    # Each class then weighs the same in total: count x weight = n / K.
    counts = np.bincount(labels, minlength=5)
    assert np.allclose((counts * w.numpy())[counts > 0], n / 5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_balanced_training_weights_the_loss(imbalanced_csv, tmp_path, monkeypatch, smoothing):
    seen = []
    real = train_mod.F.cross_entropy

    def spy(*args, **kwargs):
        if "label_smoothing" in kwargs:  # the training loss, not the validation report's
            seen.append((kwargs.get("weight"), kwargs["label_smoothing"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod.F, "cross_entropy", spy)
    cfg = _tiny_cfg(imbalanced_csv, epochs=1, class_weights="balanced", label_smoothing=smoothing)
    lines: list[str] = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    train_labels = load_training_data(cfg).train.labels
    expected = class_weights(train_labels, 3)
    assert seen and all(w is not None and torch.equal(w.cpu(), expected) and s == smoothing for w, s in seen)
    assert expected[2] > expected[1] > expected[0], "the rarest class weighs most"
    assert np.isfinite(result.history[0]["train_loss"])
    assert any(line.startswith("  class weights (balanced): business ") for line in lines)

    seen.clear()
    train(_tiny_cfg(imbalanced_csv, epochs=1), tmp_path / "plain", progress=False, log=lambda s: None)
    assert seen and all(w is None for w, _ in seen), "class_weights none leaves the loss unweighted"


def test_select_by_macro_f1_picks_the_epoch_with_the_best_macro_f1(imbalanced_csv, tmp_path):
    cfg = _tiny_cfg(imbalanced_csv, epochs=5, select_by="macro_f1")
    cfg.set("data.val_fraction", 0.3)
    lines: list[str] = []
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    f1 = [r["val_macro_f1"] for r in rows]
    best = int(np.argmax(f1)) + 1  # the first epoch reaching the highest macro-F1
    assert result.best_epoch == best
    assert [r["best"] for r in rows] == [f > max(f1[:i], default=-1) for i, f in enumerate(f1)]
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["best"]["epoch"] == best and meta["best"]["select_by"] == "macro_f1"
    assert meta["results"]["best_val_macro_f1"] == pytest.approx(f1[best - 1])


def test_summary_reports_per_class_recall(imbalanced_csv, tmp_path):
    cfg = _tiny_cfg(imbalanced_csv, epochs=1)
    cfg.set("data.val_fraction", 0.3)
    lines: list[str] = []
    train(cfg, tmp_path / "run", progress=False, log=lines.append)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    recall = meta["results"]["val_per_class_recall"]
    assert list(recall) == ["business", "sports", "tech"] and all(0 <= v <= 1 for v in recall.values())
    assert meta["results"]["test_per_class_recall"] is None  # a single file has no test split
    # The table: a header, then one line per class with its recall and validation support.
    at = next(i for i, line in enumerate(lines) if line.split() == ["recall", "validation"])
    val = load_training_data(cfg).val
    support = np.bincount(val.labels, minlength=3)
    for k, label in enumerate(["business", "sports", "tech"]):
        cells = lines[at + 1 + k].split()
        assert cells[0] == label and float(cells[1]) == pytest.approx(recall[label] * 100, abs=0.06)
        assert cells[3].strip("()") == str(support[k])
