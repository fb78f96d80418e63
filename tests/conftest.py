"""Shared fixtures: a tiny realistic dataset and a trained tiny run folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vdcnn.cli.main import app

# Tiny model settings so a training run takes a couple of seconds on 2 cores.
# `--config vdcnn9`: the paper recipe, not the automatic one, so each test sets exactly what it varies.
TINY = ["--config", "vdcnn9", "--set", "model.channels=[8,16,32,64]", "--set", "model.fc_dims=[32]", "--set", "model.embedding_dim=8"]

TOPICS = {
    "sports": ["the striker scored a late goal", "the team won the championship final", "a coach praised the defence",
               "fans cheered as the match went to extra time", "the tennis star reached the semifinal"],
    "tech": ["the company unveiled a faster processor", "a software update fixes a security flaw",
             "researchers built a new battery for phones", "the startup released an open source database",
             "engineers tested a quantum computer chip"],
    "business": ["shares fell after the bank cut its forecast", "the retailer reported higher quarterly profit",
                 "oil prices rose on supply worries", "the merger was approved by regulators",
                 "investors bought bonds as inflation cooled"],
}


def write_topic_csv(path: Path, rows_per_class: int = 40, seed: int = 0) -> Path:
    """A small CSV (header text,label) of realistic short news sentences, 3 classes."""
    rng = random.Random(seed)
    rows = []
    for label, phrases in TOPICS.items():
        for _ in range(rows_per_class):
            a, b = rng.sample(phrases, 2)
            rows.append(f'"{a.capitalize()}, and {b}.",{label}')
    rng.shuffle(rows)
    path.write_text("\n".join(["text,label", *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def topic_csv(tmp_path: Path) -> Path:
    return write_topic_csv(tmp_path / "topics.csv")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder trained for 2 epochs on the topic CSV (shared, read-only for tests)."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = write_topic_csv(root / "topics.csv")
    out = root / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--max-length", "64",
                                      "--epochs", "2", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.003",
                                      "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    return out


def real_data_dir() -> Path:
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root or not (Path(root) / "ag_news" / "test.csv.gz").exists():
        pytest.skip("real AG News rows not available: set VDCNN_DATA_DIR (CI sets ../shared/data)")
    return Path(root)
