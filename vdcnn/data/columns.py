"""Which columns of a table hold the texts and the label, and the texts they hold."""

from __future__ import annotations

import re
from typing import Any, Sequence

from vdcnn.errors import DataError

from .files import LABEL_COLUMNS, TEXT_COLUMNS, Table, as_text

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


def _join_texts(columns: Sequence[list[Any]], clean=None) -> list[str]:
    out = []
    for parts in zip(*columns):
        texts = [as_text(p) for p in parts]
        if clean is not None:
            texts = [clean(t) for t in texts]
        out.append(" ".join(texts))
    return out


def _pick_column(available: Sequence[str], candidates: Sequence[str], what: str, source: str) -> str:
    lowered = {c.lower(): c for c in available}
    for cand in candidates:
        if cand in available:
            return cand
        if cand in lowered:
            return lowered[cand]
    raise DataError(f"{source}: no {what} column found (looked for {', '.join(candidates)}); "
                    f"available columns: {', '.join(available)}; choose one explicitly")


def _check_columns(names: Sequence[str], available: Sequence[str], source: str) -> None:
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(f"{source}: unknown column(s) {', '.join(map(repr, missing))}; "
                        f"available columns: {', '.join(available)}")


def _labelness(values: Sequence[Any]) -> tuple[int, float]:
    """How label-like a column is, smaller is more: (distinct values, mean length) over a sample."""
    sample = [as_text(v) for v in values[:5000]]
    return len(set(sample)), sum(map(len, sample)) / max(1, len(sample))


def _headerless_label(table: Table) -> str:
    """A headerless file's label column: the first or the last, whichever holds few distinct short
    values rather than long varied texts (label-first char-CNN files, ``text<TAB>label`` files...)."""
    names = list(table.columns)
    first, last = names[0], names[-1]
    return first if _labelness(table.columns[first]) <= _labelness(table.columns[last]) else last


def texts_and_labels(table: Table, *, source: str, text_columns: Sequence[str] | None = None,
                     label_column: str | None = None, clean_escapes: bool | None = None
                     ) -> tuple[list[str], list[Any], str]:
    """(texts, raw label values, label column name) of a table.

    Columns are the ones asked for, else found by name (``text``/``label``...), else (headerless)
    by content. Several text columns are joined with a space."""
    available = list(table.columns)
    if not available:
        raise DataError(f"{source}: no columns found")
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    if label_column is not None:
        _check_columns([label_column], available, source)
        lab_col = label_column
    elif table.headerless:
        lab_col = _headerless_label(table)
    else:
        lab_col = _pick_column(available, LABEL_COLUMNS, "label", source)
    if text_columns is not None:
        text_cols = list(text_columns)
        if not text_cols:
            raise DataError(f"{source}: text_columns is empty")
        _check_columns(text_cols, available, source)
    elif table.headerless:
        text_cols = [c for c in available if c != lab_col]
    else:
        text_cols = [_pick_column(available, TEXT_COLUMNS, "text", source)]
    if lab_col in text_cols:
        raise DataError(f"{source}: column {lab_col!r} cannot be both the label and a text column")
    if not table.columns[lab_col]:
        raise DataError(f"{source}: no data rows")
    clean = None
    if clean_escapes if clean_escapes is not None else table.charcnn_escapes:
        clean = _charcnn_cleaner([as_text(v) for c in text_cols for v in table.columns[c][:2000]])
    texts = _join_texts([table.columns[c] for c in text_cols], clean)
    return texts, list(table.columns[lab_col]), lab_col
