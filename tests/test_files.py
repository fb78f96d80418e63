"""Data files as users bring them: no extension, no header, label first or last, quotes that are
not CSV quoting, compression, the hub offline, and the real shared datasets."""

from __future__ import annotations

import csv
import gzip
import json
import os
import time
from pathlib import Path

import pytest

from tests.test_labels import topic_rows
from vdcnn.data import REGISTRY, load_split, load_splits
from vdcnn.errors import DataError

# SMS-like messages with '"' that is not CSV quoting: inside, at the start, unbalanced.
MESSAGES = [
    ("ham", "Ok lar... see you at 5"),
    ("spam", '"FREE" entry to win a prize, text WIN to 80082 now'),
    ("ham", 'He said "no way" and left'),
    ("ham", '"Hey there, are you coming tonight?'),
    ("spam", "URGENT! Your mobile won a 2000 prize, call 09061701461"),
    ("ham", "Sorry, I'll call later"),
    ("ham", 'I\'m on the 6" sub line, "quote'),
    ("spam", "Claim your free ringtone now, reply YES"),
]


def write_raw_tsv(path: Path, rows, *, label_first: bool = True, final_newline: bool = False) -> Path:
    lines = [f"{a}\t{b}" if label_first else f"{b}\t{a}" for a, b in rows]
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")
    return path


def test_raw_tsv_without_extension_or_header_with_plain_quotes(tmp_path):
    # The SMS Spam Collection layout: used to be "unsupported file type".
    p = write_raw_tsv(tmp_path / "SMSCollection", MESSAGES * 3)
    ds = load_split(str(p))
    assert len(ds) == len(MESSAGES) * 3  # one row per line: quotes did not merge lines
    assert ds.texts == [m for _, m in MESSAGES] * 3
    assert ds.label_names == ["ham", "spam"]
    assert [ds.label_names[i] for i in ds.labels] == [lab for lab, _ in MESSAGES] * 3


def test_raw_tsv_renamed_to_tsv_is_not_read_as_having_a_header(tmp_path):
    # Renamed to .tsv it used to fail with "no label column found" (first message taken as a header).
    p = write_raw_tsv(tmp_path / "sms.tsv", MESSAGES * 2, final_newline=True)
    ds = load_split(str(p))
    assert len(ds) == 16 and ds.texts[0] == "Ok lar... see you at 5"


def test_label_last_headerless_tsv(tmp_path):
    p = write_raw_tsv(tmp_path / "msgs.txt", MESSAGES * 2, label_first=False)
    ds = load_split(str(p))
    assert ds.texts == [m for _, m in MESSAGES] * 2
    assert [ds.label_names[i] for i in ds.labels] == [lab for lab, _ in MESSAGES] * 2


def test_headerless_csv_whose_first_row_is_short_data(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("good,pos\nbad,neg\nfine,pos\nawful,neg\n")
    ds = load_split(str(p))
    assert len(ds) == 4 and ds.texts == ["good", "bad", "fine", "awful"]
    assert ds.label_names == ["neg", "pos"]


def test_quoted_fields_spanning_lines_stay_one_row(tmp_path):
    rows = [(f"First line {i}\nsecond line with a \"quote\", and a comma", "tech" if i % 2 else "sports")
            for i in range(6)]
    p = tmp_path / "multi.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    ds = load_split(str(p))
    assert ds.texts == [t for t, _ in rows]


def test_files_without_extension_are_sniffed(tmp_path):
    rows = topic_rows(3, seed=4)
    (tmp_path / "as_json").write_text("".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in rows))
    (tmp_path / "as_fasttext").write_text("".join(f"__label__{c} {t}\n" for t, c in rows))
    with open(tmp_path / "as_csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    for name in ("as_json", "as_fasttext", "as_csv"):
        ds = load_split(str(tmp_path / name))
        assert ds.texts == [t for t, _ in rows], name
        assert [ds.label_names[i] for i in ds.labels] == [c for _, c in rows], name


def test_gzip_raw_tsv_without_extension(tmp_path):
    p = tmp_path / "SMS.gz"
    p.write_bytes(gzip.compress(("\n".join(f"{a}\t{b}" for a, b in MESSAGES)).encode()))
    assert len(load_split(str(p))) == len(MESSAGES)


def test_zst_is_refused_clearly(tmp_path):
    p = tmp_path / "d.csv.zst"
    p.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"d\.csv\.zst: zstd-compressed files are not supported"):
        load_split(str(p))


