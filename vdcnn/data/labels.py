"""The label rule: how a dataset's raw label values map to class indices, decided once.

A :class:`LabelRule` is decided from the training split (plus ``classes.txt``, a ClassLabel
feature or the registry's names where present; whether integer labels are 0- or 1-based is decided
from every split read) and then applied unchanged to validation, test, ``vdcnn eval`` and any later
file; a run stores it in its ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vdcnn.errors import CheckpointError, DataError, UnknownLabels

from .files import as_text

_ORIGINS = ("data", "classes.txt", "ClassLabel", "registry", "names", "columns", "column", "labels.txt", "label_names.txt",
            "emotions.txt", "categories.txt", "tags.txt", "topics.txt")


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else None
    if isinstance(v, str):
        s = v.strip()
        if s[1:].isdigit() if s[:1] in "+-" else s.isdigit():
            return int(s)
    return None


def label_key(v: Any) -> str:
    """A raw label value as the string the rule matches: integers without leading zeros or ``.0``."""
    i = _as_int(v)
    return str(i) if i is not None else as_text(v).strip()


def _fmt(values: Sequence[Any], limit: int = 10) -> str:
    vals = [repr(v) for v in list(values)[:limit]]
    return ", ".join(vals) + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _keys(raw: Sequence[Any], source: str) -> list[str]:
    keys = [label_key(v) for v in raw]
    empty = [i for i, k in enumerate(keys) if not k]
    if empty:
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise DataError(f"{source}: {len(empty)} row(s) have an empty label (data rows {rows}...)")
    return keys


@dataclass(frozen=True)
class LabelRule:
    """Class ``i`` is named ``names[i]`` and written ``values[i]`` in the data.

    ``origin`` says where the names came from: ``data`` (the training labels themselves),
    ``classes.txt``, ``ClassLabel``, ``registry``, or ``names`` (only label names known, as for
    runs saved before rules were stored: names, or 0/1-based indices, are accepted).
    """

    names: tuple[str, ...]
    values: tuple[str, ...]
    origin: str = "data"
    note: str = field(default="", compare=False)  # why integer labels were read 0- or 1-based
    multi_label: bool = False  # each row holds a set of labels: ``apply`` gives a (rows, classes) 0/1 matrix

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.values):
            raise ValueError("a label rule needs one value per class name")

    @classmethod
    def decide(cls, raw: Sequence[Any], *, source: str, class_names: Sequence[str] | None = None,
               names_origin: str = "classes.txt", class_label: bool = False,
               others: Sequence[tuple[Sequence[Any], str]] = (), multi_label: bool = False) -> "LabelRule":
        """The rule for training labels ``raw`` (read from ``source``).

        With ``class_names`` (from ``classes.txt``, a ClassLabel feature when ``class_label``, or the
        registry), integer labels index them, 1-based when no 0 occurs in the training labels nor in
        ``others`` (the labels of the other splits read, with their sources) and the largest is a
        valid 1-based index (the char-CNN layout), else 0-based; other labels must be those names.
        Without, the classes are the distinct labels, sorted (numerically when all integers).
        With ``multi_label`` each raw value is a list of labels, decided on as one label each.
        """
        if multi_label:
            flat = [v for row in raw for v in row]
            rule = cls.decide(flat, source=source, class_names=class_names, names_origin=names_origin,
                              class_label=class_label, others=[([v for row in vals for v in row], src)
                                                               for vals, src in others])
            return dataclasses.replace(rule, multi_label=True)
        keys = _keys(raw, source)
        every = set(keys).union(*(_keys(vals, src) for vals, src in others))
        distinct = sorted(set(keys))
        ints = [_as_int(k) for k in distinct]
        all_int = all(i is not None for i in ints)
        if class_names is not None:
            names = tuple(str(n) for n in class_names)
            if len(set(names)) != len(names):
                raise DataError(f"{source}: duplicate class names {list(names)}")
            origin = "ClassLabel" if class_label else names_origin
            every_ints = [_as_int(k) for k in every]
            if all_int and all(i is not None for i in every_ints) and not set(distinct) <= set(names):
                lo, hi = min(every_ints), max(every_ints)  # type: ignore[type-var]
                offset = 1 if (lo >= 1 and hi <= len(names) and not class_label) else 0
                bad = [v for v in ints if not 0 <= v - offset < len(names)]
                if bad:
                    raise DataError(f"{source}: label value(s) {_fmt(sorted(bad))} do not fit the {len(names)} "
                                    f"class names from {origin} {list(names)}")
                if class_label:
                    why = "ClassLabel indices"
                elif offset == 0:
                    why = "0 occurs" if lo == 0 else f"{hi} is past the last 1-based index"
                elif hi == len(names):
                    why = f"no 0 in any split read and {hi} is the last 1-based index"
                else:
                    why = (f"no 0 in any split read; {lo}..{hi} would fit 0-based too: relabel, or add the missing "
                           "classes' rows, if that is wrong")
                note = f"{'1' if offset else '0'}-based ({why})"
                return cls(names, tuple(str(i + offset) for i in range(len(names))), origin, note)
            unknown = [k for k in distinct if k not in names]
            if unknown:
                raise DataError(f"{source}: label(s) {_fmt(unknown)} are not among the class names from "
                                f"{origin} {list(names)}")
            return cls(names, names, origin)
        if all_int:
            distinct = [str(i) for i in sorted(ints)]  # type: ignore[type-var]
        return cls(tuple(distinct), tuple(distinct), "data")

    def describe(self) -> str:
        """The rule in one line, for the data line of a run."""
        n = len(self.names)
        if self.multi_label:
            single = dataclasses.replace(self, multi_label=False).describe().replace("class", "label")
            return f"{single} (multi-label: a set of labels a text)"
        if self.origin == "data":
            return f"label rule: the {n} distinct training labels are the classes"
        if self.values == self.names:
            return f"label rule: labels are the {n} class names from {self.origin}"
        if self.origin == "column":
            return f"label rule: the {n} distinct training labels are the classes, named by the {self.note} column"
        return (f"label rule: labels {self.values[0]}..{self.values[-1]} index the {n} class names from "
                f"{self.origin}, {self.note or 'as stored'}")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "LabelRule":
        """A rule known only by its class names (runs saved before label rules were stored)."""
        names = tuple(str(n) for n in names)
        if not names:
            raise DataError("label_names is empty")
        if len(set(names)) != len(names):
            raise DataError(f"label names contain duplicates: {list(names)}")
        return cls(names, names, "names")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, stored as ``label_rule`` in a run's config.json."""
        d: dict[str, Any] = {"names": list(self.names), "values": list(self.values), "origin": self.origin}
        if self.multi_label:
            d["multi_label"] = True
        if self.origin == "column":
            d["note"] = self.note  # the column that named the labels
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "label_rule") -> "LabelRule":
        """Inverse of :meth:`to_dict`; a malformed entry is a CheckpointError naming ``source``."""
        try:
            names, values, origin = d["names"], d["values"], d.get("origin", "data")
            if not (isinstance(names, list) and isinstance(values, list) and origin in _ORIGINS):
                raise TypeError
            return cls(tuple(map(str, names)), tuple(map(str, values)), origin, note=str(d.get("note", "")),
                       multi_label=bool(d.get("multi_label", False)))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{source}: malformed label_rule {d!r:.200}") from None

    def _lookup(self) -> dict[str, int]:
        index = {v: i for i, v in enumerate(self.values)}
        # Names are accepted too (e.g. "positive" where training had 1) when none of them could be
        # mistaken for a value.
        if not set(self.names) & set(self.values):
            index.update({n: i for i, n in enumerate(self.names)})
        return index

    def apply(self, raw: Sequence[Any], *, source: str) -> np.ndarray:
        """Class indices (int64) of raw labels; a label outside the rule is an error naming it and ``source``.
        A multi-label rule takes a list of labels per row and gives a ``(rows, classes)`` 0/1 matrix."""
        if self.multi_label:
            return self._apply_sets(raw, source)
        keys = _keys(raw, source)
        index = self._lookup()
        unknown = sorted({k for k in keys if k not in index})
        if unknown and self.origin == "names":
            by_index = self._legacy_indices(keys, source)
            if by_index is not None:
                return by_index
        if unknown:
            raise UnknownLabels(f"{source}: unknown label(s) {_fmt(unknown)}, not seen in training; the model knows "
                                f"{_fmt(list(self.values))}" + ("" if self.values == self.names else
                                                                 f" (= {_fmt(list(self.names))})"))
        return np.array([index[k] for k in keys], dtype=np.int64)

    def _apply_sets(self, raw: Sequence[Any], source: str) -> np.ndarray:
        from .multilabel import as_label_lists

        rows = as_label_lists(raw)
        flat = dataclasses.replace(self, multi_label=False).apply([v for row in rows for v in row], source=source) if any(rows) else np.zeros(0, np.int64)
        out = np.zeros((len(rows), len(self.names)), dtype=np.int64)
        owner = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        out[owner, flat] = 1
        return out

    def _legacy_indices(self, keys: list[str], source: str) -> np.ndarray | None:
        ints = [_as_int(k) for k in keys]
        if any(i is None for i in ints):
            return None
        arr = np.array(ints, dtype=np.int64)
        if arr.min() >= 1 and arr.max() == len(self.names):
            arr = arr - 1
        bad = sorted({int(v) for v, a in zip(ints, arr) if not 0 <= a < len(self.names)})
        if bad:
            raise DataError(f"{source}: label value(s) {_fmt(bad)} outside the {len(self.names)} known classes "
                            f"{list(self.names)}")
        return arr


def run_label_rule(meta: dict[str, Any], source: str = "config.json") -> LabelRule:
    """The label rule a run was trained with (its config.json ``label_rule``); runs saved before
    rules were stored fall back to their label names."""
    if "label_rule" in meta:
        rule = LabelRule.from_dict(meta["label_rule"], source)
        if "labels" in meta and list(rule.names) != [str(n) for n in meta["labels"]]:
            raise CheckpointError(f"{source}: label_rule names {list(rule.names)} differ from labels {meta['labels']}")
        return rule
    if "labels" not in meta:
        raise CheckpointError(f"{source}: no labels recorded")
    return LabelRule.from_names(meta["labels"])
