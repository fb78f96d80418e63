"""Loading a dataset's splits: one split by name, or train/validation/test of a run under one label rule."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vdcnn.errors import ConfigError, DataError, NoLabels, UnknownLabels

from .columns import texts_and_labels
from .dataset import TextDataset
from .files import read_classes_txt
from .hub import hub_table, load_hub
from .local import has_local_split, own_validation, read_local_split
from .labels import LabelRule, label_key
from .multilabel import names_file
from .registry import DATA_DIR_ENV, REGISTRY, DatasetSpec, local_registry_dir, resolve_name


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
    labels = strata(labels)
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


def strata(labels: np.ndarray) -> np.ndarray:
    """What stratified splits keep in proportion: the label of each row, or for a multi-label matrix the
    rarest label each row holds (-1: none), so that rare labels reach every split."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    if not labels.shape[1]:
        return np.full(len(labels), -1, dtype=np.int64)
    counts = labels.sum(0)
    rarity = np.where(labels > 0, counts[None, :], np.iinfo(np.int64).max)
    return np.where(labels.any(1), rarity.argmin(1), -1).astype(np.int64)


def _stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, label-stratified subset of ``limit`` rows."""
    labels = strata(labels)
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
# Reading one split
# --------------------------------------------------------------------------------------------


@dataclass
class _RawSplit:
    """A split's texts and raw label values, with the class names found beside them."""

    texts: list[str]
    labels: list[Any]
    source: str
    class_names: list[str] | None = None
    names_origin: str = "classes.txt"
    class_label: bool = False
    notes: list[str] = field(default_factory=list)  # how it was read
    chosen: tuple[list[str], str] | None = None  # the text and label columns it used
    multi_label: str = ""  # how its labels were read as sets (empty: single-label)
    label_names: tuple[str, dict[str, str]] | None = None  # a column naming the labels, and its map

    def rule(self, others: Sequence["_RawSplit"] = ()) -> LabelRule:
        """The label rule this split decides when it is the training split (``others``: the other
        splits read, which decide with it whether integer labels are 0- or 1-based)."""
        rule = LabelRule.decide(self.labels, source=self.source, class_names=self.class_names,
                                names_origin=self.names_origin, class_label=self.class_label,
                                others=[(o.labels, o.source) for o in others], multi_label=bool(self.multi_label))
        if self.label_names and rule.origin == "data" and not rule.multi_label:
            column, names = self.label_names
            if all(v in names for v in rule.values):  # the other splits keep matching by value
                return LabelRule(tuple(names[v] for v in rule.values), rule.values, "column", note=repr(column))
        return rule

    def dataset(self, rule: LabelRule) -> TextDataset:
        return TextDataset(texts=self.texts, labels=rule.apply(self.labels, source=self.source),
                           label_names=list(rule.names), source=self.source)


def _locate(source: str) -> tuple[DatasetSpec | None, Path | None]:
    """(registry spec or None, local path or None: the hub) for a dataset source."""
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise DataError(f"dataset source must be a registry name or a path, got {source!r}")
    src = str(source)
    name = resolve_name(src)
    if name is not None:
        return REGISTRY[name], local_registry_dir(name)
    path = Path(src).expanduser()
    if path.exists():
        return None, path
    root = os.environ.get(DATA_DIR_ENV)
    if root and os.sep not in src and (Path(root).expanduser() / src).is_dir():
        return None, Path(root).expanduser() / src  # a folder name under $VDCNN_DATA_DIR, e.g. "sst2"
    raise DataError(f"{src}: no such file or folder, and not a known dataset name ({', '.join(REGISTRY)})")


def _read_split(source: str, split: str, text_columns: Sequence[str] | None,
                label_column: str | None, multi_label: bool | None = None) -> _RawSplit:
    spec, path = _locate(source)
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    if path is None:
        assert spec is not None
        src, near = f"{spec.hub_id}{'/' + spec.hub_config if spec.hub_config else ''} ({split})", None
        table = hub_table(load_hub(spec, split))
        texts, labels, col = texts_and_labels(
            table, source=src, text_columns=list(text_columns) if text_columns is not None else list(spec.text_fields),
            label_column=label_column or spec.label_field, clean_escapes=True,  # as the char-CNN CSVs read locally
            multi_label=multi_label)
    else:
        table, src, near = read_local_split(path, split, list(text_columns or []) + ([label_column] if label_column else []))
        texts, labels, col = texts_and_labels(table, source=src, text_columns=text_columns, label_column=label_column,
                                              multi_label=multi_label)
    raw = _raw_split(table, texts, labels, col, src, spec, path, near)
    raw.chosen = table.chosen
    raw.multi_label = table.multi_label
    return raw


