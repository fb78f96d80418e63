"""Reading labelled data files into columns: format sniffing, compression, headers and quoting.

Every file is read by `datasets` (CSV/TSV through pandas, JSON, Parquet, text); what is decided
here is *how* to call it: which format (by extension, or by content when the name has none), whether
the first row is a header, and whether ``"`` is CSV quoting at all. Problems the user can fix are
raised as :class:`~vdcnn.errors.DataError`, one line naming the file.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vdcnn.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
           ".txt": "fasttext"}
_MARKUP = frozenset((".xml", ".html", ".htm", ".sgm", ".sgml"))  # refused with what to do instead
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Recognised only to refuse it clearly: decompressing needs the optional `zstandard` package,
# which is not a dependency of vdcnn.
_ZSTD = ".zst"
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "text_a", "sentence1", "comment_text",
                "comments", "comment", "tweet")
# Sentence pairs (GLUE / CLUE names): both columns are the input, read as one text "first | second".
PAIR_COLUMNS = (("text_a", "text_b"), ("sentence1", "sentence2"), ("premise", "hypothesis"))
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "sentiment", "polarity", "stars", "rating")
_KNOWN_COLUMN_NAMES = frozenset(
    TEXT_COLUMNS + LABEL_COLUMNS + tuple(c for pair in PAIR_COLUMNS for c in pair)
    + ("title", "description", "question_title", "question_content", "best_answer", "topic", "id")
)
_PROBE_BYTES = 64 * 1024
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMBER_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_BOOLS = frozenset({"true", "false", "yes", "no"})
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,39}$")


@dataclass
class Table:
    """Columns read from a file (or the hub), before texts and labels are picked from them."""

    columns: dict[str, list[Any]]
    headerless: bool = False  # column names were made up: pick the label column by content
    charcnn_escapes: bool = False  # headerless quoted CSV: the char-CNN archives' backslash escapes
    class_label_names: dict[str, list[str]] | None = None  # ClassLabel names per column
    notes: list[str] = field(default_factory=list)  # how it was read, for the data line
    chosen: tuple[list[str], str] | None = None  # (text columns, label column) once picked
    layout_columns: bool = False  # "label"/"text" made by the reader (fastText, 'LABEL text', class layouts)
    multi_label: str = ""  # how the labels were read as sets (vdcnn.data.multilabel), for the data line
    label_columns: list[str] | None = None  # one 0/1 column per label: their names, in class order
    label_names: tuple[str, dict[str, str]] | None = None  # a column naming the labels, and its map, once picked


@dataclass
class _TextStats:
    head: bytes  # first decompressed bytes, for sniffing
    lines: int  # non-blank lines
    has_quote: bool  # a '"' anywhere
    utf8: bool = True  # False: some bytes are not UTF-8 (a legacy encoding)
    wide: str | None = None  # UTF-16 / UTF-32, which ``open_binary`` read as UTF-8


def one_line(exc: BaseException) -> str:
    """The most specific one-line message of an exception chain."""
    inner = exc
    for _ in range(10):
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    msg = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {msg[0] if msg else ''}"[:300]


def as_text(v: Any) -> str:
    """A cell as text: None and NaN are empty."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v != v:
        return ""
    return str(v)


def split_ext(path: Path) -> tuple[str, str, str]:
    """(stem, format extension, compression extension) of a file name, lower-cased."""
    name = path.name.lower()
    comp = ""
    for c in (*COMPRESSIONS, _ZSTD):
        if name.endswith(c):
            comp, name = c, name[: -len(c)]
            break
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return name, "", comp
    return stem, "." + ext, comp


