"""Multi-label classification: every layout read, training end to end, thresholds, calibration,
predict/eval/explain/export/ensembles/baseline on a multi-label run, and bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY
from vdcnn.cli.main import app
from vdcnn.data import load_split, load_splits
from vdcnn.errors import DataError
from vdcnn.multilabel import decide, fit_platt, sigmoid_proba, tune_thresholds

NAMES = ["gratitude", "amusement", "anger", "sadness"]
CUES = {0: ["thank you so much", "this is amazing work", "great job on that"],
        1: ["haha that is hilarious", "lol I laughed so hard", "that joke is so funny"],
        2: ["I am furious", "this makes me so angry", "what a disgrace"],
        3: ["I am so sad about it", "heartbreaking news", "I miss him every day"]}
FILL = ["honestly", "today", "the game", "my friend", "at work", "this thread", "again", "yesterday", "the mods"]


def comments(n: int, seed: int) -> list[tuple[str, list[int]]]:
    """Reddit-like comments, each with one or two emotions (the words of each emotion in the text)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = sorted(rng.sample(range(4), 1 if rng.random() < 0.75 else 2))
        parts = [rng.choice(CUES[j]) for j in labels] + rng.sample(FILL, 2)
        rng.shuffle(parts)
        out.append((" ".join(parts).capitalize() + rng.choice([".", "!", "?"]), labels))
    return out


