"""`vdcnn compare`: grid training into one folder, tables and plots, collecting, resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vdcnn.train
from vdcnn.cli.main import app
from vdcnn.checkpoint import read_config
from vdcnn.compare import collect_runs, format_table, plan_variants, run_compare
from vdcnn.config import RunConfig
from vdcnn.errors import CheckpointError, ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SUBJECTS = {
    "sports": ["The home side", "The visiting team", "The young striker", "The veteran goalkeeper", "The coach"],
    "business": ["The central bank", "Shares of the retailer", "The oil company", "Investors", "The chip maker"],
    "science": ["The research team", "Astronomers", "The new telescope", "Biologists", "The space agency"],
}
PREDICATES = {
    "sports": ["won the derby in the final minute", "scored twice in the second half", "lost the cup final on penalties",
               "signed a two-year contract extension", "set a new league record on Sunday"],
    "business": ["raised interest rates by a quarter point", "reported higher quarterly profits",
                 "cut its forecast for next year", "sold bonds to fund a new factory", "fell sharply after the earnings"],
    "science": ["found water ice on a distant moon", "sequenced the genome of a rare frog",
                "measured the expansion of the universe", "launched a probe toward the sun",
                "observed a new species in the rainforest"],
}


def _rows(offset: int, per_class: int) -> list[tuple[str, str]]:
    rows = []
    for label in SUBJECTS:
        for i in range(per_class):
            k = i + offset
            rows.append((f"{SUBJECTS[label][k % 5]} {PREDICATES[label][(k * 3 + k // 5) % 5]}.", label))
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A folder with train.csv (60 rows) and test.csv (15 rows), 3 classes."""
    folder = tmp_path_factory.mktemp("data")
    for split, offset, n in (("train", 0, 20), ("test", 3, 5)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(_rows(offset, n))
    return folder


TINY = ["--max-length", "64", "--epochs", "1", "--batch-size", "16", "--threads", "1",
        "--set", "model.channels=[8,16,32,64]", "--set", "model.fc_dims=[32]", "--no-progress"]


def _cli(*args: str):
    return CliRunner().invoke(app, ["compare", *args], catch_exceptions=False)


def _base(dataset: Path) -> RunConfig:
    cfg = RunConfig()
    for key, value in {"data.dataset": str(dataset), "encoder.max_length": 64, "train.epochs": 1,
                       "train.batch_size": 16, "train.threads": 1, "model.channels": [8, 16, 32, 64],
                       "model.fc_dims": [32]}.items():
        cfg.set(key, value)
    return cfg


def _count_train(monkeypatch) -> list[tuple[Path, bool]]:
    calls: list[tuple[Path, bool]] = []
    real = vdcnn.train.train

    def spy(cfg, out_dir, resume=False, **kw):
        calls.append((Path(out_dir), resume))
        return real(cfg, out_dir, resume=resume, **kw)

    monkeypatch.setattr(vdcnn.train, "train", spy)
    return calls


def test_plan_variants_copies_and_names(dataset):
    base = _base(dataset)
    base.model["stages"] = (1, 1, 1, 1)
    variants = plan_variants(base, [9, 49], [False, True])
    assert [n for n, _ in variants] == ["d9-plain", "d9-shortcut", "d49-plain", "d49-shortcut"]
    for name, cfg in variants:
        assert cfg.model["stages"] is None and cfg.model["depth"] == int(name[1:].split("-")[0])
        assert cfg.model["shortcut"] == name.endswith("shortcut")
        assert cfg.to_dict()["train"] == base.to_dict()["train"] and cfg.data == base.data
    assert base.model["stages"] == (1, 1, 1, 1)  # the base is untouched
    with pytest.raises(ConfigError, match="depths"):
        plan_variants(base, [10], [True])


def test_compare_cli_trains_and_writes_outputs(dataset, tmp_path, monkeypatch):
    calls = _count_train(monkeypatch)
    out = tmp_path / "study"
    result = _cli("--dataset", str(dataset), "--depths", "9", "--shortcuts", "both", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    assert [p.name for p, _ in calls] == ["d9-plain", "d9-shortcut"]
    assert "d9-plain" in result.output and "d9-shortcut" in result.output and "compare.png" in result.output

    md = (out / "compare.md").read_text()
    assert md.count("| d9-") == 2 and "best val acc" in md
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["depth"], r["shortcut"]) for r in rows] == [("d9-plain", "9", "False"),
                                                                        ("d9-shortcut", "9", "True")]
    assert all(r["status"] == "finished" and float(r["test_acc"]) >= 0 and int(r["parameters"]) > 0 for r in rows)
    assert int(rows[1]["parameters"]) > int(rows[0]["parameters"])  # projection shortcuts add weights
    for png in ("compare.png", "grad_norms.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    meta = read_config(out / "d9-shortcut")
    assert meta["model"]["shortcut"] is True and meta["model"]["channels"] == [8, 16, 32, 64]

    # Collecting finished runs trains nothing and gives the same rows.
    def no_training(*a, **k):
        raise AssertionError("collect must not train")

    monkeypatch.setattr(vdcnn.train, "train", no_training)
    result = _cli(str(out / "d9-plain"), str(out / "d9-shortcut"), "--out", str(tmp_path / "collected"))
    assert result.exit_code == 0, result.output
    collected = list(csv.DictReader(open(tmp_path / "collected" / "compare.csv", newline="")))
    assert [(r["name"], r["test_acc"]) for r in collected] == [(r["name"], r["test_acc"]) for r in rows]
    assert (tmp_path / "collected" / "grad_norms.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_trains_only_missing_variants(dataset, tmp_path, monkeypatch):
    calls = _count_train(monkeypatch)
    out = tmp_path / "study"
    logs: list[str] = []
    run_compare(_base(dataset), [9], [True], out, log=logs.append, progress=False)
    assert calls == [(out / "d9-shortcut", False)]
    first = read_config(out / "d9-shortcut")["results"]

    calls.clear()
    # An extra variant, interrupted after one step: the finished one is skipped, the tables keep it.
    with pytest.raises(vdcnn.train.TrainingInterrupted, match="vdcnn compare"):
        run_compare(_base(dataset), [9], [True, False], out, log=logs.append, progress=False, max_steps=1)
    assert calls == [(out / "d9-plain", False)]
    assert "d9-shortcut" in (out / "compare.md").read_text() and "d9-plain" not in (out / "compare.md").read_text()

    calls.clear()
    rows = run_compare(_base(dataset), [9], [True, False], out, log=logs.append, progress=False)
    assert calls == [(out / "d9-plain", True)]  # resumed, not restarted
    assert [r["name"] for r in rows] == ["d9-shortcut", "d9-plain"]
    assert read_config(out / "d9-shortcut")["results"] == first
    assert any("skipped" in line for line in logs)
    assert "d9-plain" in format_table(rows) and "d9-plain" in (out / "compare.md").read_text()

    # Same folder, another recipe: refused before anything trains.
    calls.clear()
    other = _base(dataset)
    other.set("train.lr", 0.5)
    with pytest.raises(ConfigError, match="train.lr"):
        run_compare(other, [9], [True], out, log=logs.append, progress=False)
    assert calls == []


def test_collect_errors_and_cli_checks(tmp_path, dataset):
    with pytest.raises(CheckpointError, match="not a run folder"):
        collect_runs([tmp_path])
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--epochs", "2"])
    assert result.exit_code != 0 and "do not apply" in str(result.exception)
    result = CliRunner().invoke(app, ["compare", "--dataset", str(dataset), "--shortcuts", "maybe"])
    assert result.exit_code == 2 and "'maybe'" in result.output and "--shortcuts" in result.output  # a click choice
    result = CliRunner().invoke(app, ["compare", "--dataset", str(dataset), "--depths", "9,x"])
    assert "--depths" in str(result.exception)


def test_format_table_aligned():
    rows = [{"name": "d9-plain", "depth": 9, "shortcut": False, "parameters": 2_700_000, "gflops": 0.62,
             "best_val_acc": 0.87, "test_acc": 0.865, "final_train_loss": 0.41, "epochs": 3, "wall_time_s": 312.0,
             "status": "finished"},
            {"name": "d49-shortcut", "depth": 49, "shortcut": True, "parameters": 8_100_000, "gflops": 2.9,
             "best_val_acc": None, "test_acc": None, "final_train_loss": 0.52, "epochs": 1, "wall_time_s": None,
             "status": "unfinished"}]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines[:2]}) == 1
    assert "87.00 %" in lines[2] and "5m 12s" in lines[2] and "(unfinished)" in lines[3]