def open_binary(path: Path):
    """``path`` opened for reading bytes, decompressed by its extension; a UTF-16 or UTF-32 file is
    read as UTF-8 bytes (``wide_encoding``)."""
    comp = split_ext(path)[2]
    if comp == _ZSTD:
        raise DataError(f"{path}: zstd-compressed files are not supported; decompress it (zstd -d) or "
                        "recompress it as .gz, .bz2 or .xz")
    f = COMPRESSIONS.get(comp, open)(path, "rb")
    try:
        wide = wide_encoding(f.peek(_PROBE_BYTES)[:_PROBE_BYTES])
    except (AttributeError, *_READ_ERRORS):
        wide = None
    if not wide:
        return f
    recoded = codecs.EncodedFile(f, "utf-8", wide)
    recoded.wide_encoding = wide  # what it was read from, for the data line
    return recoded


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def wide_encoding(head: bytes) -> str | None:
    """``utf-16`` / ``utf-32`` (by the byte-order mark), ``utf-16-le`` / ``-be`` (no mark, but a NUL
    byte beside nearly every character, as Windows' "Unicode text" writes Latin script), else None."""
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            return encoding
    pairs = len(head) // 2
    if pairs < 16:
        return None
    even, odd = head[0:2 * pairs:2].count(0), head[1:2 * pairs:2].count(0)
    if odd >= 0.6 * pairs and even <= 0.02 * pairs:
        return "utf-16-le"
    if even >= 0.6 * pairs and odd <= 0.02 * pairs:
        return "utf-16-be"
    return None


_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)  # BadGzipFile is an OSError


def _scan_text(path: Path, fmt: str, block: int = 1 << 20) -> _TextStats:
    """One streaming pass: refuse NUL bytes (binary) and invalid UTF-8 (another encoding) rather
    than "repair" labelled data, and count non-blank lines and quotes for the quoting check."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    what = fmt.upper() if fmt != "sniff" else "text"
    offset, lines, has_quote, head, tail, utf8 = 0, 0, False, b"", b"", True
    try:
        with open_binary(path) as f:
            wide = getattr(f, "wide_encoding", None)
            while True:
                chunk = f.read(block)
                if not head:
                    head = chunk[:_PROBE_BYTES]
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise DataError(f"{path}: looks like a binary file (NUL byte at offset {offset + nul}), "
                                    f"not {what}")
                if utf8:
                    try:
                        decoder.decode(chunk, final=not chunk)
                    except UnicodeDecodeError:
                        utf8 = False
                if not chunk:
                    break
                has_quote = has_quote or b'"' in chunk
                parts = (tail + chunk).split(b"\n")
                tail = parts.pop()
                lines += sum(1 for p in parts if p.strip())
                offset += len(chunk)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read file ({one_line(exc)})") from None
    lines += bool(tail.strip())
    if not head.strip():
        raise DataError(f"{path}: file is empty" + (" (only whitespace)" if head else ""))
    return _TextStats(head=head, lines=lines, has_quote=has_quote, utf8=utf8, wide=wide)


def decode_legacy(raw: bytes) -> tuple[str, str]:
    """Bytes as text and the encoding used: UTF-8, else cp1252, else Latin-1 (which decodes anything)."""
    wide = wide_encoding(raw[:_PROBE_BYTES])
    if wide:
        return raw.decode(wide, errors="replace"), wide
    for enc in ("utf-8", "cp1252"):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1"), "latin-1"


def _decoded_copy(path: Path, wide: str | None = None) -> tuple[Path, str]:
    """A UTF-8 copy of a text file with lines in a legacy encoding (each line UTF-8 where it is, else
    cp1252, else Latin-1), in the cache folder; and the note saying how many lines were decoded how."""
    from .layout import cache_root

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    dest = cache_root() / "decoded" / f"{key}-{split_ext(path)[0]}{split_ext(path)[1] or '.txt'}"
    counts: dict[str, int] = {}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with open_binary(path) as src, open(tmp, "wb") as out:
        for raw in src:
            text, enc = decode_legacy(raw)
            counts[enc] = counts.get(enc, 0) + 1
            out.write(text.encode("utf-8"))
    os.replace(tmp, dest)
    if wide:
        return dest, f"encoding: {path.name} is {wide.upper()[:6]} text, read as such"
    legacy = ", ".join(f"{n:,} as {enc}" for enc, n in counts.items() if enc != "utf-8")
    note = (f"encoding: {path.name}: {sum(counts.values()) - counts.get('utf-8', 0):,} of {sum(counts.values()):,} "
            f"lines are not UTF-8, decoded {legacy} (the rest as UTF-8); none dropped")
    return dest, note


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if split_ext(path)[1] in _SPREADSHEETS:
        raise DataError(f"{path}: spreadsheets are not read; save the sheet as CSV (UTF-8) or TSV and give that file")


_SPREADSHEETS = {".xlsx", ".xlsm", ".xls", ".ods", ".numbers"}


def _declared_format(path: Path) -> str:
    """The format named by the extension; ``sniff`` when there is none to go by."""
    ext = split_ext(path)[1]
    if not ext:
        return "sniff"
    # Any other extension (stsa.fine.train, rt-polarity.pos, NAME.dev...) is text recognised by content.
    return "markup" if ext in _MARKUP else FORMATS.get(ext, "sniff")


# toutiao_cat_data.txt: id_!_code_!_name_!_title_!_keywords; "|||" (parallel-corpus style). Not "||": a
# "|"-delimited file with an empty column has it on every line.
_MULTI_SEPARATORS = ("_!_", "|||")


def _multi_separator(lines: list[str]) -> str | None:
    """A separator of several characters that splits every line into the same number of fields."""
    for sep in _MULTI_SEPARATORS:
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and min(counts) >= 1:
            return sep
    return None


_PTB_ROOT = re.compile(r"^\s*\((\S+) \(")  # a labelled tree: "(3 (2 It) (4 ..." (the SST's trees/train.txt)
_PTB_LEAF = re.compile(r"\(\S+ ([^()\s]+)\)")
_PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def _sniff_text(head: bytes) -> str:
    """The format of a text file by its first lines: JSON, fastText, labelled trees, TSV, ``label
    text`` lines, CSV, or ``plain`` (one text per line, no label)."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        return "json"
    if stripped[:5].lower() == "<?xml" or stripped[:9].upper() == "<!DOCTYPE":
        return "markup"
    lines = [line for line in text.splitlines()[:200] if line.strip()]
    if len(head) >= _PROBE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # cut by the probe
    if lines and (lines[0].lstrip().startswith("__label__")
                  or sum(bool(_FASTTEXT_TAG.search(line)) for line in lines) >= 0.9 * len(lines)):
        return "fasttext"  # fastText reads a __label__ word anywhere on the line as a label
    if lines and all(_PTB_ROOT.match(line) for line in lines):
        return "trees"
    sep = _multi_separator(lines)
    if sep:
        return "sep:" + sep
    if lines and all("\t" in line for line in lines[: max(1, len(lines) - 1)]):
        return "tsv"
    if _label_space(lines):
        return "labelspace"
    if lines and _regular_dialect(lines) is not None:
        return "csv"  # comma, or ';' / '|' as the emotion corpus's "text;label" lines
    return "plain"


