"""Reliability and security, driven as a user drives the CLI.

Every bad input must give one ``error: ...`` line on stderr, a non-zero exit code, no
traceback, and leave the disk as it was. Training survives Ctrl-C, SIGTERM, ``kill -9``
(also inside a checkpoint write), NaN losses, a full disk and a second training into the
same folder. Checkpoints are never unpickled: a crafted ``last.pt`` cannot run code.

Most cases call ``vdcnn.cli.main.main()`` in-process (same code path as the ``vdcnn`` command,
without paying for a Python start); subprocesses only where signals are needed.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from tests.conftest import TINY, write_topic_csv

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FAST = ["--max-length", "32", "--batch-size", "16", "--no-progress", "--optimizer", "adamw", "--lr", "0.003",
              "--threads", "1", *TINY]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_line_error(self) -> str:
        """The error line; asserts the failure looks as the issue asks."""
        assert self.code != 0, (self.out, self.err)
        assert "Traceback" not in self.err and "Traceback" not in self.out, self.err
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        assert len(lines) >= 1 and lines[-1].startswith("error: "), self.err
        errors = [ln for ln in lines if ln.startswith("error")]
        assert len(errors) == 1, self.err
        return lines[-1]


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run ``vdcnn ARGS`` through ``vdcnn.cli.main.main`` in-process (cwd = tmp_path)."""
    from vdcnn.cli.main import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str, stdin: bytes | None = None) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["vdcnn", *map(str, args)])
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        code = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        # Warnings a user would see on stderr (Python shows these categories by default).
        shown = [f"{w.category.__name__}: {w.message}" for w in caught
                 if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                                ResourceWarning))]
        return Result(code, captured.out, captured.err + "".join(f"{s}\n" for s in shown))

    return run


def _lock_is_free(folder: Path) -> bool:
    """Whether no training holds the run folder's lock (the .lock file itself stays, as filelock leaves it)."""
    from vdcnn.checkpoint import LOCK_FILE, run_lock

    if not (folder / LOCK_FILE).exists():
        return True
    with run_lock(folder):  # raises CheckpointError while held
        return True

def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and mtime (the run's lock file aside: a training that
    refuses may leave it, free, as filelock does)."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_dir() or p.name == ".lock":
                continue  # a folder's mtime moves when a lock file comes and goes
            st_ = p.stat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


def fails_cleanly(cli, args, *watch: Path, contains: str | tuple[str, ...] = (), stdin: bytes | None = None) -> str:
    """Run, assert a clean one-line failure that changed nothing under ``watch``; return the line."""
    before = snapshot(*watch)
    line = cli(*args, stdin=stdin).one_line_error()
    assert snapshot(*watch) == before, f"files changed on disk after: {line}"
    for word in (contains,) if isinstance(contains, str) else contains:
        assert word.lower() in line.lower(), line
    return line


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("confusion-*.png", "export-*"))
    return dst


def edit_config(run: Path, change) -> None:
    meta = json.loads((run / "config.json").read_text())
    change(meta)
    (run / "config.json").write_text(json.dumps(meta))


def lib_config(data: Path, epochs: int = 2, **extra):
    from vdcnn.config import load_config

    cfg = load_config(None)
    values = {"data.dataset": str(data), "encoder.max_length": 32, "train.epochs": epochs, "train.batch_size": 16,
              "model.channels": [8, 16, 32, 64], "model.fc_dims": [32], "model.embedding_dim": 8,
              "train.optimizer": "adamw", "train.lr": 0.003, "train.threads": 1, **extra}
    for key, value in values.items():
        cfg.set(key, value)
    return cfg