def write_goemotions(folder: Path, n: tuple[int, int, int] = (240, 120, 120)) -> Path:
    """The GoEmotions layout: headerless TSV text, comma-joined ids, comment id; emotions.txt beside."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows, seed in zip(("train", "dev", "test"), n, (1, 2, 3)):
        lines = [f"{t}\t{','.join(map(str, labels))}\te{seed}{i:05d}\n" for i, (t, labels) in enumerate(comments(rows, seed))]
        (folder / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    (folder / "emotions.txt").write_text("\n".join(NAMES), encoding="utf-8")
    return folder


def truth(rows: list[tuple[str, list[int]]]) -> np.ndarray:
    y = np.zeros((len(rows), 4), dtype=np.int64)
    for i, (_, labels) in enumerate(rows):
        y[i, labels] = 1
    return y


# --- reading -------------------------------------------------------------------------------------


def test_goemotions_layout_reads_id_sets_with_names_from_emotions_txt(tmp_path):
    folder = write_goemotions(tmp_path / "ge")
    s = load_splits(str(folder))
    assert s.label_names == NAMES
    assert s.train.multi_label and s.train.labels.shape == (240, 4)
    assert (s.train.labels == truth(comments(240, 1))).all()
    assert (s.val.labels == truth(comments(120, 2))).all() and len(s.test) == 120
    notes = "\n".join(s.notes)
    assert "multi-label: labels joined by ',' in the label column (column 2)" in notes
    assert "index the 4 label names from emotions.txt" in notes and "(multi-label" in notes


def test_names_joined_by_a_bar_in_a_csv_column(tmp_path):
    rows = comments(60, 4)
    f = tmp_path / "tags.csv"
    f.write_text("text,labels\n" + "".join(f'"{t}",{"|".join(NAMES[j] for j in labels)}\n' for t, labels in rows))
    s = load_splits(str(f), val_fraction=0.2)
    assert s.label_names == sorted(NAMES)
    full = load_split(str(f), label_rule=s.label_rule)
    order = [sorted(NAMES).index(n) for n in NAMES]
    assert (full.labels[:, order] == truth(rows)).all()
    assert "labels joined by '|'" in "\n".join(s.notes)


def test_fasttext_lines_with_several_label_prefixes(tmp_path):
    rows = comments(50, 5)
    f = tmp_path / "train.txt"
    f.write_text("".join(" ".join(f"__label__{NAMES[j]}" for j in labels) + f" {t}\n" for t, labels in rows))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.train.multi_label and s.train.texts == [t for t, _ in rows]
    order = [s.label_names.index(n) for n in NAMES]
    assert (s.train.labels[:, order] == truth(rows)).all()
    assert "several __label__ prefixes on a line" in "\n".join(s.notes)


def test_one_binary_column_per_label(tmp_path):
    rows = comments(50, 6)
    y = truth(rows)
    f = tmp_path / "train.csv"
    f.write_text("id,comment_text," + ",".join(NAMES) + "\n" + "".join(
        f'c{i},"{t}",' + ",".join(map(str, y[i])) + "\n" for i, (t, _) in enumerate(rows)))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.label_names == NAMES and (s.train.labels == y).all()
    assert s.train.texts == [t for t, _ in rows]
    assert "one 0/1 column per label (4 columns" in "\n".join(s.notes)


def test_a_true_false_flag_beside_0_1_label_columns_is_no_label(tmp_path):
    """GoEmotions' raw CSV (data/full_dataset/goemotions_1.csv): rater metadata, a True/False
    ``example_very_unclear`` flag, then one 0/1 column per emotion."""
    rows = comments(50, 8)
    y = truth(rows)
    f = tmp_path / "goemotions_1.csv"
    f.write_text("text,id,author,subreddit,created_utc,rater_id,example_very_unclear," + ",".join(NAMES) + "\n" + "".join(
        f'"{t}",e{i},user{i},r/sub{i % 3},{1548381039 + 97 * i}.0,{i % 80},{"True" if i % 7 == 0 else "False"},'
        + ",".join(map(str, y[i])) + "\n" for i, (t, _) in enumerate(rows)))
    s = load_splits(str(f), val_fraction=0.0)
    assert s.label_names == NAMES and (s.train.labels == y).all()
    assert s.train.texts == [t for t, _ in rows]


def test_hugging_face_sequence_of_class_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = comments(40, 7)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(names=NAMES))})
    ds = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "labels": [labels for _, labels in rows]},
                                    features=features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "hf"))
    s = load_splits(str(tmp_path / "hf"), val_fraction=0.0)
    assert s.label_names == NAMES and (s.train.labels == truth(rows)).all()
    assert s.label_rule.origin == "ClassLabel" and s.label_rule.multi_label


def test_multi_label_flag_and_its_opposite(tmp_path):
    folder = write_goemotions(tmp_path / "ge", (40, 20, 20))
    with pytest.raises(DataError, match=r"holds several classes in one row .*read as single-label"):
        load_splits(str(folder), multi_label=False)
    single = tmp_path / "single.tsv"
    single.write_text("".join(f"{t}\t{labels[0]}\n" for t, labels in comments(40, 8)))
    s = load_splits(str(single), val_fraction=0.0, multi_label=True)
    assert s.train.multi_label and (s.train.labels.sum(1) == 1).all()
    assert not load_splits(str(single), val_fraction=0.0).train.multi_label  # single-label stays single


def test_bad_multi_label_input_is_one_line(tmp_path):
    folder = write_goemotions(tmp_path / "ge", (40, 20, 20))
    dev = (folder / "dev.tsv").read_text().splitlines()
    dev[3] = dev[3].split("\t")[0] + "\t2,9\tx1"  # id 9: no such emotion
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n")
    with pytest.raises(DataError, match=r"dev\.tsv: unknown label\(s\) '9'"):
        load_splits(str(folder))
    f = tmp_path / "tags.csv"
    rows = comments(30, 9)
    f.write_text("text,labels\n" + "".join(f'"{t}",{"|".join(NAMES[j] for j in labels) if i != 4 else ""}\n'
                                          for i, (t, labels) in enumerate(rows)))
    with pytest.raises(DataError, match=r"1 row\(s\) have an empty label set \(data rows 5"):
        load_splits(str(f))


# --- thresholds and calibration --------------------------------------------------------------------


def test_thresholds_maximise_each_labels_f1_and_rare_labels_take_the_global_one():
    rng = np.random.default_rng(0)
    y = np.zeros((400, 3), dtype=np.int64)
    y[:100, 0] = 1
    y[::2, 1] = 1
    y[:3, 2] = 1  # 3 positives: too few to tune its own threshold
    probs = np.clip(y * 0.3 + rng.uniform(0, 0.6, y.shape), 0, 1)
    probs[:, 0] = np.where(y[:, 0] == 1, 0.35, 0.2)  # a clean cut between 0.2 and 0.35
    thresholds, glob, fallback = tune_thresholds(probs, y)
    assert 0.2 < thresholds[0] <= 0.35 and fallback == 1 and thresholds[2] == pytest.approx(glob)
    for j in (0, 1):  # no other threshold gives the label a better F1
        def f1(t: float) -> float:
            pred = probs[:, j] >= t
            tp = (pred & (y[:, j] == 1)).sum()
            return 2 * tp / (pred.sum() + y[:, j].sum())
        assert f1(thresholds[j]) >= max(f1(t) for t in np.linspace(0, 1, 201)) - 1e-12
    pred = decide(np.array([[0.1, 0.2, 0.05], [0.9, 0.1, 0.8]]), np.array([0.5, 0.5, 0.5]))
    assert pred.tolist() == [[0, 1, 0], [1, 0, 1]]  # no label passes: the top one


def test_platt_scaling_lowers_the_loss_of_miscalibrated_logits():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=(2000, 2)) < 0.3).astype(np.int64)
    logits = 3 * ((y * 2 - 1) * 4.0 + rng.normal(0, 3, y.shape))  # three times too confident
    a, b, _, own = fit_platt(logits, y)
    assert own == 2 and np.allclose(a, 1 / 3, atol=0.05)

    def nll(p: np.ndarray) -> float:
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert nll(sigmoid_proba(logits, (a, b))) < nll(sigmoid_proba(logits)) - 0.05


def test_output_bias_starts_at_each_labels_weighted_frequency():
    import torch

    from vdcnn.model import VDCNN, ModelConfig
    from vdcnn.multilabel import init_output_bias, pos_weight

    y = np.zeros((1000, 3), dtype=np.int64)
    y[:500, 0], y[:100, 1], y[:10, 2] = 1, 1, 1
    for conv in (True, False):
        model = VDCNN(ModelConfig(vocab_size=50, num_classes=3, depth=9, channels=(8, 16, 32, 64), fc_dims=(16,),
                                  embedding_dim=8, conv=conv, ngram_buckets=0 if conv else 1024))
        init_output_bias(model, y)
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(torch.zeros(1, 20, dtype=torch.long) + 3, torch.tensor([20])))[0].numpy()
        w, prior = pos_weight(y).numpy(), y.mean(0)
        expected = w * prior / (w * prior + 1 - prior)  # the constant that minimises the weighted BCE
        np.testing.assert_allclose(p, expected, atol=0.05 if conv else 1e-3)


# --- end to end through the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("ml")
    data = write_goemotions(root / "ge")
    out = root / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--max-length", "64",
                                      "--epochs", "3", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.003",
                                      "--label-smoothing", "0.1", "--linear-path", "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    assert "label smoothing 0.1 turned off" in result.output
    assert "best validation micro-F1" in result.output and "vdcnn micro-F1" in result.output
    return out


def test_training_stores_thresholds_calibration_and_micro_f1(ml_run):
    meta = json.loads((ml_run / "config.json").read_text())
    assert meta["label_rule"]["multi_label"] is True and meta["labels"] == NAMES
    assert len(meta["multi_label"]["thresholds"]) == 4
    assert meta["calibration"]["method"] == "platt" and len(meta["calibration"]["scale"]) == 4
    assert meta["run"]["train"]["select_by"] == "micro_f1" and meta["run"]["train"]["label_smoothing"] == 0.0
    assert meta["best"]["val_micro_f1"] is not None
    lp = meta["linear_path"]  # fitted before the thresholds and Platt scaling, which see the combined logits
    assert (lp["weight"] > 0) == (meta["model"]["linear_buckets"] > 0) and 0 <= lp["val_linear"] <= 1
    assert set(lp["test_network"]) == {"micro_f1", "macro_f1"}
    r = meta["results"]
    assert r["test_micro_f1"] is not None and r["baseline"]["test"]["micro_f1"] is not None
    rows = [json.loads(x) for x in (ml_run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_micro_f1" in row for row in rows)
    best = max(rows, key=lambda row: row["val_micro_f1"])
    assert meta["best"]["epoch"] == best["epoch"]


def test_eval_reports_micro_macro_samples_f1_and_per_label_table(runner, ml_run, tmp_path):
    from vdcnn.classifier import Classifier
    from sklearn.metrics import f1_score

    result = runner.invoke(app, ["eval", str(ml_run), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    for key in ("micro-F1", "macro-F1", "samples-F1", "subset accuracy", "threshold", "gratitude"):
        assert key in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    clf = Classifier.load(ml_run)
    test = load_split(str(ml_run.parent / "ge"), "test", label_rule=clf_rule(ml_run))
    pred = decide(clf.predict_proba(test.texts), clf.thresholds)
    assert report["micro_f1"] == pytest.approx(f1_score(test.labels, pred, average="micro"))
    assert report["macro_f1"] == pytest.approx(f1_score(test.labels, pred, average="macro", zero_division=0))
    assert report["per_class"]["anger"]["support"] == int(test.labels[:, 2].sum())
    assert report["calibration"]["calibrated"] is True


def clf_rule(run: Path):
    from vdcnn.data import run_label_rule

    return run_label_rule(json.loads((run / "config.json").read_text()))


def test_predict_prints_every_label_above_its_threshold(runner, ml_run, tmp_path):
    from vdcnn.classifier import Classifier

    texts = ["Thank you so much, haha that is hilarious", "I am furious about the mods", "the weather"]
    f = tmp_path / "in.txt"
    f.write_text("\n".join(texts) + "\n")
    clf = Classifier.load(ml_run)
    probs = clf.predict_proba(texts)
    tsv = runner.invoke(app, ["predict", str(ml_run), str(f)]).stdout.splitlines()
    rows = [json.loads(x) for x in runner.invoke(app, ["predict", str(ml_run), str(f), "--format", "jsonl"]).stdout.splitlines()]
    assert len(tsv) == len(rows) == 3
    for p, line, row in zip(probs, tsv, rows):
        above = [NAMES[j] for j in np.argsort(-p, kind="stable") if p[j] >= clf.thresholds[j]] or [NAMES[int(p.argmax())]]
        assert line.split("\t")[::2] == above and row["labels"] == above
        assert row["probabilities"]["anger"] == pytest.approx(p[2], abs=1e-6)
    one = runner.invoke(app, ["predict", str(ml_run), str(f), "--top-k", "1"]).stdout.splitlines()
    assert [x.split("\t")[0] for x in one] == [x.split("\t")[0] for x in tsv] and all(x.count("\t") == 1 for x in one)
    assert [[n for n, _ in r] for r in clf.predict_labels(texts)] == [r["labels"] for r in rows]


def test_explain_targets_the_top_label_of_a_multi_label_run(runner, ml_run, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("I am furious about the mods\n")
    result = runner.invoke(app, ["explain", str(ml_run), str(f), "--format", "jsonl", "--target", "anger"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["target"] == "anger" and 0 <= row["target_probability"] <= 1
    # integrated gradients add up to p(text) - p(baseline) of the sigmoid probability (32-step approximation)
    total = sum(a["score"] for a in row["attributions"])
    assert total == pytest.approx(row["target_probability"] - row["baseline_probability"], abs=0.1)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_export_bundles_give_the_runs_sigmoid_probabilities_and_labels(runner, ml_run, tmp_path, kind):
    pytest.importorskip("onnxruntime") if kind == "onnx" else None
    from vdcnn.classifier import Classifier, load_ensemble

    out = tmp_path / kind
    result = runner.invoke(app, ["export", str(ml_run), "--to", kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    texts = [t for t, _ in comments(30, 11)]
    run, bundle = Classifier.load(ml_run), Classifier.load(out)
    assert bundle.multi_label and np.allclose(bundle.thresholds, run.thresholds)
    np.testing.assert_allclose(bundle.predict_proba(texts), run.predict_proba(texts), atol=1e-4)
    assert [[n for n, _ in r] for r in bundle.predict_labels(texts)] == [[n for n, _ in r] for r in run.predict_labels(texts)]
    ens = load_ensemble([ml_run, out])
    assert ens.multi_label
    np.testing.assert_allclose(ens.predict_proba(texts), run.predict_proba(texts), atol=1e-4)


def test_ensemble_refuses_mixing_single_and_multi_label(ml_run, tiny_run):
    from vdcnn.classifier import load_ensemble
    from vdcnn.errors import ConfigError

    with pytest.raises(ConfigError):
        load_ensemble([ml_run, tiny_run])


def test_baseline_command_on_a_multi_label_dataset(runner, tmp_path):
    folder = write_goemotions(tmp_path / "ge", (200, 100, 100))
    result = runner.invoke(app, ["baseline", "--dataset", str(folder), "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "micro-F1" in result.stdout and "one-vs-rest" in result.stdout
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["test"]["micro_f1"] > 0.8 and len(b["thresholds"]) == 4


# --- the real GoEmotions files ----------------------------------------------------------------------


def test_real_goemotions_reads_the_official_split():
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root or not (Path(root) / "goemotions" / "train.tsv.gz").exists():
        pytest.skip("GoEmotions not available: set VDCNN_DATA_DIR (CI sets ../shared/data)")
    s = load_splits(str(Path(root) / "goemotions"))
    assert (len(s.train), len(s.val), len(s.test)) == (43410, 5426, 5427)
    assert len(s.label_names) == 28 and s.label_names[0] == "admiration" and s.label_names[27] == "neutral"
    assert (s.train.labels.sum(1) >= 1).all() and int(s.train.labels[:, 27].sum()) == 14219
    assert int(s.train.labels[:, 16].sum()) == 77  # grief


def test_candidates_are_compared_on_logits_whatever_their_scale():
    """Blends and penalties are compared by F1 at cuts tuned on their logits: scaling the logits (a blend
    weight of 200) changes no decision, where thresholds on raw sigmoids, clipped to (1e-4, 1 - 1e-4),
    lose the ranking of saturated scores and with it F1."""
    from sklearn.metrics import f1_score

    from vdcnn.multilabel import f1_at_tuned_cuts

    rng = np.random.default_rng(0)
    y = (rng.random((600, 6)) < np.array([0.3, 0.2, 0.1, 0.05, 0.03, 0.02])).astype(np.int64)
    y[y.sum(1) == 0, 0] = 1
    z = 2.5 * (y - 0.5) + rng.normal(0, 1.5, y.shape) - 1.0  # an informative, imperfect scorer
    plain, scaled = f1_at_tuned_cuts(z, y), f1_at_tuned_cuts(200 * z, y)
    assert plain == scaled and 0.3 < plain["micro_f1"] < 0.95
    probs = sigmoid_proba(200 * z)
    clipped = f1_score(y, decide(probs, tune_thresholds(probs, y)[0]), average="macro", zero_division=0)
    assert clipped < plain["macro_f1"] - 0.02
    # held-out rows are scored at the validation rows' cuts
    held = f1_at_tuned_cuts(z[:300], y[:300], z[300:], y[300:])
    assert 0.3 < held["micro_f1"] < 0.95 and held != f1_at_tuned_cuts(z[300:], y[300:])