def _label_like(values: list[str]) -> bool:
    """Few distinct values, each a short name of at most three words: what a label column holds."""
    distinct = set(values)
    return (len(distinct) <= min(100, max(2, 0.6 * len(values)))
            and all(len(v) <= 40 and len(v.split()) <= 3 for v in distinct))


def _regular_dialect(lines: list[str]) -> tuple[str, str] | None:
    """The first of ``_CSV_DIALECTS`` under which nine lines in ten hold the same number of fields, two or
    more; under a delimiter other than the comma one field must also take few values, as a label does
    (prose with one ';' a line is no table)."""
    for delimiter, quotechar in _CSV_DIALECTS:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, quotechar=quotechar))
        widths = [len(r) for r in rows]
        if not widths:
            continue
        common = max(set(widths), key=widths.count)
        if common < 2 or widths.count(common) < 0.9 * len(widths):
            continue
        full = [r for r in rows if len(r) == common]
        if delimiter == "," or any(_label_like([r[i] for r in full]) for i in range(common)):
            return delimiter, quotechar
    return None


_SENTENCE_STARTS = frozenset(
    "a an the i it it's this that these those he she we you they my our his her its there here in on at if but "
    "and so as what how why who when where is are was do does not no one".split())


def _label_space(lines: list[str]) -> bool:
    """Whether lines read ``LABEL text``: a short first word from a small set, then text (the format of
    Kim 2014's ``stsa.fine.train``, TREC's ``DESC:manner How did ...``)."""
    if len(lines) < 2:
        return False
    parts = [line.split(None, 1) for line in lines]
    if any(len(p) < 2 or len(p[0]) > 40 for p in parts):
        return False
    firsts = [p[0] for p in parts]
    if {f.lower() for f in firsts} & _SENTENCE_STARTS:
        return False  # plain sentences ("the plot ...", "a warm ...") with no label in front
    distinct = len(set(firsts))
    return distinct <= 100 and distinct <= max(2, 0.6 * len(lines))


