"""One label rule per run: decided on the training split, applied to validation, test, eval and later files."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from vdcnn.cli.main import app
from tests.conftest import TINY, TOPICS
from vdcnn.data import LabelRule, load_split, load_splits, run_label_rule
from vdcnn.errors import CheckpointError, DataError

CLASSES = ["sports", "tech", "business"]  # classes.txt order: label 1 (or 0) is sports
TRAIN_CLI = ["--depth", "9", "--max-length", "64", "--epochs", "1", "--set", "train.threads=1", "--no-progress", *TINY]


def topic_rows(per_class: int, seed: int, classes=CLASSES) -> list[tuple[str, str]]:
    """(text, class name) rows of short news sentences, shuffled."""
    rng = random.Random(seed)
    rows = [(f"{a.capitalize()}, and {b}. Story {seed}-{i}", name)
            for name in classes for i in range(per_class) for a, b in [rng.sample(TOPICS[name], 2)]]
    rng.shuffle(rows)
    return rows


def write(path: Path, rows, *, labels: str, header: bool, label_first: bool = False, delimiter: str = ",") -> Path:
    """Write rows in a layout: labels as ``names``, ``0`` (0-based ints) or ``1`` (1-based ints)."""
    def lab(name: str) -> str:
        return name if labels == "names" else str(CLASSES.index(name) + int(labels))

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        if header:
            w.writerow(["label", "text"] if label_first else ["text", "label"])
        for text, name in rows:
            w.writerow([lab(name), text] if label_first else [text, lab(name)])
    return path


def vdcnn(capsys, monkeypatch, *args) -> tuple[int, str]:
    """Run the CLI as a user does (one-line errors, exit status): (status, stdout + stderr)."""
    import sys

    from vdcnn.cli.main import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["vdcnn", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def names_of(ds) -> list[str]:
    return [ds.label_names[i] for i in ds.labels]


LAYOUTS = [  # (labels, header, label_first, classes.txt)
    ("names", True, False, False),
    ("names", False, True, False),
    ("names", False, False, False),
    ("0", True, False, True),
    ("1", True, False, True),  # the issue's layout: header text,label, labels 1..3 and classes.txt
    ("1", False, True, True),  # char-CNN layout
    ("1", False, True, False),  # the issue's second layout: headerless, 1-based, no classes.txt
    ("0", True, True, False),
]


@pytest.mark.parametrize("labels,header,label_first,classes_txt", LAYOUTS)
def test_every_layout_maps_train_val_and_test_the_same_way(tmp_path, labels, header, label_first, classes_txt):
    train_rows, test_rows = topic_rows(10, seed=1), topic_rows(4, seed=2)
    write(tmp_path / "train.csv", train_rows, labels=labels, header=header, label_first=label_first)
    write(tmp_path / "test.csv", test_rows, labels=labels, header=header, label_first=label_first)
    if classes_txt:
        (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = load_splits(str(tmp_path), val_fraction=0.2, seed=0)
    if classes_txt:
        expected = CLASSES
    elif labels == "names":
        expected = sorted(CLASSES)
    else:
        expected = [str(CLASSES.index(c) + int(labels)) for c in sorted(CLASSES, key=CLASSES.index)]
    assert splits.label_names == expected == list(splits.label_rule.names)
    shown = {c: (c if labels == "names" or classes_txt else str(CLASSES.index(c) + int(labels))) for c in CLASSES}
    assert len(splits.train) + len(splits.val) == 30 and len(splits.val) == 6
    assert sorted(names_of(splits.train) + names_of(splits.val)) == sorted(shown[c] for _, c in train_rows)
    assert names_of(splits.test) == [shown[c] for _, c in test_rows]
    assert splits.test.texts == [t for t, _ in test_rows]
    assert splits.val_note == "6 rows (20 %) carved from train"


def test_issue_layout_classes_txt_with_1_based_labels(tmp_path):
    # Training used to map 1..3 to 0..2 while the test split failed with "3 outside the 3 known classes".
    write(tmp_path / "train.csv", topic_rows(8, seed=1), labels="1", header=True)
    write(tmp_path / "test.csv", topic_rows(3, seed=2), labels="1", header=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = load_splits(str(tmp_path), val_fraction=0.1)
    assert splits.label_rule.to_dict() == {"names": CLASSES, "values": ["1", "2", "3"], "origin": "classes.txt"}
    assert splits.test.class_counts().tolist() == [3, 3, 3]


def test_a_split_may_lack_a_class(tmp_path):
    write(tmp_path / "train.csv", topic_rows(6, seed=1), labels="names", header=True)
    write(tmp_path / "test.csv", topic_rows(3, seed=2, classes=["tech", "sports"]), labels="names", header=True)
    splits = load_splits(str(tmp_path), val_fraction=0.0)
    assert splits.test.n_classes == 3 and splits.test.class_counts().tolist() == [0, 3, 3]  # business, sports, tech


def test_training_may_lack_a_class_named_in_classes_txt(tmp_path):
    write(tmp_path / "train.csv", topic_rows(6, seed=1, classes=["sports", "tech"]), labels="1", header=True)
    write(tmp_path / "test.csv", topic_rows(2, seed=2), labels="1", header=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = load_splits(str(tmp_path), val_fraction=0.0)
    assert splits.label_names == CLASSES
    assert splits.train.class_counts().tolist() == [6, 6, 0]
    assert splits.test.class_counts().tolist() == [2, 2, 2]


def test_label_unseen_in_training_names_value_and_file(tmp_path):
    write(tmp_path / "train.csv", topic_rows(6, seed=1, classes=["sports", "tech"]), labels="names", header=True)
    test = write(tmp_path / "test.csv", topic_rows(2, seed=2), labels="names", header=True)
    with pytest.raises(DataError, match=rf"{test}: unknown label\(s\) 'business', not seen in training"):
        load_splits(str(tmp_path))


def test_own_dev_split_is_used(tmp_path):
    write(tmp_path / "train.csv", topic_rows(10, seed=1), labels="0", header=True, label_first=True)
    write(tmp_path / "dev.csv", topic_rows(3, seed=3), labels="0", header=True, label_first=True)
    write(tmp_path / "test.csv", topic_rows(2, seed=2), labels="0", header=True, label_first=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = load_splits(str(tmp_path), val_fraction=0.1)
    assert len(splits.train) == 30 and len(splits.val) == 9 and len(splits.test) == 6
    assert splits.val_note == "dev.csv (the dataset's own, 9 rows)"
    assert splits.val.texts == [t for t, _ in topic_rows(3, seed=3)]
    assert names_of(splits.val) == [c for _, c in topic_rows(3, seed=3)]


def test_broken_test_split_is_an_error_naming_the_file(tmp_path):
    write(tmp_path / "train.csv", topic_rows(6, seed=1), labels="names", header=True)
    (tmp_path / "test.csv").write_bytes(b"text,label\n\x00\x01 broken bytes,tech\n")
    with pytest.raises(DataError, match=r"test\.csv: looks like a binary file"):
        load_splits(str(tmp_path))
    single = write(tmp_path / "only.csv", topic_rows(6, seed=1), labels="names", header=True)
    assert load_splits(str(single)).test is None


def test_rule_round_trip_and_unit_cases():
    rule = LabelRule.decide(["2", "3", "1", "3"], source="f.csv", class_names=CLASSES)
    assert rule.values == ("1", "2", "3") and rule.origin == "classes.txt"
    assert LabelRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert rule.apply([1, "3", 2.0, "tech"], source="g.csv").tolist() == [0, 2, 1, 1]  # names accepted too
    zero = LabelRule.decide([0, 1, 1], source="f", class_names=["neg", "pos"])
    assert zero.values == ("0", "1")
    assert LabelRule.decide(["10", "2", "1"], source="f").names == ("1", "2", "10")
    with pytest.raises(DataError, match=r"f\.csv: label value\(s\) 4 do not fit the 3 class names"):
        LabelRule.decide([1, 4], source="f.csv", class_names=CLASSES)
    with pytest.raises(DataError, match=r"'politics' are not among the class names"):
        LabelRule.decide(["tech", "politics"], source="f.csv", class_names=CLASSES)
    with pytest.raises(CheckpointError, match="malformed label_rule"):
        LabelRule.from_dict({"names": ["a"]})
    assert run_label_rule({"labels": ["a", "b"]}).origin == "names"


def test_cli_train_and_eval_apply_the_stored_rule(runner, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.csv", topic_rows(12, seed=1), labels="1", header=True)
    write(data / "test.csv", topic_rows(4, seed=2), labels="1", header=True)
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(data), "--out", str(run), *TRAIN_CLI])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "config.json").read_text())
    assert meta["label_rule"] == {"names": CLASSES, "values": ["1", "2", "3"], "origin": "classes.txt"}
    assert f"test ({data / 'test.csv'})" in result.output and meta["results"]["test_acc"] is not None
    result = runner.invoke(app, ["eval", str(run), "--json", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t.json").read_text())["n"] == 12
    # A later headerless file with the same 1-based labels, and no classes.txt beside it.
    later = write(tmp_path / "later.csv", topic_rows(3, seed=5), labels="1", header=False, label_first=True)
    result = runner.invoke(app, ["eval", str(run), str(later), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 9 and [v["support"] for v in report["per_class"].values()] == [3, 3, 3]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nA chess final ended in a draw,4\nThe striker scored,1\n")
    code, output = vdcnn(capsys, monkeypatch, "eval", run, bad)
    assert code != 0 and "Traceback" not in output
    assert f"error: {bad}: unknown label(s) '4', not seen in training" in output


def test_cli_headerless_1_based_without_classes_txt(runner, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.csv", topic_rows(12, seed=1), labels="1", header=False, label_first=True)
    write(data / "test.csv", topic_rows(4, seed=2, classes=["tech", "business"]), labels="1", header=False,
          label_first=True)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(data), "--out", str(run), *TRAIN_CLI])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "config.json").read_text())
    assert meta["label_rule"]["values"] == ["1", "2", "3"] and meta["labels"] == ["1", "2", "3"]
    assert meta["results"]["test_acc"] is not None
    # A run saved before label rules were stored is scored by its label names.
    old = tmp_path / "old"
    shutil.copytree(run, old)
    del meta["label_rule"]
    (old / "config.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["eval", str(old), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["per_class"]["1"]["support"] == 0


def test_cli_train_with_broken_test_split_stops_before_training(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.csv", topic_rows(12, seed=1), labels="names", header=True)
    (data / "test.csv").write_bytes(b"text,label\nok,tech\n\x00\x01\x02binary\n")
    run = tmp_path / "run"
    code, output = vdcnn(capsys, monkeypatch, "train", "--dataset", data, "--out", run, *TRAIN_CLI)
    assert code != 0 and "Traceback" not in output
    assert f"error: {data / 'test.csv'}: looks like a binary file" in output
    assert "epoch" not in output
    assert not run.exists()


def test_eval_rule_is_the_training_rule(tmp_path):
    # load_split with a rule maps a file exactly as the training split was mapped.
    write(tmp_path / "train.csv", topic_rows(5, seed=1), labels="0", header=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rule = load_splits(str(tmp_path), val_fraction=0.0).label_rule
    other = write(tmp_path / "other.tsv", topic_rows(2, seed=9), labels="0", header=False, delimiter="\t")
    ds = load_split(str(other), label_rule=rule)
    assert ds.label_names == CLASSES
    assert names_of(ds) == [c for _, c in topic_rows(2, seed=9)]
    assert np.array_equal(ds.labels, rule.apply([str(CLASSES.index(c)) for _, c in topic_rows(2, seed=9)],
                                                  source="x"))


def test_split_seed_fixes_the_validation_rows_across_training_seeds(tmp_path):
    # benchmarks/accuracy.py compares seeds on one validation split: --split-seed holds the rows still.
    from vdcnn.config import build_config
    from vdcnn.train import load_training_data

    write(tmp_path / "train.csv", topic_rows(20, seed=1), labels="names", header=True)

    def val_texts(**options):
        return sorted(load_training_data(build_config(None, {"dataset": str(tmp_path), **options})).val.texts)

    assert val_texts(seed=1, split_seed=0) == val_texts(seed=2, split_seed=0) == val_texts(seed=0)
    assert val_texts(seed=1) != val_texts(seed=2)


def test_0_based_labels_are_decided_from_every_split(tmp_path):
    # Training rows lack class 0 ("sports"); the test split has it: the labels are 0-based. Deciding on
    # the training split alone read 1..2 as 1-based and shifted every training row by one class.
    write(tmp_path / "train.csv", topic_rows(6, seed=1, classes=["tech", "business"]), labels="0", header=True)
    write(tmp_path / "test.csv", topic_rows(2, seed=2), labels="0", header=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    splits = load_splits(str(tmp_path), val_fraction=0.0)
    assert splits.label_rule.values == ("0", "1", "2")
    assert splits.train.class_counts().tolist() == [0, 6, 6]  # tech and business, as written
    assert splits.test.class_counts().tolist() == [2, 2, 2]
    assert "0-based" in splits.label_rule.describe()


def test_ambiguous_integer_labels_say_the_rule_they_took(tmp_path):
    # No split has 0 and none has the largest 1-based value: both readings fit; the rule says which it took.
    write(tmp_path / "train.csv", topic_rows(6, seed=1, classes=["sports", "tech"]), labels="1", header=True)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rule = load_splits(str(tmp_path), val_fraction=0.0).label_rule
    assert rule.values == ("1", "2", "3")
    assert "1-based" in rule.describe() and "no 0" in rule.describe()


def test_a_column_naming_the_labels_gives_the_class_names(tmp_path, runner):
    # SetFit's CSVs: label (0/1/2) + label_text; CLUE's JSON lines: label ("100") + label_desc. The names are
    # shown; every split is still matched by the label's value (test.csv here has no label_text column).
    data = tmp_path / "setfit"
    data.mkdir()
    codes = {name: str(100 + i) for i, name in enumerate(CLASSES)}
    with open(data / "train.jsonl", "w", encoding="utf-8") as f:
        for text, name in topic_rows(12, seed=1):
            f.write(json.dumps({"text": text, "label": codes[name], "label_desc": f"news_{name}"}) + "\n")
    write(data / "test.csv", [(t, codes[n]) for t, n in topic_rows(4, seed=2)], labels="names", header=True)
    s = load_splits(str(data), val_fraction=0.2)
    assert s.label_names == [f"news_{c}" for c in CLASSES] and s.label_rule.values == ("100", "101", "102")
    assert names_of(s.test) == [f"news_{n}" for _, n in topic_rows(4, seed=2)]
    assert "label 'label' (3 values), named by 'label_desc'" in "\n".join(s.notes)
    rule = s.label_rule
    assert rule.describe().endswith("named by the 'label_desc' column")
    assert LabelRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert rule.apply(["news_tech", "102"], source="x").tolist() == [1, 2]  # names accepted too
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(data), "--out", str(run), *TRAIN_CLI])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["labels"] == [f"news_{c}" for c in CLASSES]


def test_a_name_column_that_does_not_name_labels_one_to_one_is_left_alone(tmp_path):
    rows = topic_rows(10, seed=3)
    f = tmp_path / "train.csv"
    with open(f, "w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["text", "label", "label_text"])
        for i, (text, name) in enumerate(rows):  # sports and tech share a name
            w.writerow([text, CLASSES.index(name), "games" if name != "business" else "money"])
    s = load_splits(str(f), val_fraction=0.2)
    assert s.label_names == ["0", "1", "2"] and s.label_rule.origin == "data"
