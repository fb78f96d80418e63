"""Tests for vdcnn.data: every input format, label mapping, errors, splits and streaming."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vdcnn.data import (
    REGISTRY,
    DatasetSpec,
    TextDataset,
    load_split,
    read_lines,
    read_records,
    stratified_split,
)
from vdcnn.errors import ConfigError, DataError, VdcnnError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"

ROWS = [
    ("Late goal gives the visitors a draw in the rain", "sports"),
    ("The relay team set a national record on Friday", "sports"),
    ("Tennis star withdraws from the open with a wrist injury", "sports"),
    ("Cyclists face a steep final climb in the mountain stage", "sports"),
    ("New phone camera uses a larger sensor for night photos", "tech"),
    ("Cloud provider opens two data centers in the north", "tech"),
    ("Open source database adds support for vector search", "tech"),
    ("Startup shows a folding screen that survives drops", "tech"),
    ("Farmers report a record apple harvest this autumn", "food"),
    ("Street food vendors gather for the spring festival", "food"),
    ("Coffee prices rise after a dry season in growing regions", "food"),
    ("Bakery chain adds a gluten free loaf to its menu", "food"),
]
NAMES = ["food", "sports", "tech"]  # sorted distinct values


def _write_csv(path: Path, rows, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _data_dir() -> Path:
    d = os.environ.get("VDCNN_DATA_DIR")
    if not d:
        pytest.skip("VDCNN_DATA_DIR is not set (real AG News data not available)")
    p = Path(d)
    if not (p / "ag_news").is_dir():
        pytest.skip(f"VDCNN_DATA_DIR={d} has no ag_news/ folder")
    return p


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------


def test_registry_specs():
    expected = {
        "ag_news", "yelp_polarity", "yelp_full", "dbpedia", "yahoo_answers",
        "amazon_polarity", "amazon_full", "sogou_news",
    }
    assert expected <= set(REGISTRY)
    n_classes = {"ag_news": 4, "yelp_polarity": 2, "yelp_full": 5, "dbpedia": 14,
                 "yahoo_answers": 10, "amazon_polarity": 2, "amazon_full": 5, "sogou_news": 5}
    for name, n in n_classes.items():
        spec = REGISTRY[name]
        assert isinstance(spec, DatasetSpec) and spec.name == name
        assert len(spec.label_names) == n and len(set(spec.label_names)) == n
        assert spec.text_fields and spec.label_field and "/" in spec.hub_id
    assert REGISTRY["ag_news"].label_names == ("World", "Sports", "Business", "Sci/Tech")
    assert REGISTRY["dbpedia"].text_fields == ("title", "content")
    assert REGISTRY["yahoo_answers"].label_field == "topic"


# ------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------


def _check_rows(ds: TextDataset, rows=ROWS):
    assert isinstance(ds, TextDataset)
    assert ds.texts == [t for t, _ in rows]
    assert ds.label_names == NAMES
    assert ds.labels.dtype == np.int64
    assert [ds.label_names[i] for i in ds.labels] == [lab for _, lab in rows]
    assert ds.n_classes == 3
    assert ds.class_counts().tolist() == [4, 4, 4]


def test_csv_with_header(tmp_path):
    _check_rows(load_split(str(_write_csv(tmp_path / "d.csv", ROWS))))


def test_csv_gz(tmp_path):
    plain = _write_csv(tmp_path / "d.csv", ROWS)
    gz = tmp_path / "d.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    ds = load_split(str(gz))
    _check_rows(ds)
    assert ds.source == str(gz)


def test_csv_without_header_label_first(tmp_path):
    rows = [(lab, t) for t, lab in ROWS]
    ds = load_split(str(_write_csv(tmp_path / "d.csv", rows, header=None)))
    _check_rows(ds)


def test_tsv(tmp_path):
    _check_rows(load_split(str(_write_csv(tmp_path / "d.tsv", ROWS, delimiter="\t"))))


def test_jsonl_and_json(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in ROWS))
    _check_rows(load_split(str(p)))
    q = tmp_path / "d.json"
    q.write_text(json.dumps([{"text": t, "label": lab} for t, lab in ROWS]))
    _check_rows(load_split(str(q)))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"sentence": [t for t, _ in ROWS], "category": [lab for _, lab in ROWS]})
    p = tmp_path / "d.parquet"
    pq.write_table(table, p)
    _check_rows(load_split(str(p)))


def test_parquet_classlabel_names(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "label": [0, 2, 1]},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "neu", "pos"])}
        ),
    )
    p = tmp_path / "cl.parquet"
    ds.to_parquet(str(p))
    out = load_split(str(p))
    assert out.label_names == ["neg", "neu", "pos"] and out.labels.tolist() == [0, 2, 1]


def test_fasttext(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("".join(f"__label__{lab} {t}\n" for t, lab in ROWS) + "\n")
    _check_rows(load_split(str(p)))


def test_fasttext_bad_line(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("__label__a good line\nno label here\n")
    with pytest.raises(DataError, match="line 2"):
        load_split(str(p))


@pytest.mark.parametrize("name", ["tiny.csv", "tiny.tsv", "tiny.jsonl", "tiny_fasttext.txt"])
def test_sample_files(name):
    ds = load_split(str(SAMPLES / name))
    assert len(ds) == 12
    assert ds.label_names == ["food", "sports", "tech"]
    assert ds.class_counts().tolist() == [4, 4, 4]
    assert all(t and not t.startswith("__label__") for t in ds.texts)


def test_sample_files_agree():
    loaded = [load_split(str(SAMPLES / n)) for n in ("tiny.csv", "tiny.tsv", "tiny.jsonl", "tiny_fasttext.txt")]
    for ds in loaded[1:]:
        assert ds.texts == loaded[0].texts
        assert ds.labels.tolist() == loaded[0].labels.tolist()


def test_numeric_looking_text_stays_text(tmp_path):
    rows = [("12345", "0"), ("007", "1"), ("3.50", "0"), ("NA", "1")]
    ds = load_split(str(_write_csv(tmp_path / "d.csv", rows)))
    assert ds.texts == ["12345", "007", "3.50", "NA"]
    assert ds.label_names == ["0", "1"] and ds.labels.tolist() == [0, 1, 0, 1]


def test_integer_labels_sorted_numerically(tmp_path):
    rows = [(f"text {i}", str(lab)) for i, lab in enumerate([10, 2, 1, 2, 10, 1])]
    ds = load_split(str(_write_csv(tmp_path / "d.csv", rows)))
    assert ds.label_names == ["1", "2", "10"]
    assert ds.labels.tolist() == [2, 1, 0, 1, 2, 0]


def test_none_and_non_str_texts(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": null, "label": 1}\n{"text": 42, "label": 2}\n{"text": "ok", "label": 1}\n')
    ds = load_split(str(p))
    assert ds.texts == ["", "42", "ok"]
    assert ds.label_names == ["1", "2"]


# ------------------------------------------------------------------------------------------
# AG News layout
# ------------------------------------------------------------------------------------------


def test_agnews_layout_folder_and_classes_txt(tmp_path):
    d = tmp_path / "news"
    d.mkdir()
    (d / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    (d / "train.csv").write_text(
        '"3","Stocks Rise","Shares rose on Monday\\as investors cheered\\\\strong results."\n'
        '"1","Talks Resume","Diplomats met again\\nuclear talks resumed in the capital."\n'
        '"4","Chip Unveiled","The firm showed a new chip priced at \\$299."\n'
        '"2","Title Won","The club won the title on the last day."\n'
    )
    (d / "test.csv").write_text('"2","Cup Final","A late goal decided the cup final."\n')
    ds = load_split(str(d), "train")
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert ds.labels.tolist() == [2, 0, 3, 1]
    assert ds.texts[0] == "Stocks Rise Shares rose on Monday as investors cheered strong results."
    # AG News escapes line breaks with a bare backslash: "\nuclear" is "<newline>nuclear".
    assert ds.texts[1] == "Talks Resume Diplomats met again nuclear talks resumed in the capital."
    assert ds.texts[2] == "Chip Unveiled The firm showed a new chip priced at $299."
    assert ds.source == str(d / "train.csv")
    test = load_split(str(d), "test")
    assert test.texts == ["Cup Final A late goal decided the cup final."]
    assert test.labels.tolist() == [1] and test.n_classes == 4


def test_newline_escape_dataset(tmp_path):
    # Yelp-style char-CNN CSVs write newlines as a literal backslash-n.
    p = tmp_path / "reviews.csv"
    p.write_text('"2","Great food.\\nFriendly staff.\\n\\nWill return."\n"1","Cold soup.\\nSlow service."\n')
    ds = load_split(str(p))
    assert ds.texts == ["Great food. Friendly staff. Will return.", "Cold soup. Slow service."]
    assert ds.label_names == ["1", "2"] and ds.labels.tolist() == [1, 0]


def test_sample_agnews_layout():
    train = load_split(str(SAMPLES / "tiny_agnews_layout"))
    test = load_split(str(SAMPLES / "tiny_agnews_layout"), "test")
    assert train.label_names == test.label_names == ["Sports", "Tech", "Food"]
    assert len(train) == 12 and len(test) == 6
    assert train.class_counts().tolist() == [4, 4, 4]
    assert all("\\" not in t for t in train.texts + test.texts)
    assert "$2.1 billion" in train.texts[5]


def test_missing_split_in_folder(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match="split 'test'"):
        load_split(str(tmp_path), "test")


def test_folder_prefers_exact_split_name(tmp_path):
    _write_csv(tmp_path / "train.csv", ROWS)
    _write_csv(tmp_path / "train_small.csv", ROWS[:6])
    assert len(load_split(str(tmp_path))) == 12


# ------------------------------------------------------------------------------------------
# Columns and label names
# ------------------------------------------------------------------------------------------


def test_explicit_columns_joined(tmp_path):
    rows = [(t.split()[0], t, lab) for t, lab in ROWS]
    p = _write_csv(tmp_path / "d.csv", rows, header=("headline", "body", "topic"))
    ds = load_split(str(p), text_columns=["headline", "body"], label_column="topic")
    assert ds.texts[0] == "Late Late goal gives the visitors a draw in the rain"
    assert ds.label_names == NAMES


def test_columns_without_known_names_are_chosen_by_content(tmp_path):
    # Used to be refused ("no text column found"); issue 21: the free-text column is the text and the
    # short categorical one the label, whatever their names.
    p = _write_csv(tmp_path / "d.csv", [(t, lab) for t, lab in ROWS], header=("body", "topic"))
    ds = load_split(str(p))
    assert ds.texts == [t for t, _ in ROWS] and ds.label_names == sorted({lab for _, lab in ROWS})
    p = _write_csv(tmp_path / "n.csv", [("7", lab) for _, lab in ROWS], header=("count", "topic"))
    with pytest.raises(DataError, match="no text column found.*available columns: count, topic"):
        load_split(str(p))


def test_unknown_column(tmp_path):
    p = _write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match=r"'body'.*available columns: text, label"):
        load_split(str(p), text_columns=["body"])
    with pytest.raises(DataError, match="available columns"):
        load_split(str(p), label_column="nope")


def test_label_names_mapping_by_name(tmp_path):
    p = _write_csv(tmp_path / "d.csv", ROWS)
    names = ["tech", "food", "sports", "politics"]
    ds = load_split(str(p), label_names=names)
    assert ds.label_names == names
    assert [names[i] for i in ds.labels] == [lab for _, lab in ROWS]
    assert ds.n_classes == 4 and ds.n_present_classes == 3


def test_label_names_mapping_by_index(tmp_path):
    p = _write_csv(tmp_path / "d.csv", [("a", "0"), ("b", "2"), ("c", "1")])
    ds = load_split(str(p), label_names=["x", "y", "z"])
    assert ds.labels.tolist() == [0, 2, 1]
    with pytest.raises(DataError, match=r"7.*known"):
        load_split(str(_write_csv(tmp_path / "e.csv", [("a", "0"), ("b", "7")])), label_names=["x", "y"])


def test_label_names_digit_names_match_by_name(tmp_path):
    # A model trained on labels "1".."5" maps eval labels 1..5 by name, not by index.
    p = _write_csv(tmp_path / "d.csv", [("a", "1"), ("b", "5")])
    ds = load_split(str(p), label_names=["1", "2", "3", "4", "5"])
    assert ds.labels.tolist() == [0, 4]


def test_unknown_label(tmp_path):
    p = _write_csv(tmp_path / "d.csv", ROWS + [("A chess final", "games")])
    with pytest.raises(DataError, match=r"d\.csv: unknown label\(s\) 'games', not seen in training; the model knows"):
        load_split(str(p), label_names=NAMES)


def test_agnews_layout_with_label_names(tmp_path):
    (tmp_path / "t.csv").write_text('"1","a","b"\n"4","c","d"\n')
    ds = load_split(str(tmp_path / "t.csv"), label_names=["W", "S", "B", "T"])
    assert ds.labels.tolist() == [0, 3]


def test_empty_label_is_error(tmp_path):
    p = _write_csv(tmp_path / "d.csv", [("a", "x"), ("b", "")])
    with pytest.raises(DataError, match="empty label"):
        load_split(str(p))


# ------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_split(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="not a known dataset name"):
        load_split("not_a_dataset")


def test_empty_file(tmp_path):
    for name in ("e.csv", "e.jsonl", "e.txt", "e.tsv"):
        (tmp_path / name).write_text("")
        with pytest.raises(DataError, match="empty"):
            load_split(str(tmp_path / name))


def test_header_only_has_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no data rows"):
        load_split(str(tmp_path / "h.csv"))


def test_directory_as_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="directory"):
        load_split(str(tmp_path / "dir.csv"))


def test_binary_garbage(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("g.csv", "g.jsonl", "g.parquet", "g.csv.gz"):
        (tmp_path / name).write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
        with pytest.raises(DataError, match=name.replace(".", r"\.")):
            load_split(str(tmp_path / name))


def test_unsupported_extension(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        load_split(str(tmp_path / "d.xlsx"))


def test_malformed_json(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(DataError, match="d.jsonl"):
        load_split(str(tmp_path / "d.jsonl"))


def test_errors_are_vdcnn_errors():
    assert issubclass(DataError, VdcnnError) and issubclass(ConfigError, VdcnnError)


# ------------------------------------------------------------------------------------------
# Splits and limit
# ------------------------------------------------------------------------------------------


def test_stratified_split_properties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 1003)
    labels[:2] = 7  # a class with two rows
    labels[2] = 9  # a class with one row
    tr, va = stratified_split(labels, 0.1, seed=3)
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    for cls in np.unique(labels):
        n = np.sum(labels == cls)
        nv = np.sum(labels[va] == cls)
        if n >= 2:
            assert nv >= 1 and abs(nv - n * 0.1) <= 1
            assert np.sum(labels[tr] == cls) >= 1
        else:
            assert nv == 0
    tr2, va2 = stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    _, va3 = stratified_split(labels, 0.1, seed=4)
    assert not np.array_equal(va, va3)


def test_stratified_split_edges():
    labels = np.array([0, 0, 1, 1, 1])
    tr, va = stratified_split(labels, 0.0, seed=0)
    assert tr.tolist() == [0, 1, 2, 3, 4] and va.tolist() == []
    for bad in (-0.1, 0.51, 1.0, float("nan")):
        with pytest.raises(ConfigError):
            stratified_split(labels, bad, seed=0)
    tr, va = stratified_split(labels, 0.5, seed=0)
    assert len(va) == 3 and set(labels[va]) == {0, 1}


def test_limit_is_stratified_and_seeded(tmp_path):
    rows = [(f"text number {i}", ["a", "b", "c"][i % 3] if i < 90 else "d") for i in range(100)]
    p = _write_csv(tmp_path / "d.csv", rows)
    ds = load_split(str(p), limit=20, seed=1)
    assert len(ds) == 20
    assert ds.label_names == ["a", "b", "c", "d"]
    counts = ds.class_counts().tolist()
    assert counts == [6, 6, 6, 2]
    again = load_split(str(p), limit=20, seed=1)
    assert again.texts == ds.texts
    other = load_split(str(p), limit=20, seed=2)
    assert other.texts != ds.texts
    # original order is kept
    idx = [int(t.split()[-1]) for t in ds.texts]
    assert idx == sorted(idx)
    assert len(load_split(str(p), limit=1000)) == 100
    with pytest.raises(ConfigError):
        load_split(str(p), limit=0)


# ------------------------------------------------------------------------------------------
# Registry names: local folder and (offline) hub
# ------------------------------------------------------------------------------------------


def test_registry_real_ag_news(monkeypatch):
    root = _data_dir()
    monkeypatch.setenv("VDCNN_DATA_DIR", str(root))
    train = load_split("ag_news", "train")
    assert len(train) == 63743
    assert train.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert train.class_counts().tolist() == [15827, 15970, 15958, 15988]
    test = load_split("ag_news", "test")
    assert len(test) == 7600
    assert test.class_counts().tolist() == [1900] * 4
    assert all(isinstance(t, str) and t for t in test.texts)
    assert not any("\\" in t for t in test.texts)
    small = load_split("ag_news", "test", limit=400, seed=0)
    assert small.class_counts().tolist() == [100] * 4


def test_registry_local_folder(tmp_path, monkeypatch):
    d = tmp_path / "yelp_polarity"
    d.mkdir()
    (d / "train.csv").write_text('"1","bad"\n"2","good"\n"2","fine"\n')
    monkeypatch.setenv("VDCNN_DATA_DIR", str(tmp_path))
    ds = load_split("yelp_polarity")
    # No classes.txt: the registry's names, 1-based char-CNN labels.
    assert ds.label_names == ["negative", "positive"]
    assert ds.labels.tolist() == [0, 1, 1]


def test_offline_hub_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("VDCNN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    try:
        load_split("yelp_polarity", "train", limit=10)
    except DataError as exc:
        msg = str(exc)
        assert "--dataset PATH" in msg and "VDCNN_DATA_DIR" in msg
        assert "\n" not in msg
    else:  # pragma: no cover - only with network access
        pytest.skip("the Hugging Face hub is reachable from this machine")
    assert time.monotonic() - t0 < 10


def test_hub_offline_env_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("VDCNN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="VDCNN_DATA_DIR"):
        load_split("sogou_news", "test")
    assert time.monotonic() - t0 < 10


# ------------------------------------------------------------------------------------------
# Streaming
# ------------------------------------------------------------------------------------------


def test_read_lines_chunks(tmp_path):
    p = tmp_path / "in.txt"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(10_001):
            f.write(f"line {i}\n")
    it = read_lines(str(p), chunk_size=4096)
    first = next(it)
    assert len(first) == 4096 and first[0] == "line 0" and first[-1] == "line 4095"
    rest = list(it)
    assert [len(c) for c in rest] == [4096, 1809]
    assert rest[-1][-1] == "line 10000"


def test_read_lines_is_lazy(tmp_path):
    # A generator: the first chunk is available without consuming the rest of the stream.
    p = tmp_path / "in.txt"
    p.write_text("a\nb\nc\n")
    it = read_lines(str(p), chunk_size=1)
    assert next(it) == ["a"]


def test_read_lines_stdin(monkeypatch):
    raw = b"first\r\nsecond\n\nlast without newline"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    chunks = list(read_lines("-", chunk_size=3))
    assert chunks == [["first", "second", ""], ["last without newline"]]


def test_read_lines_invalid_utf8_and_nul(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"caf\xc3\xa9 ok\nbad \xff\xfe byte\nnul\x00inside\n")
    lines = [line for chunk in read_lines(str(p)) for line in chunk]
    assert lines[0] == "café ok"
    assert lines[1] == "bad \ufffd\ufffd byte"
    assert lines[2] == "nul inside"


def test_read_lines_gz(tmp_path):
    p = tmp_path / "in.txt.gz"
    p.write_bytes(gzip.compress(b"one\ntwo\n"))
    assert list(read_lines(str(p))) == [["one", "two"]]


def test_read_lines_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_lines(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="directory"):
        read_lines(str(tmp_path))


def test_read_lines_sample():
    lines = [line for chunk in read_lines(str(SAMPLES / "predict.txt")) for line in chunk]
    assert len(lines) >= 5 and all(lines)


def test_read_records_csv(tmp_path):
    p = _write_csv(tmp_path / "d.csv", [(f'say "hi"\n{i}', "x") for i in range(10)])
    chunks = list(read_records(str(p), "csv", "text", chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert chunks[0][1] == 'say "hi"\n1'
    with pytest.raises(DataError, match="available columns: text, label"):
        list(read_records(str(p), "csv", "body"))


def test_read_records_jsonl(tmp_path, monkeypatch):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "id": 1}\n\n{"text": null}\n{"text": 5}\n')
    assert list(read_records(str(p), "jsonl", "text")) == [["a", "", "5"]]
    with pytest.raises(DataError, match="line 1.*'body'"):
        list(read_records(str(p), "jsonl", "body"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        list(read_records(str(tmp_path / "bad.jsonl"), "jsonl", "text"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "from stdin"}\n')))
    assert list(read_records("-", "jsonl", "text")) == [["from stdin"]]


def test_read_records_bad_format(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text\na\n")
    with pytest.raises(ConfigError):
        read_records(str(p), "xml", "text")