def first_row_shape(path: Path) -> tuple[str, int] | None:
    """A text file's sniffed format and the field count of its first row (None: unreadable or binary),
    to tell files laid out alike."""
    try:
        with open_binary(path) as f:
            head = f.read(_PROBE_BYTES)
    except _READ_ERRORS:
        return None
    if b"\0" in head:
        return None
    fmt = _sniff_text(head)
    if fmt not in ("csv", "tsv"):
        return fmt, 0
    delimiter, quotechar = ("\t", '"') if fmt == "tsv" else _csv_dialect(head)
    rows = _first_rows(head, delimiter, n=1, quotechar=quotechar)
    return fmt, len(rows[0]) if rows else 0


def _first_rows(head: bytes, delimiter: str, n: int = 200, quotechar: str = '"') -> list[list[str]]:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if len(head) >= _PROBE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # cut by the probe
    reader = csv.reader(io.StringIO("\n".join(lines[:n])), delimiter=delimiter, quotechar=quotechar)
    rows = []
    try:
        for row in reader:
            if row:
                rows.append([c.strip() for c in row])
    except csv.Error:
        pass
    return rows


def _scalar(v: str) -> bool:
    return bool(_NUMBER_RE.match(v)) or v.strip().lower() in _BOOLS


def _typed_evidence(rows: list[list[str]]) -> bool | None:
    """What the column types below the first row say of it, whatever the labels are: True (a name above
    a column of numbers or booleans, or a one-word name above free text), False (a number above
    numbers), None (nothing either way)."""
    first, later = rows[0], rows[1:]
    if len(later) < 3:
        return None
    text_name = False
    data = recurs = False
    for j, cell in enumerate(first):
        col = [r[j] for r in later if j < len(r) and r[j]]
        if len(col) < 3 or not cell:
            continue
        recurs = recurs or cell in col
        if all(_scalar(v) for v in col):
            if not _scalar(cell):
                return True  # e.g. "contain_gender_bias" above True/False
            data = True
        elif _NAME_RE.match(cell):
            spaced = sum(" " in v for v in col) / len(col)
            mean = sum(map(len, col)) / len(col)
            text_name = text_name or (spaced >= 0.8 and mean >= 3 * max(len(cell), 8))
    if data:
        return False
    return True if text_name and not recurs else None  # a recurring value: a label, so data


def _has_header(rows: list[list[str]], wanted: Sequence[str]) -> bool:
    """Whether the first row names the columns; a first row that reads like data is data."""
    first = rows[0]
    if wanted and all(w in first for w in wanted):
        return True
    if {c.lower() for c in first} & _KNOWN_COLUMN_NAMES:
        return True
    evidence = _typed_evidence(rows)
    if evidence is not None:
        return evidence
    if any(_INT_RE.match(c) for c in first):
        return False  # a number is a value, not a column name
    if any(len(c) > 40 for c in first):
        return False  # a sentence, not a column name
    later = rows[1:]
    for j, cell in enumerate(first):
        if cell and any(j < len(r) and r[j] == cell for r in later):
            return False  # the value recurs below it: a label, not a column name
    if len(rows) < 2:
        return False
    try:
        return csv.Sniffer().has_header("\n".join(",".join(f'"{c}"' for c in r) for r in rows[:50]))
    except csv.Error:
        return False


