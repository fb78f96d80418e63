"""Loading labelled text data: registry datasets (local folder or Hugging Face hub) and files.

Public API:

* :data:`REGISTRY` / :class:`DatasetSpec` - the char-CNN / VDCNN benchmark datasets.
* :func:`load_split` - one split of a registry dataset, a folder or a file, as a :class:`TextDataset`.
* :func:`stratified_split` - deterministic stratified train/validation indices.
* :func:`read_lines` / :func:`read_records` - memory-bounded streaming of unlabelled texts
  (one per line, or one column of a CSV / JSON-lines file) for prediction.

Every problem the user can fix (missing file, wrong column, unreadable data, unreachable hub...)
is raised as :class:`~vdcnn.errors.DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
import socket
import sys
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np

from vdcnn.errors import ConfigError, DataError

__all__ = [
    "DatasetSpec",
    "REGISTRY",
    "TextDataset",
    "load_split",
    "load_splits",
    "Splits",
    "stratified_split",
    "read_lines",
    "read_records",
    "DATA_DIR_ENV",
]

DATA_DIR_ENV = "VDCNN_DATA_DIR"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark dataset: where it lives on the hub and how its columns map to text/label."""

    name: str
    hub_id: str
    text_fields: tuple[str, ...]
    label_field: str
    label_names: tuple[str, ...]
    hub_config: str | None = None
    test_split: str = "test"


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ag_news",
            hub_id="fancyzhx/ag_news",
            text_fields=("text",),
            label_field="label",
            label_names=("World", "Sports", "Business", "Sci/Tech"),
        ),
        DatasetSpec(
            name="yelp_polarity",
            hub_id="fancyzhx/yelp_polarity",
            text_fields=("text",),
            label_field="label",
            label_names=("negative", "positive"),
        ),
        DatasetSpec(
            name="yelp_full",
            hub_id="Yelp/yelp_review_full",
            text_fields=("text",),
            label_field="label",
            label_names=("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
        ),
        DatasetSpec(
            name="dbpedia",
            hub_id="fancyzhx/dbpedia_14",
            text_fields=("title", "content"),
            label_field="label",
            label_names=(
                "Company",
                "EducationalInstitution",
                "Artist",
                "Athlete",
                "OfficeHolder",
                "MeanOfTransportation",
                "Building",
                "NaturalPlace",
                "Village",
                "Animal",
                "Plant",
                "Album",
                "Film",
                "WrittenWork",
            ),
        ),
        DatasetSpec(
            name="yahoo_answers",
            hub_id="community-datasets/yahoo_answers_topics",
            text_fields=("question_title", "question_content", "best_answer"),
            label_field="topic",
            label_names=(
                "Society & Culture",
                "Science & Mathematics",
                "Health",
                "Education & Reference",
                "Computers & Internet",
                "Sports",
                "Business & Finance",
                "Entertainment & Music",
                "Family & Relationships",
                "Politics & Government",
            ),
        ),
        DatasetSpec(
            name="amazon_polarity",
            hub_id="fancyzhx/amazon_polarity",
            text_fields=("title", "content"),
            label_field="label",
            label_names=("negative", "positive"),
        ),
        # UNCERTAIN: the char-CNN "Amazon Review Full" set (5 classes, 3M train / 650k test) has
        # no canonical Hugging Face id. This community upload is a copy of amazon_review_full_csv;
        # its column names are a best guess (not verified offline). Prefer pointing
        # VDCNN_DATA_DIR (or --dataset PATH) at the original CSV files.
        DatasetSpec(
            name="amazon_full",
            hub_id="yassiracharki/Amazon_Reviews_for_Sentiment_Analysis_fine_grained_5_classes",
            text_fields=("review_title", "review_text"),
            label_field="class_index",
            label_names=("1 star", "2 stars", "3 stars", "4 stars", "5 stars"),
        ),
        DatasetSpec(
            name="sogou_news",
            hub_id="community-datasets/sogou_news",
            text_fields=("title", "content"),
            label_field="label",
            label_names=("sports", "finance", "entertainment", "automobile", "technology"),
        ),
    )
}

# Other spellings accepted for registry names (hub / char-CNN archive names).
_ALIASES = {
    "ag-news": "ag_news",
    "yelp_review_polarity": "yelp_polarity",
    "yelp_review_full": "yelp_full",
    "dbpedia_14": "dbpedia",
    "yahoo_answers_topics": "yahoo_answers",
    "amazon_review_polarity": "amazon_polarity",
    "amazon_review_full": "amazon_full",
}

