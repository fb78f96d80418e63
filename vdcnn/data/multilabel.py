"""Multi-label datasets: telling them apart from single-label ones, and reading their label sets.

A multi-label dataset gives each text a *set* of labels, in one of these layouts:

* one label column whose values join several labels with ``,`` or ``|`` (GoEmotions' ``4,27`` ids,
  ``joy|surprise`` names);
* fastText lines with several ``__label__`` prefixes (the reader stores them as lists);
* one 0/1 column per label beside the text (Jigsaw-style ``toxic,obscene,...`` columns);
* a Hugging Face ``Sequence(ClassLabel)`` feature (read as lists of indices).

Raw multi-label values are lists of label keys; :class:`~vdcnn.data.labels.LabelRule` maps them to a
``(rows, classes)`` 0/1 matrix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from vdcnn.errors import DataError

from .files import as_text

_ID_LIST = re.compile(r"^\d+(\s*,\s*\d+)+$")
_PIECE = re.compile(r"^[^\s,|][^,|]{0,39}$")
# Files whose lines name the labels that integer label ids index, looked for beside a multi-label file.
NAMES_FILES = ("classes.txt", "labels.txt", "label_names.txt", "emotions.txt", "categories.txt", "tags.txt",
               "topics.txt")
_ONE, _ZERO = frozenset({"1", "1.0", "true", "yes"}), frozenset({"0", "0.0", "false", "no"})


def joined_separator(values: Sequence[Any]) -> str | None:
    """The separator (``,`` or ``|``) that joins several labels in one cell of a label column, or None.

    A column is read as joined labels when some of its (first 5,000) values hold a separator between
    short pieces (ids or names of at most 40 characters without a separator) and every value that has
    one does; a column of free text (over 60 characters on average) never is."""
    sample = [as_text(v).strip() for v in values[:5000]]
    sample = [s for s in sample if s]
    if not sample or sum(map(len, sample)) / len(sample) > 60:
        return None
    for sep in ("|", ","):
        joined = [s for s in sample if sep in s]
        if not joined:
            continue
        if sep == "," and all(_ID_LIST.match(s) for s in joined):
            return sep
        pieces = [p.strip() for s in joined for p in s.split(sep)]
        if all(_PIECE.match(p) for p in pieces) and (sep == "|" or all(" " not in p for p in pieces)):
            return sep
    return None


def split_joined(values: Sequence[Any], sep: str) -> list[list[str]]:
    """Each cell's labels, split on ``sep`` and stripped (an empty cell: an empty list)."""
    return [[p.strip() for p in as_text(v).split(sep) if p.strip()] for v in values]


def as_label_lists(values: Sequence[Any]) -> list[list[Any]]:
    """Raw label values as lists: lists and tuples as they are, anything else as a list of one."""
    return [list(v) if isinstance(v, (list, tuple)) else [v] for v in values]


def is_binary_column(values: Sequence[Any]) -> bool:
    """Whether every (of the first 5,000) values is 0/1 (or true/false, yes/no)."""
    sample = [as_text(v).strip().lower() for v in values[:5000]]
    return bool(sample) and all(s in _ONE or s in _ZERO for s in sample)


def binary_columns(columns: dict[str, list[Any]], text_columns: Sequence[str]) -> list[str]:
    """The 0/1 columns of a table besides its text columns (the labels of a one-column-per-label layout);
    a column holding one value throughout (a ``retweet_count`` of 0) labels nothing and is not one. Label
    columns are spelled alike: where most are 0/1 and a few true/false (GoEmotions' raw CSV beside its 28
    emotions has ``example_very_unclear``), the few are flags, not labels (and the other way round)."""
    binary = [c for c in columns if c not in text_columns and is_binary_column(columns[c])
              and len({as_text(v).strip().lower() in _ONE for v in columns[c]}) == 2]
    numeric = [c for c in binary if all(as_text(v).strip() in ("0", "1", "0.0", "1.0") for v in columns[c][:5000])]
    words = [c for c in binary if c not in numeric]
    if numeric and words and len(numeric) != len(words):
        return numeric if len(numeric) > len(words) else words
    return binary


def lists_from_binary(columns: dict[str, list[Any]], names: Sequence[str], source: str) -> list[list[str]]:
    """Each row's labels: the names of its columns holding 1; any other value than 0/1 is an error."""
    out: list[list[str]] = []
    for i, cells in enumerate(zip(*(columns[n] for n in names))):
        row = []
        for name, cell in zip(names, cells):
            v = as_text(cell).strip().lower()
            if v in _ONE:
                row.append(name)
            elif v not in _ZERO:
                raise DataError(f"{source}: data row {i + 1}: column {name!r} holds {as_text(cell)!r}; "
                                "a one-column-per-label layout needs 0 or 1 in every label column")
        out.append(row)
    return out


def names_file(near: Path | None) -> tuple[list[str], Path] | None:
    """Label names from a names file beside a data file (or in its folder): ``classes.txt``,
    ``labels.txt``, ``emotions.txt``..., one name per line."""
    if near is None:
        return None
    folder = near if near.is_dir() else near.parent
    for name in NAMES_FILES:
        f = folder / name
        if f.is_file():
            try:
                names = [n.strip() for n in f.read_text(encoding="utf-8", errors="replace").splitlines()]
            except OSError:
                continue
            names = [n for n in names if n]
            if names and len(set(names)) == len(names):
                return names, f
    return None


__all__ = ["joined_separator", "split_joined", "as_label_lists", "is_binary_column", "binary_columns",
           "lists_from_binary", "names_file", "NAMES_FILES"]
