"""The CLI end to end as a user runs it: train, info, eval, predict, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from safetensors.torch import load_file

from vdcnn.cli.main import app
from tests.conftest import TINY, real_data_dir, write_topic_csv

PREDICT_TEXTS = [
    "The striker scored a late goal in the final",
    "Shares fell after the bank cut its forecast",
    "",
    "A software update fixes a security flaw — ünïcödé 📱",
]


def test_train_writes_a_complete_run_folder(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "model.safetensors", "last.pt", "metrics.jsonl"} <= names
    assert not any(n.endswith(".tmp") for n in names)  # .lock stays (free): see run_lock
    meta = json.loads((tiny_run / "config.json").read_text())
    assert meta["format_version"] == 1
    assert meta["labels"] == ["business", "sports", "tech"]
    assert meta["encoder"]["type"] == "char"
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"train_loss", "val_loss", "val_acc", "grad_norm"} <= set(r) for r in rows)
    assert set(rows[0]["grad_norm"]) == {"stage1", "stage2", "stage3", "stage4"}
    # The saved weights are those of the best validation epoch.
    best = max(rows, key=lambda r: r["val_acc"])
    assert meta["best"]["epoch"] == best["epoch"]


def test_predict_file_and_stdin_give_the_same_lines(runner, tiny_run, tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("\n".join(PREDICT_TEXTS) + "\n", encoding="utf-8")
    from_file = runner.invoke(app, ["predict", str(tiny_run), str(text_file)])
    from_stdin = runner.invoke(app, ["predict", str(tiny_run), "-"], input=text_file.read_text(encoding="utf-8"))
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == from_stdin.stdout
    lines = from_file.stdout.splitlines()
    assert len(lines) == len(PREDICT_TEXTS)
    for line in lines:
        label, prob = line.split("\t")
        assert label in {"business", "sports", "tech"} and 0 < float(prob) <= 1


def test_predict_top_k_and_jsonl(runner, tiny_run, tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("\n".join(PREDICT_TEXTS) + "\n", encoding="utf-8")
    top2 = runner.invoke(app, ["predict", str(tiny_run), str(text_file), "--top-k", "2"]).stdout.splitlines()
    assert all(len(line.split("\t")) == 4 for line in top2)
    rows = [json.loads(x) for x in runner.invoke(app, ["predict", str(tiny_run), str(text_file), "--format",
                                                       "jsonl"]).stdout.splitlines()]
    assert len(rows) == len(PREDICT_TEXTS)
    for row, line in zip(rows, top2):
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["label"] == line.split("\t")[0]


def test_predict_matches_the_library(tiny_run):
    from vdcnn.predict import Classifier

    clf = Classifier.load(tiny_run)
    unfolded = Classifier.load(tiny_run, fold_bn=False)
    assert np.allclose(clf.predict_proba(PREDICT_TEXTS), unfolded.predict_proba(PREDICT_TEXTS), atol=1e-5)
    top = clf.predict(PREDICT_TEXTS, top_k=3)
    assert [len(t) for t in top] == [3] * len(PREDICT_TEXTS)
    assert all(t[0][1] >= t[1][1] >= t[2][1] for t in top)


def test_eval_reports_metrics_json_and_png(runner, tiny_run, tmp_path):
    report_path, png = tmp_path / "report.json", tmp_path / "cm.png"
    holdout = write_topic_csv(tmp_path / "holdout.csv", rows_per_class=40, seed=5)
    result = runner.invoke(app, ["eval", str(tiny_run), str(holdout), "--json", str(report_path),
                                 "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "sports" in result.stdout
    report = json.loads(report_path.read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"} <= set(report)
    assert np.array(report["confusion_matrix"]).sum() == 120
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_to_score_training_rows_as_test(runner, tiny_run, tmp_path):
    # The topic CSV has no test split: its rows were the run's training and validation rows. eval used to
    # score them and call them "test" (issue 21); it refuses, by default and when the file is named.
    for args in ([], [str(tiny_run.parent / "topics.csv")]):
        result = runner.invoke(app, ["eval", str(tiny_run), *args, "--plot", str(tmp_path / "p.png")])
        assert result.exit_code != 0
        message = str(result.exception)  # main() prints it as one line
        assert "has no 'test' split" in message and "vdcnn eval RUN FILE" in message


def test_eval_writes_nothing_unless_a_plot_is_asked_for(runner, tiny_run, tmp_path):
    """eval reads: the run folder is left as it was; --plot PATH draws the confusion matrix there."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = tmp_path / "topics"  # the run's dataset, now with a test split of its own
    data.mkdir()
    write_topic_csv(data / "train.csv")
    write_topic_csv(data / "test.csv", rows_per_class=5, seed=9)
    meta = json.loads((run / "config.json").read_text())
    meta["run"]["data"]["dataset"] = str(data)
    (run / "config.json").write_text(json.dumps(meta))
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    other = write_topic_csv(tmp_path / "holdout.csv", rows_per_class=5, seed=3)
    assert runner.invoke(app, ["eval", str(run)]).exit_code == 0
    assert runner.invoke(app, ["eval", str(run), "--dataset", str(other)]).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    result = runner.invoke(app, ["eval", str(run), "--plot", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flag,word", [("--shortcut", "shortcut on"), ("--no-shortcut", "shortcut off")])
def test_shortcut_flag_trains_and_info_shows_it(runner, topic_csv, tmp_path, flag, word):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(topic_csv), "--out", str(out), "--max-length", "48",
                                 "--epochs", "1", "--batch-size", "32", flag, "--depth", "17", "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(out)])
    assert word in info.stdout and "depth 17" in info.stdout


def test_info_of_presets(runner):
    out = runner.invoke(app, ["info", "--depth", "29"]).stdout
    assert "16,639,924" in out and "1.818 G" in out and "stage 4" in out
    out49 = runner.invoke(app, ["info", "--config", "configs/vdcnn49.yaml"]).stdout
    assert "depth 49" in out49 and "shortcut on" in out49


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_resume_after_interrupted_epoch_gives_identical_weights(topic_csv, tmp_path):
    from vdcnn.config import load_config
    from vdcnn.train import TrainingInterrupted, train

    def config():
        cfg = load_config(None)
        for key, value in {"data.dataset": str(topic_csv), "encoder.max_length": 48, "train.epochs": 2,
                           "train.batch_size": 16, "model.channels": [8, 16, 32, 64], "model.fc_dims": [32],
                           "model.dropout": 0.2, "train.optimizer": "adamw", "train.lr": 0.003,
                           "train.augment_noise": 0.05, "train.ema_decay": 0.9}.items():
            cfg.set(key, value)
        return cfg

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    train(config(), straight, progress=False, log=lambda s: None)
    with pytest.raises(TrainingInterrupted):
        train(config(), broken, progress=False, log=lambda s: None, max_steps=9)  # mid epoch 2 (7 steps/epoch)
    assert json.loads((broken / "config.json").read_text()).get("results") is None
    train(None, broken, resume=True, progress=False, log=lambda s: None)
    a, b = _weights(straight), _weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_file(straight / "model.safetensors").keys() == load_file(broken / "model.safetensors").keys()
    for k, v in load_file(straight / "model.safetensors").items():
        assert torch.equal(v, load_file(broken / "model.safetensors")[k])


def test_resume_needs_only_the_run_folder(runner, tiny_run, tmp_path):
    result = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    result = runner.invoke(app, ["train", "--resume", "--out", str(tiny_run), "--epochs", "5"])
    assert result.exit_code != 0


def test_offline_hub_name_fails_fast_with_a_clear_message(tmp_path):
    env = {**os.environ, "VDCNN_DATA_DIR": str(tmp_path)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vdcnn", "train", "--dataset", "yelp_polarity", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=60)
    assert time.perf_counter() - start < 10
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error:") and "--dataset" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_issue_quick_command_on_real_ag_news(runner, tmp_path):
    """The README's first command: a one-epoch depth-9 run on 2,000 real AG News rows."""
    real_data_dir()
    out = tmp_path / "agnews"
    result = runner.invoke(app, ["train", "--dataset", "ag_news", "--depth", "9", "--max-length", "256", "--epochs",
                                 "1", "--limit", "2000", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert meta["results"]["test_acc"] is not None
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(Path("data/samples/predict.txt").read_text(encoding="utf-8").splitlines()) + "\n",
                     encoding="utf-8")
    a = runner.invoke(app, ["predict", str(out), str(texts)])
    b = runner.invoke(app, ["predict", str(out), "-"], input=texts.read_text(encoding="utf-8"))
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert len(a.stdout.splitlines()) == len(texts.read_text(encoding="utf-8").splitlines())
    assert {line.split("\t")[0] for line in a.stdout.splitlines()} <= set(meta["labels"])


def test_python_m_vdcnn_lists_every_command_and_train_lists_every_option_and_choice(tmp_path):
    from vdcnn.config import CHOICES, OPTIONS

    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "vdcnn", *args], capture_output=True, text=True,
                                       env=env, cwd=tmp_path, timeout=120)
    top = run("--help")
    assert top.returncode == 0, top.stderr
    for command in ("train", "eval", "predict", "info", "compare", "export"):
        assert f" {command} " in top.stdout, command
    train = run("train", "--help").stdout
    for option in OPTIONS:
        assert option.flag in train, option.flag
        section, _, key = option.setting.partition(".")
        for choice in CHOICES.get((section, key), ()):
            assert choice in train, (option.flag, choice)
    assert "--no-shortcut" in train and "--no-mask-padding" in train
    assert "tsv|jsonl" in run("predict", "--help").stdout and "onnx|torchscript" in run("export", "--help").stdout


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory, tiny_run) -> Path:
    """A second run on the same data and labels, with another encoder and seed (an ensemble member)."""
    out = tmp_path_factory.mktemp("byte_run") / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(tiny_run.parent / "topics.csv"), "--out", str(out),
                                      "--encoder", "byte", "--max-length", "64", "--epochs", "2", "--batch-size", "16",
                                      "--optimizer", "adamw", "--lr", "0.003", "--seed", "1", "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_ensemble_predicts_the_mean_of_its_members(runner, tiny_run, byte_run, tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text("\n".join(PREDICT_TEXTS) + "\n", encoding="utf-8")

    def probs(*args):
        result = runner.invoke(app, ["predict", *args, str(text_file), "--format", "jsonl"])
        assert result.exit_code == 0, result.output
        return np.array([[row["probabilities"][k] for k in ("business", "sports", "tech")]
                         for row in map(json.loads, result.stdout.splitlines())])

    a, b = probs(str(tiny_run)), probs(str(byte_run))
    both = probs(str(tiny_run), "--ensemble", str(byte_run))
    assert np.abs(a - b).max() > 1e-3  # two different models, so the mean is not either of them
    assert np.allclose(both, (a + b) / 2, atol=1e-6)


def test_eval_scores_an_ensemble(runner, tiny_run, byte_run, tmp_path):
    holdout = write_topic_csv(tmp_path / "holdout.csv", rows_per_class=10, seed=4)
    result = runner.invoke(app, ["eval", str(tiny_run), str(holdout), "--ensemble", str(byte_run), "--json",
                                 str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    from vdcnn.classifier import load_ensemble
    from vdcnn.data import load_split

    data = load_split(str(holdout), "test")
    expected = (load_ensemble([tiny_run, byte_run]).predict_proba(data.texts).argmax(1) == data.labels).mean()
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == pytest.approx(expected)



def _commands():
    import typer.main

    group = typer.main.get_command(app)
    return [(name, group.commands[name]) for name in sorted(group.commands)]


def test_every_option_has_help():
    missing = [f"{name} {p.opts[0]}" for name, cmd in _commands() for p in cmd.params
               if p.param_type_name == "option" and not p.hidden and not (p.help or "").strip()]
    assert missing == []


def test_the_clis_choices_are_the_librarys():
    from vdcnn.classifier import FORMATS
    from vdcnn.cli import main as cli
    from vdcnn.explain import FORMATS as EXPLAIN_FORMATS
    from vdcnn.explain import METHODS
    from vdcnn.predict import INPUT_FORMATS, OUTPUT_FORMATS

    assert (cli.EXPORT_FORMATS, cli.EXPLAIN_FORMATS, cli.EXPLAIN_METHODS, cli.INPUT_FORMATS, cli.OUTPUT_FORMATS) == (
        FORMATS, EXPLAIN_FORMATS, METHODS, INPUT_FORMATS, OUTPUT_FORMATS)


def test_export_takes_the_bundle_kind_as_to(runner, tiny_run, tmp_path):
    """--format is the output format of predict and explain; export's artifact kind is --to
    (--format still works there, with a deprecation warning)."""
    result = runner.invoke(app, ["export", str(tiny_run), "--to", "torchscript", "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "model.pt").is_file()
    result = runner.invoke(app, ["export", str(tiny_run), "--format", "torchscript", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0 and "deprecated" in result.output and "--to" in result.output
    assert "--to" in runner.invoke(app, ["export", "--help"]).output


def test_predict_imports_only_what_it_uses(tiny_run, tmp_path):
    import subprocess
    import sys

    (tmp_path / "in.txt").write_text("the striker scored a late goal\n")
    probe = ("import sys; from vdcnn.cli.main import main; sys.argv = ['vdcnn', 'predict', sys.argv[1], sys.argv[2]]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('sklearn', 'matplotlib', 'datasets', 'scipy', 'pandas') if m in sys.modules),"
             " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, str(tiny_run), str(tmp_path / "in.txt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_no_private_imports_and_every_import_is_declared():
    """typer's vendored click is private (typer._click); every third-party package vdcnn imports is a
    declared dependency (huggingface_hub was imported but not declared)."""
    import ast
    import re
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=\[; ]", d)[0].lower().replace("-", "_")
                for d in meta["dependencies"] + [x for extra in meta["optional-dependencies"].values() for x in extra]}
    dist_of = {"sklearn": "scikit_learn", "yaml": "pyyaml"}
    used = set()
    for path in [*root.joinpath("vdcnn").rglob("*.py"), *root.joinpath("cli").glob("*.py")]:
        if ".venv" in path.parts:
            continue
        source = path.read_text()
        assert "typer._click" not in source and "from typer import _click" not in source, path
        for node in ast.walk(ast.parse(source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            used.update(n.split(".")[0] for n in names)
    third_party = {dist_of.get(n, n).lower() for n in used if n not in sys.stdlib_module_names and n not in ("vdcnn", "cli")}
    assert third_party - declared == set()


def test_predict_reads_a_table_by_its_extension(runner, tiny_run, tmp_path):
    """A .tsv/.csv/.jsonl file is a table: its header is no text and its id column not part of one (GLUE's
    test.tsv is 'index<TAB>sentence'); `--input-format lines` still reads every line as a text."""
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(PREDICT_TEXTS) + "\n", encoding="utf-8")

    def labels(*args):
        result = runner.invoke(app, ["predict", str(tiny_run), *args])
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    expected = labels(str(lines))
    tsv = tmp_path / "test.tsv"
    tsv.write_text("index\tsentence\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(PREDICT_TEXTS)), encoding="utf-8")
    assert labels(str(tsv)) == expected
    csv_file = tmp_path / "test.csv"
    csv_file.write_text("id,review,stars\n" + "".join(f'{i},"{t}",\n' for i, t in enumerate(PREDICT_TEXTS)),
                        encoding="utf-8")
    assert labels(str(csv_file)) == expected
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "content": t}) + "\n" for i, t in enumerate(PREDICT_TEXTS)))
    assert labels(str(jsonl)) == expected
    assert len(labels(str(tsv), "--input-format", "lines")) == len(PREDICT_TEXTS) + 1  # the header, as asked
    explained = runner.invoke(app, ["explain", str(tiny_run), str(csv_file), "--format", "jsonl"])
    assert explained.exit_code == 0, explained.output
    assert [json.loads(x)["label"] for x in explained.stdout.splitlines()] == [x.split("\t")[0] for x in expected]
    result = runner.invoke(app, ["predict", str(tiny_run), str(tsv), "--text-column", "body"])
    said = result.output + str(result.exception)  # the installed `vdcnn` prints the error as one line
    assert result.exit_code != 0 and "no column 'body'" in said and "index, sentence" in said
    # eval needs labels: on the same unlabelled file it names the column it took them from
    result = runner.invoke(app, ["eval", str(tiny_run), str(tsv)])
    said = result.output + str(result.exception)
    assert result.exit_code != 0 and "read from column 'index'" in said and "--label-column" in said