@contextmanager
def _quiet_datasets():
    """For local-file loads: no progress bars, no log lines, and no network "download count" ping.

    `datasets` sends a HEAD request to the hub for every `load_dataset` call, even for local
    files (``HF_UPDATE_DOWNLOAD_COUNTS``); offline, that stalls each load. All is restored after.
    """
    import datasets
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    counts = getattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", None)
    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # its "Failed to read file" log would repeat our error
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
        raise DataError(f"{path}: cannot read as {builder.upper()} ({one_line(exc)})") from None


def columns_of(ds) -> dict[str, list[Any]]:
    """All columns of a `datasets.Dataset` as python lists (one bulk conversion, not per row)."""
    batch = ds[:] if len(ds) else {}
    return {n: list(batch.get(n, [])) for n in ds.column_names}


def class_label_names(ds) -> dict[str, list[str]] | None:
    """ClassLabel names of each column that has them."""
    import datasets

    out = {name: list(feat.names) for name, feat in ds.features.items() if isinstance(feat, datasets.ClassLabel)}
    for name, feat in ds.features.items():  # Sequence(ClassLabel) / [ClassLabel]: a multi-label column
        inner = feat[0] if isinstance(feat, list) and len(feat) == 1 else getattr(feat, "feature", None)
        if isinstance(inner, datasets.ClassLabel):
            out[name] = list(inner.names)
    return out or None


def _unquoted_fits(path: Path, delimiter: str, n_columns: int) -> bool:
    """Whether every non-blank line holds exactly ``n_columns`` fields when ``"`` is plain text.

    A hand-written pass because pandas (under `datasets`) pads short rows silently, so it cannot
    tell a file with plain quotes from a CSV whose quoted fields span lines."""
    want = n_columns - 1
    sep = delimiter.encode()
    with open_binary(path) as f:
        return all(line.count(sep) == want for line in f if line.strip())


_CSV_DIALECTS = ((",", '"'), (";", '"'), (";", "'"), ("|", '"'), (",", "'"))


def _csv_dialect(head: bytes) -> tuple[str, str]:
    """A ``.csv`` file's delimiter and quote character: of ``_CSV_DIALECTS``, the one under which most of the
    first rows have the same number of fields, two or more; on a tie the one whose quote character opens
    fields in more lines, then the earlier (10kGNAD writes ``Label;'Text'``). Comma and double quote
    unless another gives nine rows in ten the same fields."""
    lines = head.decode("utf-8", errors="replace").splitlines()[:200]
    best, best_key = (",", '"'), (0.0, 0.0)
    for delimiter, quotechar in _CSV_DIALECTS:
        widths = [len(r) for r in _first_rows(head, delimiter, quotechar=quotechar)]
        if widths:
            common = max(set(widths), key=widths.count)
            share = widths.count(common) / len(widths) if common >= 2 else 0.0
            opens = re.compile(f"(?:^|{re.escape(delimiter)}){re.escape(quotechar)}")
            quoted = sum(bool(opens.search(line)) for line in lines) / max(1, len(lines))
            if (share, quoted) > best_key:  # as regular, then the one whose quotes open fields
                best, best_key = (delimiter, quotechar), (share, quoted)
    return best if best_key[0] >= 0.9 else (",", '"')