def same_weights(a: Path, b: Path) -> None:
    sa = torch.load(a / "last.pt", weights_only=True)["model"]
    sb = torch.load(b / "last.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def paused_run(tmp_path_factory) -> Path:
    """A run stopped mid epoch 1 (resumable state, no best model yet)."""
    from vdcnn.train import TrainingInterrupted, train

    root = tmp_path_factory.mktemp("paused")
    data = write_topic_csv(root / "topics.csv", rows_per_class=20)
    with pytest.raises(TrainingInterrupted):
        train(lib_config(data), root / "run", progress=False, log=lambda s: None, max_steps=2)
    return root / "run"


@pytest.fixture
def paused(paused_run, tmp_path) -> Path:
    return copy_run(paused_run, tmp_path / "paused")


# --------------------------------------------------------------------------------------------
# Bad input: train
# --------------------------------------------------------------------------------------------


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    (tmp / "folder").mkdir()
    files["folder without a train file"] = tmp / "folder"
    (tmp / "empty.csv").write_bytes(b"")
    files["empty file"] = tmp / "empty.csv"
    (tmp / "header_only.csv").write_text("text,label\n")
    files["no rows"] = tmp / "header_only.csv"
    (tmp / "binary.csv").write_bytes(random.Random(0).randbytes(4096))
    files["binary file"] = tmp / "binary.csv"
    (tmp / "latin1.csv").write_bytes("text,label\n\"café crème\",a\n\"naïve\",b\n".encode("latin-1"))
    files["invalid UTF-8"] = tmp / "latin1.csv"
    rows = "".join(f"\"row number {i} with some padding text\",{'ab'[i % 2]}\n" for i in range(3000))
    (tmp / "late_latin1.csv").write_bytes(b"text,label\n" + rows.encode() + "\"café\",a\n".encode("latin-1"))
    files["invalid UTF-8 after 64 KB"] = tmp / "late_latin1.csv"
    (tmp / "nul.csv").write_bytes(b"text,label\n\"a\x00b\",x\n\"c d\",y\n")
    files["NUL bytes"] = tmp / "nul.csv"
    (tmp / "no_label.csv").write_text("text\nhello\nworld\n")
    files["missing label column"] = tmp / "no_label.csv"
    (tmp / "ragged_extra.csv").write_text("text,label\n\"a b\",x\n\"c d\",y,surplus\n\"e\",x\n")
    files["row with an extra field"] = tmp / "ragged_extra.csv"
    (tmp / "ragged_missing.csv").write_text("text,label\n\"a b\",x\n\"c d\"\n\"e\",y\n")
    files["row with a missing field"] = tmp / "ragged_missing.csv"
    (tmp / "one_class.csv").write_text("text,label\n" + "".join(f"\"text {i}\",only\n" for i in range(20)))
    files["one class"] = tmp / "one_class.csv"
    (tmp / "data.bin").write_bytes(b"\x00\x01")
    files["unknown extension, binary content"] = tmp / "data.bin"
    return files


BAD_TRAIN_DATA = {
    "does not exist": "no such file",
    "folder without a train file": "no file for split 'train'",
    "empty file": "empty",
    "no rows": "no data rows",
    "binary file": "binary",
    "NUL bytes": "binary",
    "missing label column": "no label column",
    "row with an extra field": "cannot read",
    "row with a missing field": "empty label",
    "one class": "only one class",
    "unknown extension, binary content": "binary",  # any extension is read by its content (issue 21)
}


@pytest.mark.parametrize("case", list(BAD_TRAIN_DATA))
def test_train_refuses_bad_data(cli, tmp_path, case):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    files = _bad_files(data_dir)
    path = files.get(case, data_dir / "nowhere.csv")
    fails_cleanly(cli, ["train", "--dataset", path, "--out", tmp_path / "run", "--epochs", "1", *TRAIN_FAST],
                  tmp_path, contains=BAD_TRAIN_DATA[case])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,word", [
    (["--depth", "7"], "depth must be one of"),
    (["--max-length", "0"], "max_length"),
    (["--batch-size", "-3"], "batch_size"),
    (["--epochs", "0"], "epochs"),
    (["--lr", "-1"], "lr"),
    (["--val-fraction", "0.9"], "val_fraction"),
    (["--optimizer", "rmsprop"], "optimizer"),
    (["--stages", "a,b"], "stages"),
    (["--limit", "0"], "limit"),
    (["--label-column", "nope"], "unknown column"),
    (["--text-column", "nope"], "unknown column"),
    (["--set", "train.nonsense=1"], "unknown setting"),
    (["--set", "train.epochs=many"], "integer"),
    (["--set", "train.epochs"], "section.key=value"),
    (["--epochs", "two"], "--epochs"),  # a click usage error, also one line
    (["--no-such-flag"], "no such option"),
])
def test_train_refuses_bad_options(cli, tmp_path, topic_csv, args, word):
    fails_cleanly(cli, ["train", "--dataset", topic_csv, "--out", tmp_path / "run", "--epochs", "1", *TRAIN_FAST,
                        *args], tmp_path, contains=word)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,word", [
    ("train:\n  epochs: 1\n  turbo: true\n", "unknown setting 'train.turbo'"),
    ("train:\n  epochs: [1, 2]\n", "must be an integer"),
    ("model:\n  shortcut: maybe\n", "true or false"),
    ("wheels: 4\n", "unknown section"),
    ("- just\n- a list\n", "mapping"),
    ("train: {epochs: 1\n", "not valid YAML"),
    ("", "empty"),
    (None, "not found"),
    ("folder", "folder"),
    (b"\xff\xfe\x00b\x00i\x00n", "YAML"),
])
def test_train_refuses_bad_config_files(cli, tmp_path, topic_csv, text, word):
    path = tmp_path / "preset.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text == "folder":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    fails_cleanly(cli, ["train", "--config", path, "--dataset", topic_csv, "--out", tmp_path / "run"], tmp_path,
                  contains=word)