def test_diverged_variant_does_not_stop_the_study(dataset, tmp_path, monkeypatch):
    real = vdcnn.train.train

    def diverge_plain(cfg, out_dir, resume=False, **kw):
        if Path(out_dir).name == "d9-plain":
            with pytest.raises(vdcnn.train.TrainingInterrupted):
                real(cfg, out_dir, resume=resume, **{**kw, "max_steps": 1})
            raise vdcnn.train.TrainingDiverged("loss became nan")
        return real(cfg, out_dir, resume=resume, **kw)

    monkeypatch.setattr(vdcnn.train, "train", diverge_plain)
    out = tmp_path / "study"
    rows = run_compare(_base(dataset), [9], [False, True], out, log=lambda s: None, progress=False)
    assert [(r["name"], r["status"]) for r in rows] == [("d9-plain", "diverged"), ("d9-shortcut", "finished")]
    assert "d9-plain (diverged)" in (out / "compare.md").read_text()
    # Collected on its own, the stopped run shows as unfinished.
    assert [r["status"] for r in collect_runs([out / "d9-plain"])] == ["unfinished"]


def test_a_study_under_the_automatic_recipe_resumes_against_its_resolved_runs(tmp_path):
    """Each run's config.json holds the resolved recipe; the study's own config is still unresolved."""
    import json

    from vdcnn.compare import check_same_recipe
    from vdcnn.config import RunConfig
    from vdcnn.errors import ConfigError

    study = RunConfig()
    study.auto = True
    study.set("data.dataset", "topics.csv")
    study.set("train.lr", 0.003)
    resolved = RunConfig.from_dict(study.to_dict())
    resolved.set("encoder.name", "subword")  # what the recipe chose
    resolved.set("train.optimizer", "adamw")
    run = tmp_path / "d9-plain"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model": {}, "encoder": {}, "labels": [],
                                                "run": resolved.to_dict()}))
    check_same_recipe(run, study)  # the recipe's choices are not the user's: no complaint
    study.set("train.lr", 0.01)  # a setting the user gave differs: refuse
    with pytest.raises(ConfigError, match="train.lr"):
        check_same_recipe(run, study)