def _read_delimited(path: Path, stats: _TextStats, delimiter: str, wanted: Sequence[str]) -> Table:
    import datasets

    quotechar = '"'
    if delimiter == ",":
        delimiter, quotechar = _csv_dialect(stats.head)
    rows = _first_rows(stats.head, delimiter, quotechar=quotechar)
    if not rows:
        raise DataError(f"{path}: no columns found in the first line")
    header = _has_header(rows, wanted)
    first = rows[0]
    if header:
        # pandas' to_csv writes its index under an empty name (",review,score"): named as pandas reads it.
        names = [n or f"Unnamed: {i}" for i, n in enumerate(first)]
        if len(set(names)) != len(names):
            raise DataError(f"{path}: duplicate column names in header: {names}")
        kwargs: dict[str, Any] = {"column_names": names, "header": 0} if names != first else {}
    else:
        if len(first) < 2:
            raise DataError(f"{path}: the file has one column and no header; expected label and text columns")
        names = [f"column{i + 1}" for i in range(len(first))]
        kwargs = {"column_names": names, "header": None}
    kwargs.update(sep=delimiter, features=datasets.Features({n: datasets.Value("string") for n in names}),
                  na_filter=False, keep_default_na=False, **({"quotechar": quotechar} if quotechar != '"' else {}))
    ds = _load_local("csv", path, **kwargs)
    quoted = True
    if stats.has_quote and len(ds) + header < stats.lines and _unquoted_fits(path, delimiter, len(names)):
        # Quoting merged lines and every line has the same fields without it: '"' is plain text
        # here (e.g. the raw SMS Spam Collection), so one row per line.
        ds = _load_local("csv", path, quoting=csv.QUOTE_NONE, **kwargs)
        quoted = False
    return Table(columns=columns_of(ds), headerless=not header,
                 charcnn_escapes=not header and quoted and delimiter == ",")


_FASTTEXT_RE = re.compile(r"^\s*((?:__label__\S+\s*)+)(.*)$", re.S)
_FASTTEXT_TAG = re.compile(r"(?:^|\s)__label__\S+")


def _read_fasttext(path: Path) -> Table:
    ds = _load_local("text", path, encoding_errors="replace")
    labels: list[str] = []
    texts: list[str] = []
    for i, line in enumerate(columns_of(ds).get("text", []), start=1):
        if line is None or not line.strip():
            continue
        m = _FASTTEXT_RE.match(line)
        if m is not None:
            tags, text = [t[len("__label__"):] for t in m.group(1).split()], m.group(2).strip()
        else:  # the labels elsewhere on the line (after the text), as fastText also reads them
            words = line.split()
            tags = [w[len("__label__"):] for w in words if w.startswith("__label__")]
            text = " ".join(w for w in words if not w.startswith("__label__"))
            if not tags:
                raise DataError(f"{path}: line {i} has no '__label__NAME' word (fastText format expected)")
        if not all(tags):
            raise DataError(f"{path}: line {i} has an empty '__label__' tag")
        labels.append(tags)
        texts.append(text)
    if any(len(t) > 1 for t in labels):  # several __label__ prefixes on a line: a multi-label file
        return Table(columns={"label": labels, "text": texts}, layout_columns=True,
                     multi_label="several __label__ prefixes on a line")
    return Table(columns={"label": [t[0] for t in labels], "text": texts}, layout_columns=True)


def _read_parquet(path: Path) -> Table:
    with open_binary(path) as f:
        if f.read(4) != b"PAR1":
            raise DataError(f"{path}: not a Parquet file (missing PAR1 magic bytes)")
    ds = _load_local("parquet", path)
    return Table(columns=columns_of(ds), class_label_names=class_label_names(ds))


def read_table(path: Path, wanted: Sequence[str] = ()) -> Table:
    """All columns of a data file. ``wanted`` (column names the caller asked for) helps tell a
    header from data. Lines in a legacy encoding (cp1252 / Latin-1) are decoded, and counted in the
    table's notes."""
    _check_path(path)
    fmt = _declared_format(path)
    try:
        if fmt == "parquet":
            return _read_parquet(path)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read file ({one_line(exc)})") from None
    stats = _scan_text(path, fmt)
    if stats.utf8 and not stats.wide:
        return _read_text_table(path, fmt, stats, wanted)
    decoded, note = _decoded_copy(path, stats.wide)
    try:
        table = _read_text_table(decoded, fmt, _scan_text(decoded, fmt), wanted)
    except DataError as exc:  # name the user's file, not the decoded copy in the cache
        raise DataError(str(exc).replace(str(decoded), str(path))) from None
    table.notes = [note, *(n.replace(decoded.name, path.name) for n in table.notes)]
    return table