def test_a_spreadsheet_is_refused_with_what_to_do(tmp_path):
    import subprocess
    import sys
    import zipfile

    d = tmp_path / "sheets"
    d.mkdir()
    for split in ("train", "test"):
        with zipfile.ZipFile(d / f"{split}.xlsx", "w") as book:  # an .xlsx is a zip of XML parts
            book.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(DataError, match=r"train\.xlsx: spreadsheets are not read; save the sheet as CSV"):
        load_split(str(d / "train.xlsx"))
    proc = subprocess.run([sys.executable, "-m", "vdcnn", "train", "--dataset", str(d), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "spreadsheets are not read" in proc.stderr


def test_headerless_char_cnn_escapes_only_in_quoted_csv(tmp_path):
    # A raw TSV keeps its backslashes; the char-CNN CSV layout has them undone.
    p = write_raw_tsv(tmp_path / "raw", [("ham", r"path C:\temp\x"), ("spam", "win"), ("ham", "ok")])
    assert load_split(str(p)).texts[0] == r"path C:\temp\x"


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_hub_env_is_one_line_and_fast(tmp_path, monkeypatch, variable):
    from huggingface_hub import HfApi

    def no_network(*a, **kw):
        raise AssertionError("the hub was asked while offline")

    monkeypatch.setenv("VDCNN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")  # set after `datasets` was imported: still respected
    monkeypatch.setattr(HfApi, "dataset_info", no_network)
    t0 = time.monotonic()
    with pytest.raises(DataError) as info:
        load_split("ag_news", "test")
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("HF_HUB_OFFLINE is set and no cached copy was found")
    assert "--dataset PATH" in msg and "VDCNN_DATA_DIR" in msg


def test_unreachable_hub_reads_the_datasets_cache_in_offline_mode(tmp_path, monkeypatch):
    # The hub not answering switches the libraries to their offline mode for the call, so a copy in
    # the `datasets` cache still loads, without the ~25 s of retries `load_dataset` makes online.
    import datasets
    from huggingface_hub import HfApi, constants

    from vdcnn.data import hub

    monkeypatch.setenv("VDCNN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def no_answer(self, repo_id, **kw):
        raise ConnectionRefusedError(f"cannot connect for {repo_id}")

    seen = []

    def cached_load(path, name=None, split=None, **kw):
        seen.append((path, split, datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE))
        if not datasets.config.HF_HUB_OFFLINE:
            raise AssertionError("load_dataset went online")
        return datasets.Dataset.from_dict(
            {"text": ["Stocks rose", "The match ended"], "label": [2, 1]},
            features=datasets.Features({"text": datasets.Value("string"),
                                        "label": datasets.ClassLabel(names=list(REGISTRY["ag_news"].label_names))}))

    monkeypatch.setattr(HfApi, "dataset_info", no_answer)
    monkeypatch.setattr(datasets, "load_dataset", cached_load)
    ds = load_split("ag_news", "test")
    assert seen == [("fancyzhx/ag_news", "test", True, True)]
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"] and ds.labels.tolist() == [2, 1]
    assert datasets.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is False  # restored

    def not_cached(*a, **kw):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", not_cached)
    with pytest.raises(DataError, match=r"^the Hugging Face hub is unreachable \(ConnectionRefusedError: cannot "
                                        r"connect for fancyzhx/ag_news\) and no cached copy was found"):
        load_split("ag_news", "test")
    assert hub.HUB_TIMEOUT_S <= 10


# --------------------------------------------------------------------------------------------
# The real shared datasets, read with nothing but their path
# --------------------------------------------------------------------------------------------


def _shared() -> Path:
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root or not (Path(root) / "sms_spam" / "raw" / "SMSSpamCollection").is_file():
        pytest.skip("the shared datasets are not available: set VDCNN_DATA_DIR (e.g. ../shared/data)")
    return Path(root)


@pytest.mark.parametrize("name,train,val,test,classes", [
    ("trec6", 5452, 0, 500, 6),
    ("sst2", 6920, 872, 1821, 2),
    ("sms_spam", 4465, 0, 1109, 2),
    ("tnews", 53360, 0, 10000, 15),
    ("ag_news", 63743, 0, 7600, 4),
])
def test_shared_datasets_by_path(name, train, val, test, classes):
    splits = load_splits(str(_shared() / name), val_fraction=0.1)
    if val:
        assert len(splits.train) == train and len(splits.val) == val
    else:
        assert len(splits.train) + len(splits.val) == train
        assert abs(len(splits.val) - train * 0.1) <= classes  # 10 % of each class, rounded
    assert len(splits.test) == test
    assert len(splits.label_names) == classes == splits.train.n_present_classes == splits.test.n_present_classes
    if name == "sst2":
        assert splits.val_note == "dev.csv (the dataset's own, 872 rows)"
        assert splits.label_names == ["negative", "positive"]
        assert splits.test.class_counts().tolist() == [912, 909]
    if name == "trec6":
        assert splits.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
        assert splits.test.class_counts().tolist() == [9, 138, 94, 65, 81, 113]
    if name == "ag_news":
        assert splits.label_names == ["World", "Sports", "Business", "Sci/Tech"]
        assert splits.test.class_counts().tolist() == [1900] * 4
    if name == "sms_spam":
        assert splits.test.class_counts().tolist() == [952, 157]


def test_raw_sms_spam_collection_as_published():
    ds = load_split(str(_shared() / "sms_spam" / "raw" / "SMSSpamCollection"))
    assert len(ds) == 5574
    assert ds.label_names == ["ham", "spam"] and ds.class_counts().tolist() == [4827, 747]
    assert sum(t.startswith('"') for t in ds.texts) == 54
    splits = load_splits(str(_shared() / "sms_spam" / "raw" / "SMSSpamCollection"), val_fraction=0.1)
    assert splits.test is None and splits.val_note == "558 rows (10 %) carved from train"
    assert splits.rows_read == 5574 and len(splits.train) == 5016  # the data line prints the true count


def test_shared_folder_names_resolve_under_data_dir(monkeypatch):
    monkeypatch.setenv("VDCNN_DATA_DIR", str(_shared()))
    assert load_split("sst2", "test").class_counts().tolist() == [912, 909]
