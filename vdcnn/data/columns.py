"""Which columns of a table hold the texts and the label, and the texts they hold."""

from __future__ import annotations

import re
from typing import Any, Sequence

from vdcnn.errors import DataError, NoLabels

from .files import _BOOLS, _NUMBER_RE, LABEL_COLUMNS, PAIR_COLUMNS, TEXT_COLUMNS, Table, as_text
from .multilabel import as_label_lists, binary_columns, joined_separator, lists_from_binary, split_joined

_MULTI_RE = re.compile(r"^\d+(\s*,\s*\d+)+$")  # "4,27": class ids of a multi-label row
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


def _join_texts(columns: Sequence[list[Any]], clean=None, sep: str = " ") -> list[str]:
    out = []
    for parts in zip(*columns):
        texts = [as_text(p) for p in parts]
        if clean is not None:
            texts = [clean(t) for t in texts]
        out.append(sep.join(texts))
    return out


_URL_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)\S+$", re.IGNORECASE)
_MISSING = frozenset({"", "null", "nan", "n/a"})  # "none" and "other" are classes of their own in real data


def is_annotation(values: Sequence[Any]) -> bool:
    """Whether a column is an annotation rather than text: numbers or booleans, a few repeated values
    (categories), or, over 20 rows or more, short single words (ids), addresses (URLs) or dates and
    times (``2016.06.30. 오전 10:36``, ``Jun 30, 2016``)."""
    sample = [t for t in (as_text(v).strip() for v in values[:5000]) if t]
    if not sample:
        return True  # empty: nothing to read
    if all(_NUMBER_RE.match(t) or t.lower() in _BOOLS for t in sample):
        return True
    distinct = len(set(sample))
    if distinct <= 20 and distinct <= 0.5 * len(sample):
        return True
    if len(sample) < 20:
        return False
    if not any(" " in t for t in sample) and all(t.isascii() for t in sample):
        if sum(map(len, sample)) / len(sample) < 24:
            return True
    if sum(bool(_URL_RE.match(t)) for t in sample) >= 0.9 * len(sample):
        return True
    return _is_timestamp(sample)


def is_numeric(values: Sequence[Any]) -> bool:
    """Whether every non-empty value of a column is a number."""
    return all(_NUMBER_RE.match(t) for t in (as_text(v).strip() for v in values[:5000]) if t)


def _is_timestamp(sample: Sequence[str]) -> bool:
    """Dates and times: a few tokens each, most of them with digits, and the rest from a closed set of
    words (month names, AM/PM in any language) where text keeps finding new ones."""
    tokens = [t.split() for t in sample]
    if max(map(len, tokens)) > 6:
        return False
    # Without their numbers dates repeat a few shapes ("0.0.0. 오전 0:0", "Jun 0, 0"); unspaced
    # headlines are one token each that may hold a number ("2018年世界杯...") and all differ.
    shapes = {re.sub(r"\d+", "0", t) for t in sample}
    if len(shapes) > max(20, 0.3 * len(sample)):
        return False
    flat = [w for ws in tokens for w in ws]
    words = {w for w in flat if not any(ch.isdigit() for ch in w)}
    return len(flat) - sum(w in words for w in flat) >= 0.5 * len(flat) and len(words) <= 40


def _missing_share(values: Sequence[Any]) -> float:
    """The share of rows whose value is empty or a placeholder (``NULL``, ``NaN``, ``N/A``)."""
    sample = [as_text(v).strip().lower() for v in values[:5000]]
    return sum(v in _MISSING for v in sample) / max(1, len(sample))


def _by_number(name: str, available: Sequence[str]) -> str:
    """A column named as in the file, or by its 1-based number (headerless files)."""
    if name in available:
        return name
    if name.strip().isdigit() and 1 <= int(name) <= len(available):
        return available[int(name) - 1]
    return name