def test_train_out_is_a_file(cli, tmp_path, topic_csv):
    (tmp_path / "taken").write_text("not a folder")
    fails_cleanly(cli, ["train", "--dataset", topic_csv, "--out", tmp_path / "taken", *TRAIN_FAST], tmp_path,
                  contains="taken")


def test_train_into_an_existing_run_refuses(cli, tmp_path, paused, topic_csv):
    fails_cleanly(cli, ["train", "--dataset", topic_csv, "--out", paused, *TRAIN_FAST], tmp_path,
                  contains="--resume")


def test_training_accepts_a_huge_text_and_missing_test_split(cli, tmp_path):
    """A 2 MB text is fine for training (encoders truncate); a folder without a test split trains and says so."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_topic_csv(folder / "train.csv", rows_per_class=8)
    with open(folder / "train.csv", "a") as f:
        f.write('"' + "long words " * 200_000 + '",sports\n')
    result = cli("train", "--dataset", folder, "--out", tmp_path / "run", "--epochs", "1", *TRAIN_FAST)
    assert result.code == 0, result.err
    assert "no test split" in result.err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["results"]["test_acc"] is None


def test_resume_a_newer_format_version(cli, tmp_path, paused):
    edit_config(paused, lambda m: m.update(format_version=99))
    fails_cleanly(cli, ["train", "--resume", "--out", paused], tmp_path, contains=("format version 99", "upgrade"))


def test_resume_a_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    fails_cleanly(cli, ["train", "--resume", "--out", tmp_path / "empty"], tmp_path, contains="config.json is missing")
    fails_cleanly(cli, ["train", "--resume", "--out", tmp_path / "nowhere"], tmp_path, contains="not found")


# --------------------------------------------------------------------------------------------
# Bad input: eval, predict, info, export, compare
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["does not exist", "a file", "empty folder", "newer format", "garbage config"])
@pytest.mark.parametrize("command", ["eval", "predict", "info", "export"])
def test_commands_refuse_bad_run_folders(cli, tmp_path, tiny_run, command, case):
    run = tmp_path / "run"
    if case == "a file":
        run.write_text("hello")
    elif case == "empty folder":
        run.mkdir()
    elif case == "newer format":
        copy_run(tiny_run, run)
        edit_config(run, lambda m: m.update(format_version=2))
    elif case == "garbage config":
        copy_run(tiny_run, run)
        (run / "config.json").write_bytes(b"\x00\x13garbage{")
    texts = tmp_path / "in.txt"
    texts.write_text("hello\n")
    args = {"eval": ["eval", run], "predict": ["predict", run, texts], "info": ["info", run],
            "export": ["export", run, "--to", "torchscript"]}[command]
    words = {"does not exist": "not found", "a file": "run", "empty folder": "config.json",
             "newer format": "format version 2", "garbage config": "config.json"}
    if command == "info" and case in ("does not exist", "a file"):
        words = {"does not exist": "not found", "a file": "mapping"}  # info takes a run folder or a YAML preset
    fails_cleanly(cli, args, tmp_path, tiny_run, contains=words[case])


@pytest.mark.parametrize("case,word", [
    ("does not exist", "no such file"),
    ("empty file", "empty"),
    ("binary file", "binary"),
    ("unknown labels", "unknown label"),
    ("missing label column", "no label column"),
    ("row with an extra field", "cannot read"),
])
def test_eval_refuses_bad_data(cli, tmp_path, tiny_run, case, word):
    files = _bad_files(tmp_path)
    (tmp_path / "alien.csv").write_text("text,label\n\"the striker scored\",sports\n\"a new chip\",weather\n")
    files["unknown labels"] = tmp_path / "alien.csv"
    path = files.get(case, tmp_path / "nowhere.csv")
    fails_cleanly(cli, ["eval", tiny_run, path], tmp_path, tiny_run, contains=word)


@pytest.mark.parametrize("args,word", [
    (["--split", "test"], "no file for split 'test'"),
    (["--split", "train", "--label-column", "nope"], "unknown column"),
    (["--batch-size", "0"], "--batch-size"),
    (["--dataset", "other.csv"], "either as DATA or as --dataset"),
])
def test_eval_refuses_bad_options(cli, tmp_path, tiny_run, args, word):
    folder = tmp_path / "data"
    folder.mkdir()
    write_topic_csv(folder / "train.csv", rows_per_class=3)
    fails_cleanly(cli, ["eval", tiny_run, folder, *args], tmp_path, tiny_run, contains=word)


def _predict_lines(result: Result) -> list[str]:
    assert result.code == 0, result.err
    return result.out.splitlines()


def test_predict_decodes_invalid_utf8_and_nul_and_says_how_many_lines(cli, tmp_path, tiny_run):
    path = tmp_path / "in.txt"
    path.write_bytes(b"caf\xe9 cr\xe8me\nthe striker scored\nnul\x00byte\n\xff\xfe\n")
    result = cli("predict", tiny_run, path)
    assert len(_predict_lines(result)) == 4
    assert "2 of 4 lines had invalid UTF-8" in result.err and "1 had NUL" in result.err
    assert "Traceback" not in result.err


def test_predict_on_a_binary_file_gives_one_line_per_input_line(cli, tmp_path, tiny_run):
    blob = random.Random(1).randbytes(20000)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    result = cli("predict", tiny_run, path)
    n = blob.count(b"\n") + (0 if blob.endswith(b"\n") else 1)
    assert len(_predict_lines(result)) == n
    assert "invalid UTF-8" in result.err


def test_predict_on_an_empty_file_prints_nothing(cli, tmp_path, tiny_run):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert _predict_lines(cli("predict", tiny_run, path)) == []
    assert _predict_lines(cli("predict", tiny_run, "-", stdin=b"")) == []


def test_predict_a_single_100mb_line(cli, tmp_path, tiny_run):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        chunk = b"the striker scored a late goal " * 32768  # 1 MB
        for _ in range(100):
            f.write(chunk)
        f.write(b"\nshort line\n")
    start = time.perf_counter()
    lines = _predict_lines(cli("predict", tiny_run, path))
    assert len(lines) == 2 and all(ln.split("\t")[0] in {"business", "sports", "tech"} for ln in lines)
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("args,setup,word", [
    (["nowhere.txt"], None, "no such file"),
    (["folder"], "folder", "directory"),
    (["in.csv", "--input-format", "csv", "--text-column", "body"], "csv", "no column 'body'"),
    (["in.jsonl", "--input-format", "jsonl"], "jsonl", "line 2 is not valid JSON"),
    (["in.txt", "--top-k", "0"], "txt", "--top-k"),
    (["in.txt", "--format", "xml"], "txt", "--format"),
    (["in.txt", "--input-format", "xml"], "txt", "--input-format"),
    (["in.txt", "--batch-size", "-1"], "txt", "--batch-size"),
    (["in.txt", "--chunk-size", "0"], "txt", "--chunk-size"),
    (["in.txt", "--device", "tpu"], "txt", "device"),
])
def test_predict_refuses_bad_input(cli, tmp_path, tiny_run, args, setup, word):
    if setup == "folder":
        (tmp_path / "folder").mkdir()
    elif setup == "csv":
        (tmp_path / "in.csv").write_text("text\nhello\n")
    elif setup == "jsonl":
        (tmp_path / "in.jsonl").write_text('{"text": "a"}\n{"text": \n')
    elif setup == "txt":
        (tmp_path / "in.txt").write_text("hello\n")
    line = fails_cleanly(cli, ["predict", tiny_run, *args], tmp_path, tiny_run, contains=word)
    assert "\t" not in line


@pytest.mark.parametrize("args,word", [
    (["--depth", "7"], "depth must be one of"),
    (["--max-length", "0"], "max_length"),
    (["--downsample", "avg"], "downsample"),
    (["--num-classes", "1"], "num_classes"),
    (["--stages", "1,x"], "stages"),
])
def test_info_refuses_bad_options(cli, tmp_path, args, word):
    fails_cleanly(cli, ["info", *args], tmp_path, contains=word)


@pytest.mark.parametrize("content,word", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "YAML"),
    (b"model:\n  depth: \xff\n", "YAML"),
    (b"model:\n  colour: red\n", "unknown setting"),
    (b"model:\n  depth: nine\n", "integer"),
])
def test_info_refuses_bad_config_files(cli, tmp_path, content, word):
    (tmp_path / "c.yaml").write_bytes(content)
    fails_cleanly(cli, ["info", tmp_path / "c.yaml"], tmp_path, contains=word)


def test_export_and_compare_refuse_bad_input(cli, tmp_path, tiny_run):
    fails_cleanly(cli, ["export", tiny_run, "--to", "pickle"], tmp_path, tiny_run, contains=("--to", "pickle"))
    fails_cleanly(cli, ["compare", tmp_path / "nowhere"], tmp_path, contains="not found")
    fails_cleanly(cli, ["compare", "--depths", "9,x", "--out", tmp_path / "study"], tmp_path, contains="--depths")


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vdcnn", "--debug", "eval", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr


# --------------------------------------------------------------------------------------------
# Property-based: predict's input parsing never fails and keeps one text per line
# --------------------------------------------------------------------------------------------

line_text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=300)
LONG = st.builds(lambda c, n: c * n, st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                 st.integers(5000, 30000))
lines_strategy = st.lists(st.one_of(line_text, st.just(""), LONG, st.sampled_from(["\x00", "\r", "\x1b[31m", "\t"])),
                          max_size=30)
PROP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def _read_all(chunks) -> list[str]:
    return [t for chunk in chunks for t in chunk]


def _expected(line: str) -> str:
    line = line.replace("\x00", " ")
    return line[:-1] if line.endswith("\r") else line


@PROP
@given(lines=lines_strategy, chunk=st.integers(1, 7), gz=st.booleans())
def test_read_lines_one_text_per_line(tmp_path_factory, lines, chunk, gz):
    from vdcnn.data import read_lines

    path = tmp_path_factory.mktemp("p") / ("in.txt.gz" if gz else "in.txt")
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = _read_all(read_lines(str(path), chunk_size=chunk))
    assert out == [_expected(line) for line in lines]


@PROP
@given(blob=st.binary(max_size=3000), chunk=st.integers(1, 50))
def test_read_lines_on_arbitrary_bytes(tmp_path_factory, blob, chunk):
    from vdcnn.data import read_lines

    path = tmp_path_factory.mktemp("b") / "in.txt"
    path.write_bytes(blob)
    stats: dict = {}
    out = _read_all(read_lines(str(path), chunk_size=chunk, stats=stats))
    assert len(out) == blob.count(b"\n") + (0 if blob.endswith(b"\n") or not blob else 1)
    assert all(isinstance(t, str) and "\x00" not in t and "\n" not in t for t in out)
    assert stats["lines"] == len(out)
    assert stats["nul_lines"] == sum(b"\x00" in ln for ln in blob.split(b"\n") if ln or False)


@PROP
@given(texts=st.lists(st.one_of(line_text.filter(lambda s: "\x00" not in s), LONG.filter(lambda s: "\x00" not in s),
                                st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))),
                      max_size=20),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]), chunk=st.integers(1, 5))
def test_read_records_one_text_per_record(tmp_path_factory, texts, fmt, chunk):
    from vdcnn.data import read_records

    path = tmp_path_factory.mktemp("r") / f"in.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                for i, t in enumerate(texts)), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(["id", "text"])
            w.writerows([i, t] for i, t in enumerate(texts))
    out = _read_all(read_records(str(path), fmt, "text", chunk_size=chunk))
    assert out == texts


# --------------------------------------------------------------------------------------------
# Interrupted training: signals, kill -9, locks
# --------------------------------------------------------------------------------------------


def _spawn_train(data: Path, out: Path, epochs: int, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "vdcnn", "train", "--dataset", str(data), "--out", str(out),
                             "--epochs", str(epochs), "--seed", "3", *TRAIN_FAST],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the training subprocess")
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_state_exits_130_and_resume_finishes(cli, tmp_path, sig):
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=150)
    out = tmp_path / "run"
    proc = _spawn_train(data, out, epochs=4)
    _wait_for(lambda: (out / "metrics.jsonl").exists(), proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "state saved" in stderr and "--resume" in stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] >= 1 and _lock_is_free(out)
    result = cli("train", "--resume", "--out", out)
    assert result.code == 0, result.err
    assert json.loads((out / "config.json").read_text())["results"]["epochs_run"] == 4
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]


def test_sigterm_before_training_starts_exits_cleanly(cli, tmp_path):
    """SIGTERM while the data loads: exit 130, no traceback, and a folder that resumes or re-runs."""
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=150)
    out = tmp_path / "run"
    proc = _spawn_train(data, out, epochs=2)
    _wait_for(lambda: (out / ".lock").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert _lock_is_free(out)
    if (out / "config.json").exists():
        result = cli("train", "--resume", "--out", out)
    else:
        assert not out.exists()  # nothing half-written
        result = cli("train", "--dataset", data, "--out", out, "--epochs", "2", "--seed", "3", *TRAIN_FAST)
    assert result.code == 0, result.err


def _check_no_torn_files(out: Path) -> None:
    """Whatever a kill left behind: the named files are complete (the temp files do not count)."""
    if (out / "config.json").exists():
        json.loads((out / "config.json").read_text())
    if (out / "last.pt").exists():
        torch.load(out / "last.pt", weights_only=True)
    if (out / "model.safetensors").exists():
        load_file(out / "model.safetensors")


def _kill_and_resume(cli, data: Path, out: Path, epochs: int, when, env_extra=None) -> None:
    proc = _spawn_train(data, out, epochs, env_extra)
    when(proc)
    finished = proc.poll() is not None
    proc.kill()
    proc.wait(timeout=30)
    _check_no_torn_files(out)
    if (out / "config.json").exists():
        done = json.loads((out / "config.json").read_text()).get("results") is not None
        assert finished or done or (out / ".lock").exists()  # kill -9 leaves its lock behind
        had_state = (out / "last.pt").exists()
        result = cli("train", "--resume", "--out", out)  # also proves the stale .lock is detected
        assert had_state or "starting it over" in result.err, result.err
    else:  # killed before the run folder existed: run the same command again
        result = cli("train", "--dataset", data, "--out", out, "--epochs", epochs, "--seed", "3", *TRAIN_FAST)
    assert result.code == 0, result.err
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted CLI run (in-process) to compare killed-and-resumed runs with."""
    from vdcnn.cli.main import app
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("ref")
    data = write_topic_csv(root / "topics.csv", rows_per_class=60)
    n = torch.get_num_threads()
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(root / "run"), "--epochs", "3",
                                      "--seed", "3", *TRAIN_FAST])
    torch.set_num_threads(n)
    assert result.exit_code == 0, result.output
    return data, root / "run"