def _read_text_table(path: Path, fmt: str, stats: _TextStats, wanted: Sequence[str]) -> Table:
    if fmt == "sniff" or (fmt == "fasttext" and not stats.head.lstrip().startswith(b"__label__")):
        fmt = _sniff_text(stats.head)
    if fmt == "json":
        field = _records_field(path, stats)
        ds = _load_local("json", path, **({"field": field} if field else {}))
        table = Table(columns=columns_of(ds), class_label_names=class_label_names(ds))
    elif fmt == "fasttext":
        table = _read_fasttext(path)
    elif fmt == "labelspace":
        table = _read_label_space(path)
    elif fmt == "trees":
        table = _read_trees(path)
    elif fmt.startswith("sep:"):
        table = _read_separated(path, fmt[4:], wanted)
    elif fmt == "markup":
        raise DataError(f"{path}: XML / HTML / SGML markup is not read as a table; write its records as CSV or "
                        "JSON lines (a text column and a label column) and give that file")
    elif fmt == "plain":
        raise DataError(f"{path}: one text per line with no label (no label column, no 'LABEL text' or "
                        "'__label__LABEL text' lines); if each file holds one class (rt-polarity.pos / "
                        "rt-polarity.neg), give the folder that holds them all")
    else:
        table = _read_delimited(path, stats, "\t" if fmt == "tsv" else ",", wanted)
    return table


def _records_field(path: Path, stats: _TextStats) -> str | None:
    """The key of a JSON file that is one object holding its records (``{"data": [{...}, ...]}``),
    read as `datasets`' ``field``; None for JSON lines or a list of records."""
    head = stats.head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return None
    first, _, rest = head.partition(b"\n")
    try:
        json.loads(first)
        if rest.strip():
            return None  # a whole object on the first line and more after it: JSON lines
    except ValueError:
        pass
    try:
        with open_binary(path) as f:
            obj = json.loads(f.read().decode("utf-8-sig", errors="replace"))
    except (ValueError, *_READ_ERRORS):
        return None  # JSON lines, or not JSON at all: the reader says what is wrong
    if not isinstance(obj, dict):
        return None
    fields = [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v[:100])]
    if len(fields) != 1:
        if len(fields) > 1:
            raise DataError(f"{path}: one JSON object holding several lists of records ({', '.join(fields)}); "
                            "write each split to its own file")
        return None
    return fields[0]


def read_lines_decoded(path: Path, keep_blank: bool = False) -> tuple[list[str], dict[str, int]]:
    """Non-blank lines of a text file, each decoded as UTF-8, else cp1252, else Latin-1; and how
    many lines each encoding decoded. ``keep_blank`` keeps blank lines as ``""`` (line i of a label
    file goes with line i of the texts), all but blank space after the last newline."""
    _check_path(path)
    counts: dict[str, int] = {}
    out = []
    try:
        with open_binary(path) as f:
            for raw in f:
                if not raw.strip():
                    if keep_blank and raw.endswith(b"\n"):
                        out.append("")
                    continue
                text, enc = decode_legacy(raw)
                counts[enc] = counts.get(enc, 0) + 1
                out.append(text.strip())
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read file ({one_line(exc)})") from None
    return out, counts


def _read_separated(path: Path, sep: str, wanted: Sequence[str]) -> Table:
    """Lines of fields joined by a separator of several characters (no quoting: none is needed)."""
    rows = [[c.strip() for c in line.split(sep)] for line in read_lines_decoded(path)[0]]
    width = max(set(map(len, rows)), key=[len(r) for r in rows].count)
    for i, row in enumerate(rows, start=1):
        if len(row) != width:
            raise DataError(f"{path}: line {i} has {len(row)} fields separated by {sep!r}, the others {width}")
    header = _has_header(rows, wanted)
    names = rows[0] if header else [f"column{i + 1}" for i in range(width)]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate column names in header: {names}")
    body = rows[1:] if header else rows
    return Table(columns={n: [r[i] for r in body] for i, n in enumerate(names)}, headerless=not header,
                 notes=[f"format: {path.name}: fields separated by {sep!r}"])


