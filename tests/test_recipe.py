"""The automatic recipe (no preset given) and the built-in TF-IDF + logistic-regression baseline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_topic_csv
from tests.test_robustness import cli  # noqa: F401 - the in-process `vdcnn` fixture
from vdcnn.baseline import evaluate_baseline, fit_baseline, spaced_script
from vdcnn.config import RunConfig
from vdcnn.recipe import apply_recipe, char_coverage, choose_max_length

# Short Chinese headlines written for these tests (three topics), no spaces between words.
CHINESE = {
    "体育": ["球队在决赛中赢得冠军", "前锋在比赛最后时刻进球", "教练称赞球队的防守", "网球名将晋级半决赛", "球迷为加时赛欢呼"],
    "财经": ["银行下调全年盈利预期", "股市收盘小幅上涨", "油价因供应担忧上涨", "监管机构批准合并", "通胀放缓债券走强"],
    "科技": ["公司发布更快的处理器", "软件更新修复安全漏洞", "研究人员研制新型电池", "初创企业开源数据库", "工程师测试量子芯片"],
}
# Flags that keep a training run to a few seconds; the recipe fills everything else.
SMALL = ["--epochs", "1", "--max-length", "32", "--threads", "1", "--no-progress", "--set", "model.channels=[8,16,32,64]",
         "--set", "model.fc_dims=[32]", "--set", "model.embedding_dim=8", "--set", "encoder.vocab_size=300"]


def write_chinese_csv(path: Path, rows_per_class: int = 30, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [f"{label},{''.join(rng.sample(heads, 2))}" for label, heads in CHINESE.items()
            for _ in range(rows_per_class)]
    rng.shuffle(rows)
    path.write_text("\n".join(["label,text", *rows]) + "\n", encoding="utf-8")
    return path


def test_char_coverage_tells_latin_from_chinese():
    assert char_coverage(["The striker scored a late goal, 2-1!"]) == 1.0
    assert char_coverage(["球队在决赛中赢得冠军"]) == 0.0
    mixed = ["苹果发布 iPhone 16"]  # 4 of 12 non-space characters are Chinese
    assert char_coverage(mixed) == pytest.approx(8 / 12)


@pytest.mark.parametrize("lengths, expected", [([10] * 99 + [500], 32), (list(range(1, 201)), 208), ([3000] * 5, 1024)])
def test_choose_max_length_keeps_98_percent_whole(lengths, expected):
    length = choose_max_length(np.array(lengths))
    assert length == expected and length % 16 == 0
    assert np.mean(np.array(lengths) <= length) >= 0.98 or length == 1024


def test_recipe_fills_only_what_the_user_left_open():
    cfg = RunConfig()
    cfg.auto = True
    cfg.set("encoder.name", "byte")
    cfg.set("train.lr", 0.01)
    labels = np.array([0] * 90 + [1] * 10)  # 9x imbalance
    lines = apply_recipe(cfg, ["some text"] * 100, labels, 2)
    assert cfg.encoder.name == "byte" and cfg.train.lr == 0.01  # the user's choices stand
    assert cfg.train.optimizer == "adamw" and cfg.model["embedding_dim"] == 128
    assert cfg.train.select_by == "macro_f1"  # imbalanced: best epoch by macro-F1
    assert cfg.train.time_budget is not None and not cfg.auto
    assert "automatic recipe" in lines[0] and "9.0x" in lines[0]


def test_recipe_scales_vocabulary_with_rows():
    small, large = RunConfig(), RunConfig()
    apply_recipe(small, ["a b"] * 5000, np.arange(5000) % 2, 2)
    apply_recipe(large, ["a b"] * 60000, np.arange(60000) % 2, 2)
    assert small.encoder.vocab_size < large.encoder.vocab_size
    assert small.train.select_by == "accuracy"  # balanced classes


def test_train_without_preset_uses_the_recipe_and_reads_chinese(cli, tmp_path):
    data = write_chinese_csv(tmp_path / "zh.csv")
    result = cli("train", "--dataset", data, "--out", tmp_path / "run", "--no-baseline", *SMALL)
    assert result.code == 0, result.err
    assert "automatic recipe" in result.err
    assert "alphabet spells 0% of the characters" in result.err
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["encoder"]["type"] == "subword"  # never the char alphabet for text it cannot spell
    assert meta["run"]["train"]["optimizer"] == "adamw"  # the resolved recipe is what the run records
    assert "WARNING" not in result.err


def test_forcing_the_char_encoder_on_chinese_warns_loudly(cli, tmp_path):
    data = write_chinese_csv(tmp_path / "zh.csv")
    result = cli("train", "--dataset", data, "--out", tmp_path / "run", "--encoder", "char", "--no-baseline", *SMALL)
    assert result.code == 0, result.err
    assert "WARNING" in result.err and "spells only 0%" in result.err


def test_baseline_picks_char_ngrams_for_unspaced_scripts():
    assert spaced_script(["the striker scored a late goal"])
    assert not spaced_script(["球队在决赛中赢得冠军，前锋在比赛最后时刻进球"])


def test_baseline_learns_a_separable_problem_and_reports_like_eval(tmp_path):
    path = write_topic_csv(tmp_path / "t.csv", rows_per_class=40)
    from vdcnn.data import load_splits

    s = load_splits(str(path), val_fraction=0.25, seed=0)
    model = fit_baseline(s.train.texts, s.train.labels, len(s.label_names))
    report = evaluate_baseline(model, s.val.texts, s.val.labels, s.label_names)
    assert report["n"] == len(s.val) and report["accuracy"] >= 0.9
    assert set(report["per_class"]) == set(s.label_names)


def test_train_prints_the_baseline_beside_its_result(cli, tmp_path):
    data = write_topic_csv(tmp_path / "topics.csv")
    result = cli("train", "--dataset", data, "--out", tmp_path / "run", *SMALL)
    assert result.code == 0, result.err
    assert "vs TF-IDF+LR" in result.err and "on the same validation split" in result.err  # a file has no test split
    baseline = json.loads((tmp_path / "run" / "config.json").read_text())["results"]["baseline"]
    assert baseline["train_rows"] + baseline["val"]["n"] == 120 and baseline["test"] is None


def test_baseline_command_prints_validation_and_test(cli, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_topic_csv(folder / "train.csv", rows_per_class=40, seed=0)
    write_topic_csv(folder / "test.csv", rows_per_class=10, seed=1)
    result = cli("baseline", "--dataset", folder, "--json", tmp_path / "b.json")
    assert result.code == 0, result.err
    assert "TF-IDF+LR (word 1-2-grams)" in result.out and "test" in result.out and "validation" in result.out
    scores = json.loads((tmp_path / "b.json").read_text())
    assert scores["test"]["n"] == 30 and scores["train_rows"] == 108


def _auto_config(data: Path, *extra: str) -> RunConfig:
    from vdcnn.config import build_config

    return build_config(None, {}, [f"data.dataset={data}", "model.channels=[8,16,32,64]", "model.fc_dims=[16]",
                                   "model.embedding_dim=8", "encoder.vocab_size=300", "train.threads=1", *extra])


def test_plan_decides_the_whole_run_from_the_loaded_splits(tmp_path):
    """One stage, before any split is encoded for training: the resolved config (length and
    layout included), the encoder, what was chosen, and autotune's search space; the caller's
    config is not touched."""
    from vdcnn.data import load_run_splits
    from vdcnn.recipe import plan_run

    cfg = _auto_config(write_topic_csv(tmp_path / "topics.csv", rows_per_class=30))
    explicit = set(cfg.explicit)
    plan = plan_run(cfg, load_run_splits(cfg))
    assert cfg.auto and cfg.explicit == explicit and "encoder.max_length" not in cfg.explicit  # untouched
    resolved = plan.config
    assert not resolved.auto
    assert plan.encoder.name == resolved.encoder.name == "subword" and plan.encoder.vocab_size <= 300
    for key in ("encoder.max_length", "model.downsamples", "model.ngram_buckets", "train.time_budget"):
        assert key in plan.settings
    assert plan.settings["encoder.max_length"] == resolved.encoder.max_length < 1024  # short topic lines
    assert "encoder.vocab_size" not in plan.settings  # the user's choice stands
    assert plan.search[0].name == "subword + n-grams" and len(plan.search) >= 2
    assert any("max length" in line for line in plan.lines) and any("layout" in line for line in plan.lines)


def test_training_encodes_each_split_once_at_the_planned_length(tmp_path, monkeypatch):
    """The plan comes first: the training split is not encoded at a provisional length and cut
    afterwards, but once, at the length the plan chose."""
    import vdcnn.train as training

    calls: list[tuple[int, int]] = []
    real = training.encode_texts

    def spy(encoder, texts, labels, max_length, *args, **kwargs):
        calls.append((len(texts), max_length))
        return real(encoder, texts, labels, max_length, *args, **kwargs)

    monkeypatch.setattr(training, "encode_texts", spy)
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=30)
    cfg = _auto_config(data, "train.epochs=1")
    result = training.train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    length = json.loads((result.out_dir / "config.json").read_text())["run"]["encoder"]["max_length"]
    assert length < 1024 and {m for _, m in calls} == {length}
    assert [n for n, _ in calls] == [81, 9]  # training rows, then validation (one file: no test split), once each


def test_autotune_trials_train_on_the_runs_own_splits(tmp_path, monkeypatch):
    """The search reads nothing again: the data is read once for the run and its trials, and
    the chosen recipe is stored with the trials in config.json."""
    import vdcnn.autotune as search
    import vdcnn.train as training

    monkeypatch.setattr(search, "_MIN_TRIAL_S", 0.2)
    monkeypatch.setattr(search, "SEARCH_SHARE", 0.01)  # 3 s of the recipe's 5 minutes
    reads: list[str] = []
    real = training.load_training_data

    def counting(cfg, *args, **kwargs):
        reads.append(cfg.data.dataset)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(training, "load_training_data", counting)
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=15)
    cfg = _auto_config(data)
    with pytest.raises(training.TrainingInterrupted):  # two steps of the real run are enough here
        training.train(cfg, tmp_path / "run", progress=False, log=lambda s: None, max_steps=2)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(meta["autotune"]["trials"]) >= 2 and meta["autotune"]["chosen"]
    assert reads == [str(data)]