def _raw_split(table, texts, labels, col, src, spec, path, near) -> _RawSplit:
    notes = table.notes
    if table.label_columns:
        return _RawSplit(texts, labels, src, list(table.label_columns), "columns", notes=notes)
    class_label = (table.class_label_names or {}).get(col)
    if class_label:
        return _RawSplit(texts, labels, src, class_label, "ClassLabel", True, notes)
    classes = read_classes_txt(near) if path is not None and near is not None else None
    if classes is None and table.multi_label and path is not None and near is not None:
        classes = _names_for_ids(labels, names_file(near))
        if classes:
            return _RawSplit(texts, labels, src, classes[0], classes[1].name, notes=notes)
    if classes:
        return _RawSplit(texts, labels, src, classes[0], "classes.txt", notes=notes)
    if spec is not None:
        return _RawSplit(texts, labels, src, list(spec.label_names), "registry", notes=notes)
    return _RawSplit(texts, labels, src, notes=notes, label_names=table.label_names)


def _names_for_ids(labels: list[Any], found: tuple[list[str], Path] | None) -> tuple[list[str], Path] | None:
    """A names file's names when the multi-label ids are integers that index them (0-based), else None."""
    if found is None:
        return None
    ids = [label_key(v) for row in labels for v in row]
    if ids and all(i.isdigit() and int(i) < len(found[0]) for i in ids):
        return found
    return None


def _same_dataset(a: str, b: str) -> bool:
    if str(a) == str(b):
        return True
    try:
        return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    except OSError:
        return False


def _check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")


def load_split(
    source: str,
    split: str = "train",
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    label_rule: LabelRule | None = None,
    limit: int | None = None,
    seed: int = 0,
    trained_on: str | None = None,
) -> TextDataset:
    """Load one split of a registry dataset, a folder or a file.

    ``source`` is a registry name (looked up under ``$VDCNN_DATA_DIR/<name>/`` first, then on
    the Hugging Face hub), a folder under ``$VDCNN_DATA_DIR``, or a path: a folder holding
    ``<split>*`` files (plus an optional ``classes.txt``) or a single data file (CSV, TSV,
    JSON lines, Parquet, fastText, or a text file with no extension; ``.gz``/``.bz2``/``.xz`` ok).
    Labels follow ``label_rule`` (a trained model's), else ``label_names`` (by name or index),
    else the rule this split decides itself. ``limit`` keeps a seeded, stratified subset.
    ``trained_on`` (the dataset a run trained on): when ``source`` is that dataset and has no ``split``
    of its own (a single file serves every split), refuse rather than score training rows.
    """
    _check_limit(limit)
    if trained_on is not None and _same_dataset(source, trained_on) and not has_split(source, split):
        raise DataError(f"{source}: the run trained on this dataset and it has no {split!r} split: all its rows were "
                        f"training or validation rows, so scores on it would not be test scores; give held-out "
                        f"data (vdcnn eval RUN FILE)")
    multi = label_rule.multi_label if label_rule is not None and label_rule.origin != "names" else None
    raw = _read_split(source, str(split), text_columns, label_column, multi)
    if label_rule is None:
        label_rule = LabelRule.from_names(label_names) if label_names is not None else raw.rule()
    try:
        ds = raw.dataset(label_rule)
    except UnknownLabels as exc:
        if raw.chosen is None or label_column is not None:
            raise
        raise DataError(f"{exc}; these were read from column {raw.chosen[1]!r}: name the label column with "
                        "--label-column (a file without labels is for vdcnn predict)") from None
    if len(ds) == 0:
        raise DataError(f"{ds.source}: no data rows")
    if limit is not None and limit < len(ds):
        ds = ds.subset(_stratified_subset(ds.labels, int(limit), seed))
    return ds


# --------------------------------------------------------------------------------------------
# The splits of a run
# --------------------------------------------------------------------------------------------


@dataclass
class Splits:
    """The three splits of a run, labelled by one rule (decided on the training split)."""

    train: TextDataset
    val: TextDataset  # empty when no validation is wanted
    test: TextDataset | None  # None: the dataset has no test split
    val_note: str  # where validation came from, for the data line
    label_rule: LabelRule | None = None
    rows_read: int = 0  # rows of the training file(s) as read, before any carve-out or --limit
    notes: list[str] = field(default_factory=list)  # how the data was read (layout, columns, bytes, label rule)

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names


def has_split(source: str, split: str) -> bool:
    """Whether ``source`` has a ``split`` at all (a single file has only its training rows)."""
    try:
        spec, path = _locate(source)
    except DataError:
        return False
    if path is None:
        assert spec is not None
        return split in ("train", spec.test_split) or split == spec.validation_split
    try:
        return has_local_split(path, split)
    except DataError:
        return True  # let load_split report the folder error


def _own_validation(source: str) -> str | None:
    """The name of the dataset's own validation split, if it has one."""
    spec, path = _locate(source)
    if path is None:
        return spec.validation_split if spec is not None else None
    return own_validation(path)