def _read_trees(path: Path) -> Table:
    """One labelled Penn Treebank tree per line (the Stanford Sentiment Treebank's ``trees/*.txt``):
    the root's label is the class and the leaves, in order, the text. The phrases' own labels
    inside the tree are not read: they would hand the model its answer."""
    labels: list[str] = []
    texts: list[str] = []
    for i, line in enumerate(read_lines_decoded(path)[0], start=1):
        root = _PTB_ROOT.match(line)
        words = _PTB_LEAF.findall(line)
        if root is None or not words or line.count("(") != line.count(")"):
            raise DataError(f"{path}: line {i} is not a labelled tree like '(3 (2 It) (4 works))', "
                            "as the lines before it are")
        labels.append(root.group(1))
        texts.append(" ".join(_PTB_BRACKETS.get(w, w) for w in words))
    return Table(columns={"label": labels, "text": texts}, layout_columns=True,
                 notes=[f"format: {path.name}: labelled trees, one per line (the root's label is the class, "
                        "the leaves are the text; the phrase labels inside are not read)"])


def _read_label_space(path: Path) -> Table:
    labels: list[str] = []
    texts: list[str] = []
    for i, line in enumerate(read_lines_decoded(path)[0], start=1):
        parts = line.split(None, 1)
        if len(parts) < 2:
            raise DataError(f"{path}: line {i} has a label but no text ('LABEL text' lines expected)")
        labels.append(parts[0])
        texts.append(parts[1].strip())
    return Table(columns={"label": labels, "text": texts}, layout_columns=True,
                 notes=[f"format: {path.name}: 'LABEL text' lines (the label is the first word)"])


def read_classes_txt(path: Path) -> tuple[list[str], Path] | None:
    """Class names from ``classes.txt`` beside a file (or in a folder), one per line, in class order."""
    f = path / "classes.txt" if path.is_dir() else path.parent / "classes.txt"
    if not f.is_file():
        return None
    try:
        names = [line.strip() for line in f.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as exc:
        raise DataError(f"{f}: cannot read ({one_line(exc)})") from None
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{f}: classes.txt is empty")
    if len(set(names)) != len(names):
        raise DataError(f"{f}: duplicate class names {names}")
    return names, f


_SPLIT_PREFIXES = {
    "validation": ("validation", "valid", "val", "dev"),
    "val": ("val", "valid", "validation", "dev"),
    "dev": ("dev", "val", "valid", "validation"),
}
_NOT_DATA = ("classes", "readme", "license")


def _matches_split(stem: str, prefixes: Sequence[str], strict: bool) -> bool:
    if strict:  # "val" must not match "values.csv"
        return any(re.match(rf"{re.escape(p)}(?![a-z])", stem) for p in prefixes)
    return any(stem.startswith(p) for p in prefixes)


def split_files(folder: Path, split: str) -> list[Path]:
    """Data files in ``folder`` whose names start with the split's name (dev/val/... for validation)."""
    key = split.lower()
    prefixes = _SPLIT_PREFIXES.get(key, (key,))
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list folder ({one_line(exc)})") from None
    out = []
    for p in entries:
        stem, ext, _ = split_ext(p)
        if (ext and ext not in FORMATS) or stem in _NOT_DATA or p.name.startswith("."):
            continue
        if _matches_split(stem, prefixes, strict=key in _SPLIT_PREFIXES):
            out.append(p)
    return out


def split_file(folder: Path, split: str) -> Path:
    """The one data file in ``folder`` for ``split``."""
    candidates = split_files(folder, split)
    prefixes = _SPLIT_PREFIXES.get(split.lower(), (split.lower(),))
    if not candidates:
        files = ", ".join(p.name for p in sorted(folder.iterdir())) or "(empty folder)"
        raise DataError(f"{folder}: no file for split {split!r} (expected a name starting with {prefixes[0]!r}, "
                        f"e.g. {prefixes[0]}.csv); files there: {files}")
    if len(candidates) == 1:
        return candidates[0]
    exact = [p for p in candidates if split_ext(p)[0] in prefixes]
    if len(exact) == 1:
        return exact[0]
    names = ", ".join(p.name for p in candidates)
    raise DataError(f"{folder}: several files match split {split!r} ({names}); pass one file path")