def test_kill_9_inside_a_checkpoint_write_keeps_the_last_one_and_resume_matches(cli, tmp_path, reference_run):
    data, ref = reference_run
    out = tmp_path / "run"
    shutil.copy(data, tmp_path / "topics.csv")
    data = tmp_path / "topics.csv"
    seen = {}

    def in_second_state_write(proc):
        # The hook sleeps inside atomic_write before the rename: kill while the 2nd last.pt is half-way.
        def cond():
            if (out / "last.pt").exists():
                seen.setdefault("first", (out / "last.pt").read_bytes())
                return any(p.name.startswith(".last.pt.") for p in out.iterdir())
            return False
        _wait_for(cond, proc)

    _kill_and_resume_check = _kill_and_resume
    proc_env = {"VDCNN_FAULT_SLEEP_IN_SAVE": "last.pt:0.5"}
    proc = _spawn_train(data, out, 3, proc_env)
    in_second_state_write(proc)
    proc.kill()
    proc.wait(timeout=30)
    assert any(p.name.startswith(".last.pt.") and p.name.endswith(".tmp") for p in out.iterdir())
    assert (out / ".lock").exists()  # left behind by kill -9
    assert (out / "last.pt").read_bytes() == seen["first"]  # the previous state, complete
    _check_no_torn_files(out)
    result = cli("train", "--resume", "--out", out)
    assert result.code == 0, result.err
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    same_weights(ref, out)
    del _kill_and_resume_check