# Folder names under $VDCNN_DATA_DIR tried for a registry name (the char-CNN archives unpack
# to e.g. ``ag_news_csv/``).
_LOCAL_DIRS = {
    "ag_news": ("ag_news", "ag_news_csv"),
    "yelp_polarity": ("yelp_polarity", "yelp_review_polarity", "yelp_review_polarity_csv"),
    "yelp_full": ("yelp_full", "yelp_review_full", "yelp_review_full_csv"),
    "dbpedia": ("dbpedia", "dbpedia_14", "dbpedia_csv"),
    "yahoo_answers": ("yahoo_answers", "yahoo_answers_topics", "yahoo_answers_csv"),
    "amazon_polarity": ("amazon_polarity", "amazon_review_polarity", "amazon_review_polarity_csv"),
    "amazon_full": ("amazon_full", "amazon_review_full", "amazon_review_full_csv"),
    "sogou_news": ("sogou_news", "sogou_news_csv"),
}


# --------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------


@dataclass
class TextDataset:
    """Texts with integer labels ``0..n_classes-1`` indexing ``label_names``."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    source: str
    _counts: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.label_names = [str(n) for n in self.label_names]
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_classes(self) -> int:
        """Number of label names (the model's output size), not the classes present."""
        return len(self.label_names)

    def class_counts(self) -> np.ndarray:
        """Rows per class, length ``n_classes``."""
        return np.bincount(self.labels, minlength=self.n_classes)

    @property
    def n_present_classes(self) -> int:
        """Number of distinct labels that actually occur in this data."""
        return int(np.count_nonzero(self.class_counts()))

    def subset(self, indices: Sequence[int] | np.ndarray) -> "TextDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            label_names=list(self.label_names),
            source=self.source,
        )


# --------------------------------------------------------------------------------------------
# Splitting / subsetting
# --------------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into sorted (train_idx, val_idx), stratified by label.

    Each class gives ``round(count * val_fraction)`` rows to validation, at least one when it
    has two or more rows (and ``val_fraction > 0``), and always keeps at least one for training.
    """
    try:
        frac = float(val_fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"val_fraction must be a number in [0, 0.5], got {val_fraction!r}") from None
    if not (0.0 <= frac <= 0.5):  # also rejects NaN
        raise ConfigError(f"val_fraction must be in [0, 0.5], got {val_fraction!r}")
    labels = np.asarray(labels)
    n = len(labels)
    if frac == 0.0 or n == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val_parts = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        c = len(idx)
        if c < 2:
            continue
        k = min(max(1, int(round(c * frac))), c - 1)
        val_parts.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val_parts)).astype(np.int64) if val_parts else np.zeros(0, np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val


def _stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, label-stratified subset of ``limit`` rows."""
    n = len(labels)
    if limit >= n:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (limit / n)
    take = np.floor(quota).astype(np.int64)
    # Every class present gets a row when the budget allows it.
    if limit >= len(classes):
        take = np.maximum(take, 1)
    take = np.minimum(take, counts)
    # Largest remainders fill (or trim) to exactly `limit`.
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < limit:
        j = order[i % len(order)]
        if take[j] < counts[j]:
            take[j] += 1
        i += 1
    i = 0
    while take.sum() > limit:
        j = order[::-1][i % len(order)]
        if take[j] > (1 if limit >= len(classes) else 0):
            take[j] -= 1
        i += 1
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, take)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Files: probing
# --------------------------------------------------------------------------------------------

_TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "fasttext"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "document")
_LABEL_COLUMN_CANDIDATES = ("label", "labels", "class", "category", "target")
_KNOWN_COLUMN_NAMES = frozenset(
    _TEXT_COLUMN_CANDIDATES
    + _LABEL_COLUMN_CANDIDATES
    + ("title", "description", "question_title", "question_content", "best_answer", "topic", "id", "sentiment", "stars")
)
_SPLIT_PREFIXES = {"validation": ("validation", "valid", "val", "dev"), "val": ("val", "valid", "validation", "dev"), "dev": ("dev", "val", "valid", "validation")}
_PROBE_BYTES = 64 * 1024


def _split_ext(path: Path) -> tuple[str, str, str]:
    """(stem, format extension, compression extension) of a file name, lower-cased."""
    name = path.name.lower()
    comp = ""
    for c in _COMPRESSIONS:
        if name.endswith(c):
            comp = c
            name = name[: -len(c)]
            break
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return name, "", comp
    return stem, "." + ext, comp


def _format_of(path: Path) -> str:
    _, ext, _ = _split_ext(path)
    fmt = _TEXT_FORMATS.get(ext)
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file type {ext or '(no extension)'!r}; "
            f"use .csv, .tsv, .jsonl, .json, .parquet or fastText .txt (optionally .gz)"
        )
    return fmt


def _open_binary(path: Path):
    _, _, comp = _split_ext(path)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if comp == ".xz":
        import lzma

        return lzma.open(path, "rb")
    return open(path, "rb")


def _read_head(path: Path, n: int = _PROBE_BYTES) -> bytes:
    """First ``n`` (decompressed) bytes of a file, with read problems as DataError."""
    try:
        with _open_binary(path) as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read file ({_one_line(exc)})") from None
    except Exception as exc:  # lzma/bz2 specific errors
        raise DataError(f"{path}: cannot read file ({_one_line(exc)})") from None