def _describe(name: str, available: Sequence[str], headerless: bool) -> str:
    return f"column {available.index(name) + 1}" if headerless else repr(name)


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
    categorical = [c for c in names if _is_categorical(table.columns[c])]
    full = [c for c in categorical if _missing_share(table.columns[c]) == 0.0]
    if full and len(full) < len(categorical):  # a column left empty on some rows labels none of them
        categorical = full
    ends = [c for c in (first, last) if c in categorical]
    if categorical and not ends:  # fewest values; of a code and its name (toutiao's 102, news_entertainment), the name
        def key(c: str) -> tuple[int, bool, float]:
            distinct, mean_length = _labelness(table.columns[c])
            return distinct, is_numeric(table.columns[c]), mean_length

        return min(categorical, key=key)
    if len(ends) == 1:
        return ends[0]
    return first if _labelness(table.columns[first]) <= _labelness(table.columns[last]) else last


def _is_categorical(values: Sequence[Any]) -> bool:
    """Few distinct values, each repeated: a label or another annotation, never text nor ids."""
    sample = [as_text(v).strip() for v in values[:5000]]
    return len(sample) >= 4 and len(set(sample)) <= 0.5 * len(sample)


def _suffix_label(table: Table, candidates: Sequence[str]) -> str | None:
    """A column whose name ends in a label name (``airline_sentiment``, ``condition_label``) and that labels
    most rows with a few repeated values; the first such column."""
    for c in candidates:
        last = re.split(r"[-_ .]+", c.strip().lower())[-1]
        if (last in LABEL_COLUMNS and _is_categorical(table.columns[c]) and
                _missing_share(table.columns[c]) < 0.5):
            return c
    return None


def _content_label(table: Table, candidates: Sequence[str]) -> str | None:
    """A header file's label column when none has a label name: the last (else the first) column that
    is not free text, else the one with the fewest distinct values. Columns that leave rows without a
    value (``NULL``, empty: a sub-task's label, OLID's ``subtask_b``/``subtask_c``) give way to one that
    labels every row."""
    cat = [c for c in candidates if is_annotation(table.columns[c])]
    labelish = [c for c in cat if _is_categorical(table.columns[c])]
    full = [c for c in labelish if _missing_share(table.columns[c]) == 0.0]
    if full and len(full) < len(labelish):
        return full[-1]
    cat = [c for c in cat if _missing_share(table.columns[c]) < 0.5]  # a mostly empty column labels nothing
    if not cat:
        return None
    for c in (candidates[-1], candidates[0]):
        if c in cat:
            return c
    return min(cat, key=lambda c: _labelness(table.columns[c]))


