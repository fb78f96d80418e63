"""Streaming unlabelled texts for prediction: one per line, or one column of CSV/TSV/JSON lines.

Memory stays bounded by a chunk; input is never refused for its bytes (see :func:`read_lines`).
Hand-written rather than `datasets`: it must stream stdin and yield the first chunk at once.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
import zlib
from pathlib import Path
from typing import Iterator

from vdcnn.errors import ConfigError, DataError

from .files import TEXT_COLUMNS, as_text, one_line, open_binary, split_ext

_TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def input_format_for(path_or_dash: str, input_format: str = "auto") -> str:
    """``input_format``, or for ``auto`` the one the file's extension names (``.csv``, ``.tsv``,
    ``.jsonl``): a table is never read as lines, its header predicted as a text; else ``lines``."""
    if input_format != "auto":
        return input_format
    if path_or_dash == "-":
        return "lines"
    return _TABLE_FORMATS.get(split_ext(Path(path_or_dash))[1], "lines")


def _text_column(names: list[str], text_column: str | None, where: str) -> str:
    """The column to read: the one named, else the first with a text column's name (``text``,
    ``sentence``, ``review``...)."""
    if text_column is not None:
        if text_column not in names:
            raise DataError(f"{where}: no column {text_column!r}; available columns: {', '.join(names) or '(none)'}")
        return text_column
    lowered = {n.strip().lower(): n for n in names}
    for cand in TEXT_COLUMNS:
        if cand in lowered:
            return lowered[cand]
    raise DataError(f"{where}: no text column found (looked for {', '.join(TEXT_COLUMNS[:6])}...); available "
                    f"columns: {', '.join(names) or '(none)'}; choose one with --text-column")


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
        return open_binary(path), True
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({one_line(exc)})") from None


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
        raise DataError(f"{name}: read error ({one_line(exc)})") from None


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
    path_or_dash: str, input_format: str, text_column: str | None = None, *, chunk_size: int = 4096,
    stats: dict[str, int] | None = None,
) -> Iterator[list[str]]:
    """Stream ``text_column`` (None: the first with a text column's name) of a CSV/TSV (header
    required) or JSON-lines file (or stdin ``-``) in lists of up to ``chunk_size`` texts. Missing
    values become ``""``. Bytes are decoded as in :func:`read_lines` (``stats`` counts physical lines)."""
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
            header = [h.strip().lstrip("\ufeff") for h in header]
            col = header.index(_text_column(header, text_column, f"{name}: {fmt.upper()} header"))
            for row in reader:
                if not row:
                    continue  # blank line
                yield row[col] if col < len(row) else ""
        except csv.Error as exc:
            raise DataError(f"{name}: malformed {fmt.upper()} at line {reader.line_num} ({exc})") from None

    def jsonl_values() -> Iterator[str]:
        key = text_column
        for i, line in enumerate(_decoded_lines(stream, name, stats), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}: line {i} is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{name}: line {i} is not a JSON object")
            if key is None:
                key = _text_column([str(k) for k in obj], None, f"{name}: line {i}")
            if key not in obj:
                keys = ", ".join(map(str, obj)) or "(none)"
                raise DataError(f"{name}: line {i} has no key {key!r}; keys: {keys}")
            yield as_text(obj[key])

    def gen() -> Iterator[list[str]]:
        try:
            yield from chunks(csv_values() if fmt in ("csv", "tsv") else jsonl_values())
        finally:
            if owned:
                stream.close()

    return gen()


def read_texts(path_or_dash: str, input_format: str = "auto", text_column: str | None = None, *,
               chunk_size: int = 4096, stats: dict[str, int] | None = None) -> Iterator[list[str]]:
    """Texts to classify or explain, in chunks: a table's text column (``.csv``, ``.tsv``, ``.jsonl``
    under ``auto``) or one text per line (see :func:`input_format_for`)."""
    fmt = input_format_for(path_or_dash, input_format)
    if fmt == "lines":
        return read_lines(path_or_dash, chunk_size=chunk_size, stats=stats)
    return read_records(path_or_dash, fmt, text_column, chunk_size=chunk_size, stats=stats)