def test_kill_9_at_random_moments_then_resume_matches(cli, tmp_path, reference_run):
    """Seeded random kill times, plus a kill before the first checkpoint (resume then starts over)
    and one inside the weights write."""
    data, ref = reference_run
    rng = random.Random(1234)

    def tmp_of(out: Path, name: str) -> bool:
        return out.exists() and any(x.name.startswith(f".{name}.") for x in out.iterdir())

    trials = [
        ("last.pt:1.0", lambda p, out: _wait_for(lambda: tmp_of(out, "last.pt") and not (out / "last.pt").exists(), p)),
        (None, lambda p, out: (_wait_for(lambda: (out / "config.json").exists(), p), time.sleep(rng.uniform(0.1, 1.5)))),
        ("model.safetensors:1.0", lambda p, out: _wait_for(lambda: tmp_of(out, "model.safetensors"), p)),
    ]
    for trial, (hook, waiter) in enumerate(trials):
        out = tmp_path / f"run{trial}"
        _kill_and_resume(cli, data, out, 3, lambda p: waiter(p, out),
                         {"VDCNN_FAULT_SLEEP_IN_SAVE": hook} if hook else None)
        same_weights(ref, out)


@pytest.mark.slow
def test_kill_9_many_times_in_one_run(cli, tmp_path, reference_run):
    data, ref = reference_run
    out = tmp_path / "run"
    rng = random.Random(99)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "vdcnn", "train", "--resume", "--out", str(out)]
                                if (out / "config.json").exists() else
                                [sys.executable, "-m", "vdcnn", "train", "--dataset", str(data), "--out", str(out),
                                 "--epochs", "3", "--seed", "3", *TRAIN_FAST],
                                cwd=ROOT, env={**os.environ, "VDCNN_FAULT_SLEEP_IN_SAVE": "0.2"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 5.0))
        proc.kill()
        proc.wait()
        _check_no_torn_files(out)
    result = cli("train", "--resume", "--out", out) if (out / "config.json").exists() else None
    assert result is None or result.code == 0, result and result.err
    if result is not None:
        same_weights(ref, out)