def texts_and_labels(table: Table, *, source: str, text_columns: Sequence[str] | None = None,
                     label_column: str | None = None, clean_escapes: bool | None = None,
                     multi_label: bool | None = None) -> tuple[list[str], list[Any], str]:
    """(texts, raw label values, label column name) of a table.

    Columns are the ones asked for (by name, or by 1-based number), else found by name
    (``text``/``text_a``/``label``...), else by content: the label is a short categorical column, the
    text the free-text column(s); other columns (annotations, ids, numbers) are never read as text
    unless asked for. Which columns were used and ignored is added to ``table.notes``.

    ``multi_label`` (None: decide from the data) reads each row's labels as a list
    (``vdcnn.data.multilabel``: joined labels, several fastText tags, 0/1 columns, Sequence(ClassLabel));
    False refuses such data, True reads one label per row as a set of one where nothing joins them."""
    available = list(table.columns)
    if not available:
        raise DataError(f"{source}: no columns found")
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    suffixed = None if label_column is not None or table.headerless else _suffix_label(table, available)
    if (multi_label is not False and label_column is None and not table.headerless and not table.layout_columns
            and not {c.lower() for c in available} & set(LABEL_COLUMNS) and suffixed is None):
        binary = binary_columns(table.columns, [_by_number(str(c), available) for c in text_columns or []])
        if len(binary) >= 2:
            return _binary_layout(table, source, available, binary, text_columns)
    if label_column is not None:
        label_column = _by_number(str(label_column), available)
        if label_column not in available:
            raise NoLabels(f"{source}: unknown column(s) {label_column!r}; available columns: {', '.join(available)}")
        lab_col = label_column
    elif table.headerless:
        lab_col = _headerless_label(table)
    else:
        try:
            lab_col = _pick_column(available, LABEL_COLUMNS, "label", source)
        except DataError:
            found = suffixed or _content_label(table, available)
            if found is None:
                raise
            lab_col = found
    sep = " "
    pair = False
    if text_columns is not None:
        text_cols = [_by_number(str(c), available) for c in text_columns]
        if not text_cols:
            raise DataError(f"{source}: text_columns is empty")
        _check_columns(text_cols, available, source)
    else:
        lowered = {c.lower(): c for c in available}
        pairs = [(lowered[a], lowered[b]) for a, b in PAIR_COLUMNS if a in lowered and b in lowered]
        named = [lowered[c] for c in TEXT_COLUMNS if c in lowered]
        if pairs and not table.headerless:
            text_cols, sep, pair = list(pairs[0]), " | ", True
        elif named and not table.headerless:
            text_cols = [named[0]]
        else:
            others = [c for c in available if c != lab_col]
            text_cols = [c for c in others if not is_annotation(table.columns[c])]
            if not text_cols and len(others) == 1 and table.headerless:
                text_cols = others  # label and one other column: the other is the text, whatever its look
            if not text_cols:
                raise DataError(f"{source}: no text column found (looked for {', '.join(TEXT_COLUMNS)}, or a column "
                                f"of free text); available columns: {', '.join(available)}; choose one with "
                                "--text-column NAME or NUMBER")
    if lab_col in text_cols:
        raise DataError(f"{source}: column {lab_col!r} cannot be both the label and a text column")
    if not table.columns[lab_col]:
        raise DataError(f"{source}: no data rows")
    labels = _label_values(table, lab_col, source, _describe(lab_col, available, table.headerless), multi_label)
    clean = None
    if clean_escapes if clean_escapes is not None else table.charcnn_escapes:
        clean = _charcnn_cleaner([as_text(v) for c in text_cols for v in table.columns[c][:2000]])
    texts = _join_texts([table.columns[c] for c in text_cols], clean, sep)
    table.chosen = (list(text_cols), lab_col)
    table.label_names = _label_names_column(table, lab_col)
    if not table.layout_columns:
        table.notes.append(_columns_note(table, available, text_cols, lab_col, pair,
                                         chosen=label_column is None))
    return texts, labels, lab_col


def _label_values(table: Table, lab_col: str, source: str, described: str, multi_label: bool | None) -> list[Any]:
    """The label column's values: as they are, or each row's list of labels for a multi-label dataset."""
    raw = list(table.columns[lab_col])
    lists = any(isinstance(v, (list, tuple)) for v in raw[:5000])
    if multi_label is False:
        multi = [v for v in (as_text(x).strip() for x in raw[:5000]) if _MULTI_RE.match(v)]
        if multi or lists:
            example = multi[0] if multi else next(v for v in raw if isinstance(v, (list, tuple)))
            raise DataError(f"{source}: the label column ({described}) holds several classes in one row "
                            f"({example!r}): a multi-label dataset read as single-label (its training split has one label "
                            "per row, or --no-multi-label was given)")
        return raw
    sep = None if lists else joined_separator(raw)
    if lists:
        labels = as_label_lists(raw)
        table.multi_label = table.multi_label or f"lists of labels in the label column ({described})"
    elif sep is not None:
        labels = split_joined(raw, sep)
        table.multi_label = f"labels joined by '{sep}' in the label column ({described})"
    elif multi_label:
        labels = as_label_lists(raw)
        table.multi_label = f"--multi-label: one label per row in the label column ({described}), read as sets"
    else:
        return raw
    empty = [i for i, row in enumerate(labels) if not row]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise DataError(f"{source}: {len(empty)} row(s) have an empty label set (data rows {rows}...); every row of "
                        "a multi-label dataset needs at least one label")
    return labels