def _short(source: str) -> str:
    base = re.split(r":| \[| \(", source)[0]  # archive:member, folder [split], folder (files)
    return Path(source).name if os.path.exists(source) or (base and os.path.exists(base)) else source


def load_splits(
    source: str,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    test_split: str = "test",
    seed: int = 0,
    label_rule: LabelRule | None = None,
    multi_label: bool | None = None,
) -> Splits:
    """Train, validation and test of a dataset, read before any training starts, under one label rule.

    The rule is decided on the training split (or given, e.g. by a resumed run) and applied to the
    others. Validation is the dataset's own (``dev``/``val``/``valid``/``validation`` files, or the
    hub's validation split) when it has one, else ``val_fraction`` carved from train, stratified.
    A test split that exists but cannot be read is an error here, naming the file; a dataset with
    no test split at all gives ``test=None``.
    """
    _check_limit(limit)
    if label_rule is not None:
        multi_label = label_rule.multi_label
    raw = _read_split(source, "train", text_columns, label_column, multi_label)
    multi_label = bool(raw.multi_label)  # the other splits are read as training was
    if raw.chosen is not None and text_columns is None and label_column is None and _locate(source)[0] is None:
        text_columns, label_column = raw.chosen  # the other splits use the columns training used
    own = _own_validation(source)
    raw_val = _read_split(source, own, text_columns, label_column, multi_label) if own is not None else None
    raw_test, unlabelled = None, []
    if test_split and has_split(source, test_split):
        try:
            raw_test = _read_split(source, test_split, text_columns, label_column, multi_label)
        except NoLabels as exc:  # GLUE's test.tsv, a Kaggle test.csv: texts to predict, nothing to score
            unlabelled = [f"split: the test split has no labels, so it is not scored ({exc})"]
    rule = label_rule or raw.rule([r for r in (raw_val, raw_test) if r is not None])
    data = raw.dataset(rule)
    rows_read = len(data)
    if limit is not None and limit < len(data):
        data = data.subset(_stratified_subset(data.labels, int(limit), seed))
    if data.n_present_classes < 2:
        column = f" (label column {raw.chosen[1]!r})" if raw.chosen is not None else ""
        raise DataError(f"{data.source}: the training split has only one class{column}; a classifier needs at least "
                        "two" + ("; choose the label with --label-column" if column and label_column is None else ""))
    if raw_val is not None:
        val = _nonempty(raw_val.dataset(rule))
        train, note = data, f"{_short(val.source)} (the dataset's own, {len(val):,} rows)"
    else:
        train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
        train, val = data.subset(train_idx), data.subset(val_idx)
        note = f"{len(val_idx):,} rows ({float(val_fraction) * 100:g} %) carved from train" if len(val_idx) else "none"
    test = _nonempty(raw_test.dataset(rule)) if raw_test is not None else None
    notes = [*raw.notes, *([f"multi-label: {raw.multi_label}"] if raw.multi_label else []), rule.describe()]
    for other in (raw_val, raw_test):
        notes += [f"{_short(other.source)}: {n}" for n in other.notes if n.startswith("encoding")] if other else []
        notes += [n for n in other.notes if n.startswith("split:")] if other else []
    notes += unlabelled
    return Splits(train=train, val=val, test=test, val_note=note, label_rule=rule, rows_read=rows_read, notes=notes)


def _nonempty(ds: TextDataset) -> TextDataset:
    if len(ds) == 0:
        raise DataError(f"{ds.source}: no data rows")
    return ds


def with_train_subset(splits: Splits, limit: int | None, seed: int) -> Splits:
    """The same splits without the test split and, with ``limit``, a seeded stratified subset of
    ``limit`` training rows (autotune's trials: validation stays the run's own)."""
    train = splits.train
    if limit is not None and limit < len(train):
        train = train.subset(_stratified_subset(train.labels, int(limit), seed))
    return dataclasses.replace(splits, train=train, test=None)


def load_run_splits(cfg: Any, label_rule: LabelRule | None = None) -> Splits:
    """Train, validation and test splits of a run's dataset (``cfg``: a ``RunConfig``) (the test split read before training),
    under ``label_rule`` when given (a resumed run's, or rank 0's), else the one the training split decides."""
    d = cfg.data
    splits = load_splits(d.dataset, text_columns=d.text_columns, label_column=d.label_column,
                         val_fraction=d.val_fraction, limit=d.limit, test_split=d.test_split,
                         seed=cfg.train.seed if d.split_seed is None else d.split_seed, label_rule=label_rule,
                         multi_label=getattr(d, "multi_label", None))
    if len(splits.train.texts) == 0:
        raise DataError(f"{splits.train.source}: the training split has no rows")
    return splits