def test_resume_before_the_first_checkpoint_restarts_cleanly(cli, tmp_path, paused):
    for name in ("last.pt", "model.safetensors", "metrics.jsonl"):
        (paused / name).unlink(missing_ok=True)
    result = cli("train", "--resume", "--out", paused)
    assert result.code == 0, result.err
    assert "starting it over" in result.err
    assert [r["epoch"] for r in map(json.loads, (paused / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_a_second_training_into_the_same_folder_refuses(cli, tmp_path, paused):
    # Another process holds the run's lock (and wrote its pid into it, as a training does).
    hold = ("import os, sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1]); lock.acquire()\n"
            "open(sys.argv[1], 'w').write(str(os.getpid())); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(paused / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = fails_cleanly(cli, ["train", "--resume", "--out", paused], tmp_path, contains="in use")
        assert str(holder.pid) in line
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: the OS released its lock, the training goes ahead and releases it at the end.
    result = cli("train", "--resume", "--out", paused)
    assert result.code == 0, result.err
    assert _lock_is_free(paused)


# --------------------------------------------------------------------------------------------
# Faulty training: NaN / inf, full or read-only disk
# --------------------------------------------------------------------------------------------


def test_nan_loss_stops_naming_the_step_and_keeps_the_best_checkpoint(cli, tmp_path, paused, topic_csv):
    # Finish epoch 1 normally, then blow the learning rate up so epoch 2 diverges.
    result = cli("train", "--resume", "--out", paused)
    assert result.code == 0, result.err
    best = (paused / "model.safetensors").read_bytes()
    fresh = tmp_path / "fresh"
    line = fails_cleanly(cli, ["train", "--dataset", topic_csv, "--out", fresh,
                               "--epochs", "2", "--optimizer", "sgd", "--lr", "1e30", "--max-length", "32",
                               "--batch-size", "16", "--no-progress", *TINY], tmp_path / "paused",
                         contains=("loss became", "step"))
    assert "epoch 1" in line
    assert not (fresh / "model.safetensors").exists()  # a diverged model never became the best
    assert (paused / "model.safetensors").read_bytes() == best


def test_nan_policy_skip_never_saves_a_nan_model(cli, tmp_path, topic_csv):
    out = tmp_path / "run"
    result = cli("train", "--dataset", topic_csv, "--out", out, "--epochs", "2", "--optimizer", "sgd", "--lr", "1e30",
                 "--max-length", "32", "--batch-size", "16", "--no-progress", "--set", "train.nan_policy=skip", *TINY)
    if result.code == 0:  # some batches were skipped, the model stayed finite
        weights = load_file(out / "model.safetensors")
        assert all(torch.isfinite(v).all() for v in weights.values())
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert sum(r["skipped_steps"] for r in rows) > 0
    else:
        line = result.one_line_error()
        assert "nan" in line.lower() or "inf" in line.lower()
        if (out / "model.safetensors").exists():
            assert all(torch.isfinite(v).all() for v in load_file(out / "model.safetensors").values())


def test_nan_policy_skip_skips_a_bad_batch(tmp_path, topic_csv, monkeypatch):
    """One poisoned batch is skipped (and counted); training finishes with a finite model."""
    import torch.nn.functional as F

    from vdcnn import train as train_mod

    calls = {"n": 0}
    real = F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", poisoned)
    cfg = lib_config(topic_csv, epochs=1, **{"train.nan_policy": "skip"})
    result = train_mod.train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert result.history[0]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "run" / "model.safetensors").values())


@pytest.mark.parametrize("code,word", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_while_saving_keeps_the_previous_checkpoint(cli, tmp_path, paused, monkeypatch,
                                                                           code, word):
    from vdcnn import checkpoint as ckpt

    before = {p.name: p.read_bytes() for p in paused.iterdir()}

    def refuse(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ckpt.os, "replace", refuse)
    line = cli("train", "--resume", "--out", paused).one_line_error()
    monkeypatch.undo()
    assert word in line and "model.safetensors" in line
    after = {p.name: p.read_bytes() for p in paused.iterdir()}
    assert after == before  # no temp files left, no lock left, last.pt unchanged
    result = cli("train", "--resume", "--out", paused)  # and the run can still go on
    assert result.code == 0, result.err


def test_disk_full_inside_the_writer_is_a_clear_error(cli, tmp_path, paused, monkeypatch):
    """torch.save reports a full disk as RuntimeError, not OSError: still a one-line error naming the file."""
    from vdcnn import checkpoint as ckpt

    before = {p.name: p.read_bytes() for p in paused.iterdir()}

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 256 vs 128")

    monkeypatch.setattr(ckpt.torch, "save", full)
    line = cli("train", "--resume", "--out", paused).one_line_error()
    assert "last.pt" in line and "disk full" in line
    after = {p.name: p.read_bytes() for p in paused.iterdir()}
    assert after["last.pt"] == before["last.pt"]  # the previous state is intact
    assert not any(name.endswith(".tmp") for name in after)
    load_file(paused / "model.safetensors")  # what was written before the failure is complete


# --------------------------------------------------------------------------------------------
# Untrusted checkpoints
# --------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch zip", "raw pickle"])
def test_a_pickle_payload_in_last_pt_never_runs(cli, tmp_path, paused, how):
    marker = tmp_path / "PWNED"
    state = torch.load(paused / "last.pt", weights_only=True)
    state["extra"] = _Payload(marker)
    if how == "torch zip":
        torch.save(state, paused / "last.pt")
    else:
        (paused / "last.pt").write_bytes(pickle.dumps(state))
    assert not marker.exists()
    fails_cleanly(cli, ["train", "--resume", "--out", paused], tmp_path, contains=("last.pt", "refused"))
    assert not marker.exists()


def test_model_safetensors_replaced_by_a_pickle(cli, tmp_path, tiny_run):
    run = copy_run(tiny_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    (run / "model.safetensors").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    (tmp_path / "in.txt").write_text("hello\n")
    for args in (["predict", run, tmp_path / "in.txt"], ["eval", run], ["export", run, "--to", "torchscript"]):
        fails_cleanly(cli, args, tmp_path, contains=("model.safetensors", "not a safetensors"))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated weights", "empty weights", "text weights", "missing weights",
                                    "config not JSON", "config a list", "config lacks labels", "config bad model",
                                    "config bad encoder"])
def test_corrupt_run_files_are_named(cli, tmp_path, tiny_run, damage):
    run = copy_run(tiny_run, tmp_path / "run")
    weights = run / "model.safetensors"
    name = "model.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "text weights":
        weights.write_text("these are not the weights you are looking for")
    elif damage == "missing weights":
        weights.unlink()
    else:
        name = "config.json"
        if damage == "config not JSON":
            (run / "config.json").write_text('{"format_version": 1, "model": {')
        elif damage == "config a list":
            (run / "config.json").write_text("[1, 2, 3]")
        elif damage == "config lacks labels":
            edit_config(run, lambda m: m.pop("labels"))
        elif damage == "config bad model":
            edit_config(run, lambda m: m["model"].update(channels="wide"))
        elif damage == "config bad encoder":
            edit_config(run, lambda m: m.update(encoder={"type": "morse"}))
    (tmp_path / "in.txt").write_text("hello\n")
    fails_cleanly(cli, ["predict", run, tmp_path / "in.txt"], tmp_path, contains=name)
    fails_cleanly(cli, ["eval", run], tmp_path, contains=name)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "a dict without model", "wrong shapes",
                                    "missing optimizer"])