def _check_file(path: Path, fmt: str) -> bytes:
    """Existence / emptiness / binary checks; returns the head bytes for sniffing."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    head = _read_head(path)
    if not head:
        raise DataError(f"{path}: file is empty")
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise DataError(f"{path}: not a Parquet file (missing PAR1 magic bytes)")
        return head
    if b"\x00" in head:
        raise DataError(f"{path}: looks like a binary file, not {fmt.upper()} text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the probe is fine.
        if exc.start < len(head) - 4:
            raise DataError(
                f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); "
                "is it a binary file or in another encoding?"
            ) from None
    if not head.strip():
        raise DataError(f"{path}: file is empty (only whitespace)")
    if fmt != "parquet":
        _scan_text(path, fmt)
    return head


def _scan_text(path: Path, fmt: str, block: int = 1 << 20) -> None:
    """Labelled data is refused, not silently "repaired", when any byte is not UTF-8 text: NUL bytes
    mean a binary file, invalid UTF-8 a file in another encoding. One streaming pass, bounded memory."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    try:
        with _open_binary(path) as f:
            while True:
                chunk = f.read(block)
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise DataError(f"{path}: looks like a binary file (NUL byte at offset {offset + nul}), "
                                    f"not {fmt.upper()} text")
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}: not UTF-8 text (invalid byte at offset {offset + max(0, exc.start)}); "
                        "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
                if not chunk:
                    return
                offset += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    """The most specific one-line message of an exception chain."""
    inner = exc
    seen = 0
    while (inner.__cause__ or inner.__context__) is not None and seen < 10:
        inner = inner.__cause__ or inner.__context__
        seen += 1
    msg = str(inner).strip().splitlines()
    text = msg[0] if msg else ""
    return f"{type(inner).__name__}: {text}"[:300]


# --------------------------------------------------------------------------------------------
# Files: loading through `datasets`
# --------------------------------------------------------------------------------------------


@contextmanager
def _quiet_datasets():
    """For local-file loads: no progress bars, and no network "download count" ping.

    `datasets` sends a HEAD request to the hub for every `load_dataset` call, even for local
    files (``HF_UPDATE_DOWNLOAD_COUNTS``); offline, that stalls each load for seconds. Both
    settings are restored afterwards.
    """
    import datasets
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    counts = getattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", None)
    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # its "Failed to read file" log would repeat our one-line error
    if enabled:
        ds_logging.disable_progress_bar()
    if counts is not None:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if counts is not None:
            datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts
        if enabled:
            ds_logging.enable_progress_bar()


def _load_local(builder: str, path: Path, **kwargs: Any):
    import datasets

    try:
        with _quiet_datasets():
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except DataError:
        raise
    except Exception as exc:  # pyarrow / pandas / datasets errors -> user-facing message
        if "corresponds to no data" in str(exc):
            raise DataError(f"{path}: no data rows") from None
        raise DataError(f"{path}: cannot read as {builder.upper()} ({_one_line(exc)})") from None


@dataclass
class _Table:
    """Columns read from a file, before label mapping."""

    columns: dict[str, list[Any]]
    headerless: bool = False  # char-CNN layout: label first, 1-based, backslash escapes
    class_label_names: dict[str, list[str]] | None = None  # ClassLabel names per column