def _binary_layout(table: Table, source: str, available: list[str], binary: list[str],
                   text_columns: Sequence[str] | None) -> tuple[list[str], list[Any], str]:
    """Texts and label lists of a table with one 0/1 column per label."""
    if text_columns is not None:
        text_cols = [_by_number(str(c), available) for c in text_columns]
        _check_columns(text_cols, available, source)
    else:
        lowered = {c.lower(): c for c in available}
        named = [lowered[c] for c in TEXT_COLUMNS if c in lowered]
        text_cols = named[:1] or [c for c in available if c not in binary and not is_annotation(table.columns[c])]
    if not text_cols:
        raise DataError(f"{source}: {len(binary)} 0/1 label columns but no text column found; choose one with "
                        "--text-column NAME")
    if not table.columns[binary[0]]:
        raise DataError(f"{source}: no data rows")
    labels = lists_from_binary(table.columns, binary, source)
    texts = _join_texts([table.columns[c] for c in text_cols])
    none = sum(1 for row in labels if not row)
    table.label_columns = list(binary)
    table.multi_label = (f"one 0/1 column per label ({len(binary)} columns: {', '.join(binary[:8])}"
                         f"{', ...' if len(binary) > 8 else ''})"
                         + (f"; {none:,} rows carry none of the labels" if none else ""))
    ignored = [c for c in available if c not in binary and c not in text_cols]
    table.notes.append(f"columns: text {' + '.join(map(repr, text_cols))}; labels: {len(binary)} 0/1 columns"
                       + (f"; ignored: {', '.join(map(repr, ignored))}" if ignored else ""))
    return texts, labels, ""


_NAME_SUFFIXES = ("_text", "_name", "_names", "_desc", "_description", "_str")


def _label_names_column(table: Table, lab_col: str) -> tuple[str, dict[str, str]] | None:
    """A column that names the label column's values one to one (SetFit's ``label`` + ``label_text``,
    CLUE's ``label`` + ``label_desc``): its name and the map from each label (``label_key``) to its name."""
    from .labels import label_key

    lowered = {c.strip().lower(): c for c in table.columns if c != lab_col}
    wanted = [lab_col.strip().lower() + s for s in _NAME_SUFFIXES] + ["label" + s for s in _NAME_SUFFIXES]
    for cand in dict.fromkeys(wanted):
        name_col = lowered.get(cand)
        if name_col is None or len(table.columns[name_col]) != len(table.columns[lab_col]):
            continue
        names: dict[str, str] = {}
        for code, label_name in zip(table.columns[lab_col], table.columns[name_col]):
            key, label_name = label_key(code), as_text(label_name).strip()
            if not key or not label_name or names.setdefault(key, label_name) != label_name:
                break
        else:
            if names and len(set(names.values())) == len(names) and any(k != v for k, v in names.items()):
                return name_col, names
    return None


def _columns_note(table: Table, available: list[str], text_cols: list[str], lab_col: str, pair: bool,
                  chosen: bool) -> str:
    """The data line's account of the columns: text, label, and what was left out."""
    hl = table.headerless
    name = lambda c: _describe(c, available, hl)  # noqa: E731
    n_values = len({as_text(v).strip() for v in table.columns[lab_col]})
    text = " + ".join(name(c) for c in text_cols) + (" (a sentence pair, read as 'first | second')" if pair else "")
    note = f"columns: text {text}; label {name(lab_col)} ({n_values} values)"
    named = table.label_names
    if named:
        note += f", named by {name(named[0])}"
    ignored = [c for c in available if c != lab_col and c not in text_cols and (not named or c != named[0])]
    if ignored:
        note += f"; ignored: {', '.join(name(c) for c in ignored)}"
        rivals = [c for c in ignored if _labelness(table.columns[c])[0] <= 100 and is_annotation(table.columns[c])]
        if chosen and rivals:
            note += (f" ({', '.join(name(c) for c in rivals)} also could be a label: choose with --label-column "
                     f"{'NUMBER' if hl else 'NAME'})")
    return note