def test_every_variant_trains_the_same_epochs_unless_equal_time_is_asked(dataset):
    """Under the automatic recipe (or a preset with a time budget) each variant would get the same
    time, so a deeper one fewer epochs: a comparison at equal epochs must drop the budget."""
    from vdcnn.recipe import apply_recipe

    texts, labels = ["a short text about sports"] * 20 + ["a note on markets"] * 20, np.array([0] * 20 + [1] * 20)
    auto = _base(dataset)
    auto.auto = True
    for _, cfg in plan_variants(auto, [9, 29], [True]):
        apply_recipe(cfg, texts, labels, 2)
        assert cfg.train.time_budget is None
    for _, cfg in plan_variants(auto, [9, 29], [True], equal_time=True):
        apply_recipe(cfg, texts, labels, 2)
        assert cfg.train.time_budget is not None  # the recipe's budget, the same for every variant
    preset = _base(dataset)
    preset.set("train.time_budget", "5m")
    assert [c.train.time_budget for _, c in plan_variants(preset, [9, 29], [True])] == [None, None]
    assert [c.train.time_budget for _, c in plan_variants(preset, [9, 29], [True], equal_time=True)] == ["5m", "5m"]


def test_compare_takes_the_variants_as_shortcuts_and_the_old_spelling_with_a_warning(dataset, monkeypatch):
    """train's --shortcut/--no-shortcut is one model's switch; compare's variant list is --shortcuts."""
    seen = []
    monkeypatch.setattr("vdcnn.compare.run_compare", lambda base, depths, shortcuts, out, **kw: seen.append(shortcuts) or [])
    for args in (["--shortcuts", "on"], ["--shortcut", "off"]):
        result = CliRunner().invoke(app, ["compare", "--dataset", str(dataset), "--depths", "9", *args])
        assert result.exit_code == 0, result.output
    assert seen == [[True], [False]]
    assert "deprecated" in result.output and "--shortcuts" in result.output