def _first_row(head: bytes, delimiter: str) -> list[str]:
    text = head.decode("utf-8", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    except csv.Error:
        return []


_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


def _has_header(head: bytes, delimiter: str, wanted: Sequence[str]) -> bool:
    row = [c.strip() for c in _first_row(head, delimiter)]
    lowered = {c.lower() for c in row}
    if wanted and all(w in row for w in wanted):
        return True
    if lowered & _KNOWN_COLUMN_NAMES:
        return True
    if row and _INT_RE.match(row[0]):
        return False  # char-CNN layout: first cell is a class number
    sample = head.decode("utf-8", errors="replace")[:16384]
    try:
        return csv.Sniffer().has_header(sample)
    except csv.Error:
        return False


def _headerless_names(n: int) -> list[str]:
    if n == 2:
        return ["label", "text"]
    if n == 3:
        return ["class", "title", "description"]
    return ["label"] + [f"field{i}" for i in range(1, n)]


def _read_delimited(path: Path, head: bytes, delimiter: str, wanted: Sequence[str]) -> _Table:
    import datasets

    header = _has_header(head, delimiter, wanted)
    first = _first_row(head, delimiter)
    if not first:
        raise DataError(f"{path}: no columns found in the first line")
    if header:
        names = [c.strip() for c in first]
        if len(set(names)) != len(names):
            raise DataError(f"{path}: duplicate column names in header: {names}")
        kwargs: dict[str, Any] = {}
    else:
        names = _headerless_names(len(first))
        kwargs = {"column_names": names, "header": None}
        if len(first) < 2:
            raise DataError(
                f"{path}: the file has one column and no header; expected label and text columns"
            )
    features = datasets.Features({n: datasets.Value("string") for n in names})
    ds = _load_local(
        "csv",
        path,
        sep=delimiter,
        features=features,
        na_filter=False,
        keep_default_na=False,
        encoding_errors="replace",
        **kwargs,
    )
    if header and list(ds.column_names) != names:
        # pandas may rename/strip; trust what was read.
        names = list(ds.column_names)
    return _Table(columns=_columns_of(ds), headerless=not header)


def _read_json(path: Path) -> _Table:
    ds = _load_local("json", path)
    return _table_from_dataset(ds)


def _read_parquet(path: Path) -> _Table:
    ds = _load_local("parquet", path)
    return _table_from_dataset(ds)


def _table_from_dataset(ds) -> _Table:
    return _Table(columns=_columns_of(ds), class_label_names=_class_label_names(ds))


def _columns_of(ds) -> dict[str, list[Any]]:
    """All columns of a `datasets.Dataset` as python lists (one bulk conversion, not per row)."""
    batch = ds[:] if len(ds) else {}
    return {n: list(batch.get(n, [])) for n in ds.column_names}


def _class_label_names(ds) -> dict[str, list[str]] | None:
    import datasets

    out = {}
    for name, feat in ds.features.items():
        if isinstance(feat, datasets.ClassLabel):
            out[name] = list(feat.names)
    return out or None


_FASTTEXT_RE = re.compile(r"^\s*((?:__label__\S+\s*)+)(.*)$", re.S)


def _read_fasttext(path: Path) -> _Table:
    ds = _load_local("text", path, encoding_errors="replace")
    labels: list[str] = []
    texts: list[str] = []
    for i, line in enumerate(_columns_of(ds).get("text", []), start=1):
        if line is None or not line.strip():
            continue
        m = _FASTTEXT_RE.match(line)
        if m is None:
            raise DataError(
                f"{path}: line {i} does not start with '__label__NAME' (fastText format expected for .txt)"
            )
        first_label = m.group(1).split()[0][len("__label__") :]
        if not first_label:
            raise DataError(f"{path}: line {i} has an empty '__label__' tag")
        labels.append(first_label)
        texts.append(m.group(2).strip())
    return _Table(columns={"label": labels, "text": texts})


def _read_table(path: Path, wanted: Sequence[str]) -> _Table:
    fmt = _format_of(path)
    head = _check_file(path, fmt)
    if fmt == "csv":
        return _read_delimited(path, head, ",", wanted)
    if fmt == "tsv":
        return _read_delimited(path, head, "\t", wanted)
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    return _read_fasttext(path)


# --------------------------------------------------------------------------------------------
# Text and label mapping
# --------------------------------------------------------------------------------------------

_BACKSLASH_NEWLINE = re.compile(r"\s*(?:\\n\s*)+")
_BACKSLASH_RUN = re.compile(r"\s*\\+\s*")
_BACKSLASH_LETTER = re.compile(r"\\([A-Za-z])")


def _charcnn_cleaner(sample_texts: Sequence[str]):
    """A function undoing the char-CNN CSV escapes, tuned on a sample of the data.

    The char-CNN archives replaced newlines by a backslash: AG News joins lines with a bare
    ``\\`` (so ``\\nuclear`` is "<newline>nuclear"), while other sets (Yelp, ...) write ``\\n``.
    If ``\\n`` dominates the backslash-letter pairs it is treated as the newline escape;
    otherwise every backslash run is a line join. Either way the join becomes one space, and
    ``\\$`` (an escaped dollar sign) becomes ``$``.
    """
    n_newline = 0
    n_other = 0
    for t in sample_texts[:5000]:
        if "\\" in t:
            for m in _BACKSLASH_LETTER.finditer(t):
                if m.group(1) == "n":
                    n_newline += 1
                else:
                    n_other += 1
    newline_escape = n_newline > 0 and n_newline > 2 * n_other

    def clean(t: str) -> str:
        if "\\" not in t:
            return t
        t = t.replace("\\$", "$")
        if newline_escape:
            t = _BACKSLASH_NEWLINE.sub(" ", t)
        return _BACKSLASH_RUN.sub(" ", t).strip()

    return clean


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v != v:  # NaN
        return ""
    return str(v)


def _join_texts(columns: Sequence[list[Any]], clean=None) -> list[str]:
    n = len(columns[0])
    out = []
    for i in range(n):
        parts = [_as_text(col[i]) for col in columns]
        if clean is not None:
            parts = [clean(p) for p in parts]
        out.append(" ".join(parts))
    return out


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else None
    if isinstance(v, str) and _INT_RE.match(v):
        return int(v)
    return None


def _label_key(v: Any) -> str:
    i = _as_int(v)
    return str(i) if i is not None else _as_text(v).strip()


def _fmt_values(values: Sequence[Any], limit: int = 10) -> str:
    vals = [repr(v) for v in list(values)[:limit]]
    more = f" (+{len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(vals) + more


def _map_labels(
    raw: list[Any],
    *,
    source: str,
    explicit: Sequence[str] | None,
    class_label_names: list[str] | None,
    file_names: Sequence[str] | None,
    one_based: bool,
) -> tuple[np.ndarray, list[str]]:
    """Raw label values -> (int64 labels 0..K-1, label names)."""
    empty = [i for i, v in enumerate(raw) if v is None or (isinstance(v, str) and not v.strip())
             or (isinstance(v, float) and v != v)]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise DataError(f"{source}: {len(empty)} row(s) have an empty label (data rows {rows}...)")
    ints = [_as_int(v) for v in raw]
    all_int = all(i is not None for i in ints)
    keys = [_label_key(v) for v in raw]

    if explicit is not None:
        names = [str(n) for n in explicit]
        if len(set(names)) != len(names):
            raise DataError(f"label names contain duplicates: {names}")
        index = {n: k for k, n in enumerate(names)}
        if all(k in index for k in keys):
            return np.array([index[k] for k in keys], dtype=np.int64), names
        if all_int:
            arr = np.array(ints, dtype=np.int64)
            if one_based and arr.min() >= 1:
                arr = arr - 1
            bad = sorted({int(v) for v, a in zip(ints, arr) if not 0 <= a < len(names)})
            if not bad:
                return arr, names
            raise DataError(
                f"{source}: label value(s) {_fmt_values(bad)} outside the {len(names)} known "
                f"classes {names}"
            )
        bad = sorted({k for k in keys if k not in index})
        raise DataError(f"{source}: unknown label(s) {_fmt_values(bad)}; known labels: {names}")

    if class_label_names is not None and all_int:
        names = list(class_label_names)
        arr = np.array(ints, dtype=np.int64)
        bad = sorted({int(a) for a in arr if not 0 <= a < len(names)})
        if bad:
            raise DataError(f"{source}: label value(s) {_fmt_values(bad)} outside ClassLabel names {names}")
        return arr, names

    if file_names is not None:
        names = [str(n) for n in file_names]
        index = {n: k for k, n in enumerate(names)}
        if all_int:
            arr = np.array(ints, dtype=np.int64)
            # 1-based (char-CNN layout) unless a 0 shows up.
            if arr.min() >= 1 and (one_based or arr.max() <= len(names)):
                arr = arr - 1
            bad = sorted({int(v) for v, a in zip(ints, arr) if not 0 <= a < len(names)})
            if bad:
                raise DataError(
                    f"{source}: label value(s) {_fmt_values(bad)} do not fit the {len(names)} "
                    f"class names {names}"
                )
            return arr, names
        if all(k in index for k in keys):
            return np.array([index[k] for k in keys], dtype=np.int64), names
        bad = sorted({k for k in keys if k not in index})
        raise DataError(f"{source}: unknown label(s) {_fmt_values(bad)}; class names: {names}")

    # Names from the data: distinct values, numerically sorted when all integers.
    if all_int:
        distinct = sorted(set(ints))
        names = [str(v) for v in distinct]
        index = {v: k for k, v in enumerate(distinct)}
        return np.array([index[v] for v in ints], dtype=np.int64), names
    names = sorted(set(keys))
    index = {n: k for k, n in enumerate(names)}
    return np.array([index[k] for k in keys], dtype=np.int64), names


def _read_classes_txt(path: Path) -> list[str] | None:
    f = path / "classes.txt" if path.is_dir() else path.parent / "classes.txt"
    if not f.is_file():
        return None
    try:
        names = [line.strip() for line in f.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as exc:
        raise DataError(f"{f}: cannot read ({_one_line(exc)})") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{f}: classes.txt is empty")
    if len(set(names)) != len(names):
        raise DataError(f"{f}: duplicate class names {names}")
    return names


def _pick_column(available: Sequence[str], candidates: Sequence[str], what: str, source: str) -> str:
    lowered = {c.lower(): c for c in available}
    for cand in candidates:
        if cand in available:
            return cand
        if cand in lowered:
            return lowered[cand]
    raise DataError(
        f"{source}: no {what} column found (looked for {', '.join(candidates)}); "
        f"available columns: {', '.join(available)}; choose one explicitly"
    )


def _check_columns(names: Sequence[str], available: Sequence[str], source: str) -> None:
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(
            f"{source}: unknown column(s) {', '.join(map(repr, missing))}; "
            f"available columns: {', '.join(available)}"
        )


def _table_to_dataset(
    table: _Table,
    *,
    source: str,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    label_names: Sequence[str] | None,
    file_names: Sequence[str] | None,
    clean_escapes: bool | None = None,
) -> TextDataset:
    available = list(table.columns)
    if not available:
        raise DataError(f"{source}: no columns found")
    if label_column is not None:
        _check_columns([label_column], available, source)
        lab_col = label_column
    elif table.headerless:
        lab_col = available[0]
    else:
        lab_col = _pick_column(available, _LABEL_COLUMN_CANDIDATES, "label", source)
    if text_columns is not None:
        if isinstance(text_columns, str):
            text_columns = [text_columns]
        text_cols = list(text_columns)
        if not text_cols:
            raise DataError(f"{source}: text_columns is empty")
        _check_columns(text_cols, available, source)
    elif table.headerless:
        text_cols = [c for c in available if c != lab_col]
    else:
        text_cols = [_pick_column(available, _TEXT_COLUMN_CANDIDATES, "text", source)]
    if lab_col in text_cols:
        raise DataError(f"{source}: column {lab_col!r} cannot be both the label and a text column")

    n = len(table.columns[lab_col])
    if n == 0:
        raise DataError(f"{source}: no data rows")
    clean = None
    if clean_escapes if clean_escapes is not None else table.headerless:
        sample = [_as_text(v) for c in text_cols for v in table.columns[c][:2000]]
        clean = _charcnn_cleaner(sample)
    texts = _join_texts([table.columns[c] for c in text_cols], clean)
    cl_names = (table.class_label_names or {}).get(lab_col)
    labels, names = _map_labels(
        list(table.columns[lab_col]),
        source=source,
        explicit=label_names,
        class_label_names=cl_names,
        file_names=file_names,
        one_based=table.headerless,
    )
    return TextDataset(texts=texts, labels=labels, label_names=names, source=source)


# --------------------------------------------------------------------------------------------
# Folders and the registry
# --------------------------------------------------------------------------------------------


def _split_file(folder: Path, split: str) -> Path:
    """The data file in ``folder`` for ``split`` (name starting with the split name)."""
    prefixes = _SPLIT_PREFIXES.get(split.lower(), (split.lower(),))
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({_one_line(exc)})") from None
    candidates = []
    for p in entries:
        stem, ext, _ = _split_ext(p)
        if ext not in _TEXT_FORMATS or stem in ("classes", "readme", "license"):
            continue
        if any(stem.startswith(pre) for pre in prefixes):
            candidates.append((stem, p))
    if not candidates:
        files = ", ".join(p.name for p in entries) or "(empty folder)"
        raise DataError(
            f"{folder}: no file for split {split!r} (expected a name starting with {prefixes[0]!r}, "
            f"e.g. {prefixes[0]}.csv); files there: {files}"
        )
    exact = [p for stem, p in candidates if stem in prefixes]
    if len(exact) == 1:
        return exact[0]
    if len(candidates) == 1:
        return candidates[0][1]
    names = ", ".join(p.name for _, p in candidates)
    raise DataError(f"{folder}: several files match split {split!r} ({names}); pass one file path")


def _local_registry_dir(name: str) -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        return None
    base = Path(root).expanduser()
    for sub in _LOCAL_DIRS.get(name, (name,)):
        d = base / sub
        if d.is_dir():
            return d
    return None


def _hub_endpoint() -> tuple[str, int]:
    for var in ("HTTPS_PROXY", "https_proxy"):
        proxy = os.environ.get(var)
        if proxy:
            u = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            if u.hostname:
                return u.hostname, u.port or (443 if u.scheme == "https" else 80)
    u = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return u.hostname or "huggingface.co", u.port or (443 if u.scheme != "http" else 80)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within ``timeout`` s.

    Runs in a daemon thread so that a slow DNS lookup cannot block longer than ``timeout``.
    """
    host, port = _hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _offline_message(spec: DatasetSpec, why: str) -> str:
    return (
        f"{why}: cannot download dataset {spec.name!r} ({spec.hub_id}); point at local files "
        f"instead with --dataset PATH (a file or a folder with train/test files) or set "
        f"{DATA_DIR_ENV} to a folder containing {spec.name}/"
    )


def _load_hub(spec: DatasetSpec, split: str):
    import datasets

    offline_env = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    # `datasets` reads HF_HUB_OFFLINE when imported; only trust it to fail fast if it took effect.
    offline = offline_env and bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
    if not offline and not _hub_reachable():
        host, port = _hub_endpoint()
        raise DataError(_offline_message(spec, f"the Hugging Face hub is unreachable ({host}:{port})"))

    try:
        return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    except Exception as exc:
        msg = _one_line(exc)
        low = msg.lower()
        if offline and ("offline" in low or "couldn't reach" in low or "not cached" in low or "connectionerror" in low):
            raise DataError(_offline_message(spec, "HF_HUB_OFFLINE is set and no cached copy was found")) from None
        raise DataError(f"cannot load {spec.hub_id} split {split!r} from the Hugging Face hub ({msg})") from None


def _resolve_name(source: str) -> str | None:
    key = source.strip()
    if key in REGISTRY:
        return key
    return _ALIASES.get(key)


# --------------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------------


def load_split(
    source: str,
    split: str = "train",
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> TextDataset:
    """Load one split of a registry dataset, a folder or a file.

    ``source`` is a registry name (looked up under ``$VDCNN_DATA_DIR/<name>/`` first, then on
    the Hugging Face hub) or a path: a folder holding ``<split>*`` files (plus an optional
    ``classes.txt``) or a single ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet``/fastText
    ``.txt`` file (optionally ``.gz``). With ``label_names`` the data's labels are mapped onto
    those names (by name, or by index for integer labels) and unknown labels are an error.
    ``limit`` keeps a seeded, stratified subset of that many rows.
    """
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise DataError(f"dataset source must be a registry name or a path, got {source!r}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if not label_names:
            raise DataError("label_names is empty")
    src = str(source)
    split = str(split)
    name = _resolve_name(src)

    if name is not None:
        spec = REGISTRY[name]
        folder = _local_registry_dir(name)
        if folder is not None:
            ds = _load_path(
                folder, split, text_columns, label_column, label_names, default_names=spec.label_names
            )
        else:
            hub = _load_hub(spec, split)
            ds = _hub_to_dataset(hub, spec, split, text_columns, label_column, label_names)
    else:
        path = Path(src).expanduser()
        if not path.exists():
            known = ", ".join(REGISTRY)
            raise DataError(f"{src}: no such file or folder, and not a known dataset name ({known})")
        ds = _load_path(path, split, text_columns, label_column, label_names, default_names=None)

    if len(ds) == 0:
        raise DataError(f"{ds.source}: no data rows")
    if limit is not None and limit < len(ds):
        ds = ds.subset(_stratified_subset(ds.labels, int(limit), seed))
    return ds


@dataclass
class Splits:
    """The three splits of a run, labelled by one rule (the training split's label names)."""

    train: TextDataset
    val: TextDataset  # empty when no validation is wanted
    test: TextDataset | None  # None: the dataset has no test split
    val_note: str  # where validation came from, for the data line

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names


def has_split(source: str, split: str) -> bool:
    """Whether ``source`` has a ``split`` at all (a single file has only its training rows)."""
    name = _resolve_name(str(source))
    if name is not None:
        folder = _local_registry_dir(name)
        if folder is None:
            return True  # hub datasets in the registry all have their test split
    else:
        folder = Path(str(source)).expanduser()
        if not folder.is_dir():
            return False
    prefixes = _SPLIT_PREFIXES.get(split.lower(), (split.lower(),))
    try:
        stems = [_split_ext(p)[0] for p in folder.iterdir() if p.is_file()]
    except OSError:
        return True  # let load_split report the folder error
    return any(stem.startswith(pre) for stem in stems for pre in prefixes)


def load_splits(
    source: str,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    test_split: str = "test",
    seed: int = 0,
) -> Splits:
    """Train, validation and test of a dataset, read before any training starts.

    A test split that exists but cannot be read is an error here, naming the file; a dataset
    with no test split at all gives ``test=None``.
    """
    data = load_split(source, "train", text_columns=text_columns, label_column=label_column, limit=limit, seed=seed)
    if data.n_present_classes < 2:
        raise DataError(f"{data.source}: the training split has only one class; a classifier needs at least two")
    if val_fraction > 0:
        train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
        note = f"{len(val_idx)} rows ({val_fraction:.0%}) carved from train"
    else:
        train_idx, val_idx = np.arange(len(data.texts)), np.arange(0)
        note = "none"
    test = None
    if test_split and has_split(source, test_split):
        test = load_split(source, test_split, text_columns=text_columns, label_column=label_column,
                          label_names=data.label_names)
    return Splits(train=data.subset(train_idx), val=data.subset(val_idx), test=test, val_note=note)


def _load_path(
    path: Path,
    split: str,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    label_names: Sequence[str] | None,
    *,
    default_names: Sequence[str] | None,
) -> TextDataset:
    file = _split_file(path, split) if path.is_dir() else path
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    wanted = list(text_columns or []) + ([label_column] if label_column else [])
    table = _read_table(file, wanted)
    file_names = _read_classes_txt(file) or (list(default_names) if default_names else None)
    return _table_to_dataset(
        table,
        source=str(file),
        text_columns=text_columns,
        label_column=label_column,
        label_names=label_names,
        file_names=file_names,
    )


def _hub_to_dataset(hub, spec: DatasetSpec, split: str, text_columns, label_column, label_names) -> TextDataset:
    source = f"{spec.hub_id}{'/' + spec.hub_config if spec.hub_config else ''} ({split})"
    table = _Table(columns=_columns_of(hub), class_label_names=_class_label_names(hub))
    return _table_to_dataset(
        table,
        source=source,
        text_columns=list(text_columns) if text_columns is not None else list(spec.text_fields),
        label_column=label_column or spec.label_field,
        label_names=label_names,
        file_names=list(spec.label_names),
        clean_escapes=True,  # same texts as the char-CNN CSVs loaded locally
    )


# --------------------------------------------------------------------------------------------
# Streaming unlabelled inputs (prediction)
# --------------------------------------------------------------------------------------------


def _open_stream(path_or_dash: str):
    """A binary stream for a path or ``-`` (stdin); the caller closes it (stdin excepted)."""
    if path_or_dash == "-":
        return sys.stdin.buffer, False
    path = Path(path_or_dash).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    try:
        return _open_binary(path), True
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({_one_line(exc)})") from None


def _decoded_lines(stream, name: str, stats: dict[str, int] | None = None) -> Iterator[str]:
    """Lines decoded as UTF-8 (invalid bytes replaced by U+FFFD), NULs as spaces, newline kept.

    ``stats`` (if given) counts ``lines``, ``invalid_utf8_lines`` and ``nul_lines`` as they go."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if stats is not None:
        for key in ("lines", "invalid_utf8_lines", "nul_lines"):
            stats.setdefault(key, 0)
    try:
        for raw in stream:
            # Only the last line can lack its newline: flush a cut-off UTF-8 sequence into it.
            line = decoder.decode(raw, final=not raw.endswith(b"\n"))
            if stats is not None:
                stats["lines"] += 1
                if "\ufffd" in line and line.count("\ufffd") != raw.count(b"\xef\xbf\xbd"):
                    stats["invalid_utf8_lines"] += 1
            if "\x00" in line:
                line = line.replace("\x00", " ")
                if stats is not None:
                    stats["nul_lines"] += 1
            yield line
        tail = decoder.decode(b"", final=True)
        if tail:
            if stats is not None:
                stats["invalid_utf8_lines"] += 1
            yield tail
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: read error ({_one_line(exc)})") from None


def _strip_newline(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def read_lines(path_or_dash: str, *, chunk_size: int = 4096,
               stats: dict[str, int] | None = None) -> Iterator[list[str]]:
    """Stream one text per line from a file (``.gz`` ok) or stdin (``-``), in lists of up to
    ``chunk_size`` lines. Memory stays bounded by the chunk; empty lines are kept as ``""`` so
    outputs stay aligned with input lines.

    Never refuses text for its bytes: invalid UTF-8 is replaced by U+FFFD and NUL bytes by spaces;
    ``stats`` (a dict, optional) receives the counts of ``lines``, ``invalid_utf8_lines`` and
    ``nul_lines`` so the caller can say how many lines were affected."""
    _check_chunk_size(chunk_size)
    name = "<stdin>" if path_or_dash == "-" else str(path_or_dash)
    stream, owned = _open_stream(str(path_or_dash))

    def gen() -> Iterator[list[str]]:
        try:
            chunk: list[str] = []
            for line in _decoded_lines(stream, name, stats):
                chunk.append(_strip_newline(line))
                if len(chunk) >= chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
        finally:
            if owned:
                stream.close()

    return gen()


def read_records(
    path_or_dash: str, input_format: str, text_column: str, *, chunk_size: int = 4096,
    stats: dict[str, int] | None = None,
) -> Iterator[list[str]]:
    """Stream ``text_column`` of a CSV/TSV (header required) or JSON-lines file (or stdin ``-``)
    in lists of up to ``chunk_size`` texts. Missing values become ``""``. Bytes are decoded as in
    :func:`read_lines` (``stats`` counts physical lines)."""
    _check_chunk_size(chunk_size)
    fmt = str(input_format).lower()
    if fmt not in ("csv", "tsv", "jsonl"):
        raise ConfigError(f"input format must be csv, tsv or jsonl, got {input_format!r}")
    name = "<stdin>" if path_or_dash == "-" else str(path_or_dash)
    stream, owned = _open_stream(str(path_or_dash))

    def chunks(values: Iterator[str]) -> Iterator[list[str]]:
        chunk: list[str] = []
        for v in values:
            chunk.append(v)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def csv_values() -> Iterator[str]:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        reader = csv.reader(_decoded_lines(stream, name, stats), delimiter="\t" if fmt == "tsv" else ",")
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{name}: empty input, expected a {fmt.upper()} header line")
            header = [h.strip() for h in header]
            if text_column not in header:
                raise DataError(
                    f"{name}: no column {text_column!r} in the {fmt.upper()} header; "
                    f"available columns: {', '.join(header)}"
                )
            col = header.index(text_column)
            for row in reader:
                if not row:
                    continue  # blank line
                yield row[col] if col < len(row) else ""
        except csv.Error as exc:
            raise DataError(f"{name}: malformed {fmt.upper()} at line {reader.line_num} ({exc})") from None

    def jsonl_values() -> Iterator[str]:
        for i, line in enumerate(_decoded_lines(stream, name, stats), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}: line {i} is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{name}: line {i} is not a JSON object")
            if text_column not in obj:
                keys = ", ".join(map(str, obj)) or "(none)"
                raise DataError(f"{name}: line {i} has no key {text_column!r}; keys: {keys}")
            yield _as_text(obj[text_column])

    def gen() -> Iterator[list[str]]:
        try:
            yield from chunks(csv_values() if fmt in ("csv", "tsv") else jsonl_values())
        finally:
            if owned:
                stream.close()

    return gen()