def test_corrupt_last_pt_is_named(cli, tmp_path, paused, damage):
    path = paused / "last.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "text":
        path.write_text("resume me")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "a dict without model":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        state = torch.load(path, weights_only=True)
        if damage == "wrong shapes":
            key = next(k for k, v in state["model"].items() if v.ndim > 1)
            state["model"][key] = torch.zeros(2, 2)
        else:
            del state["optimizer"]
        torch.save(state, path)
    fails_cleanly(cli, ["train", "--resume", "--out", paused], tmp_path, contains="last.pt")


@pytest.mark.parametrize("change,word", [
    (lambda m: m["model"].update(channels=[16, 16, 32, 64]), "shape"),
    (lambda m: m["model"].update(fc_dims=[32, 32]), "does not match"),
    (lambda m: m["model"].update(vocab_size=m["model"]["vocab_size"] + 5), "vocabulary"),
    (lambda m: (m["model"].update(vocab_size=m["model"]["vocab_size"] + 1),
                m["encoder"].update(alphabet=m["encoder"]["alphabet"] + "§")), "shape"),
    (lambda m: m.update(labels=m["labels"] + ["weather"]), "label names"),
])
def test_config_that_does_not_match_the_weights(cli, tmp_path, tiny_run, change, word):
    run = copy_run(tiny_run, tmp_path / "run")
    edit_config(run, change)
    (tmp_path / "in.txt").write_text("hello\n")
    fails_cleanly(cli, ["predict", run, tmp_path / "in.txt"], tmp_path, contains=(word, "config.json"))


def test_run_files_get_the_permissions_of_the_umask(tiny_run):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "model.safetensors", "last.pt", "metrics.jsonl"):
        assert (tiny_run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_ensemble_of_runs_with_other_labels_is_refused(cli, tiny_run, tmp_path):
    lines = write_topic_csv(tmp_path / "all.csv").read_text().splitlines()
    two = tmp_path / "two.csv"
    two.write_text("\n".join([lines[0]] + [x for x in lines[1:] if not x.endswith(",tech")]) + "\n")
    assert cli("train", "--dataset", two, "--out", tmp_path / "other", "--epochs", "1", *TRAIN_FAST).code == 0
    for command in (("predict", tiny_run, "-"), ("eval", tiny_run)):
        error = cli(*command, "--ensemble", tmp_path / "other", stdin=b"a late goal\n").one_line_error()
        assert "same labels" in error and "['business', 'sports']" in error
