"""Labelled text data: registry datasets (local folder or Hugging Face hub) and files in any common layout.

* :data:`REGISTRY` / :class:`DatasetSpec` - the char-CNN / VDCNN benchmark datasets.
* :func:`load_split` - one split of a registry dataset, a folder or a file, as a :class:`TextDataset`.
* :func:`load_splits` / :class:`Splits` - train, validation and test of a run under one :class:`LabelRule`.
* :func:`stratified_split` - deterministic stratified train/validation indices.
* :func:`read_lines` / :func:`read_records` - memory-bounded streaming of unlabelled texts for prediction.

Every problem the user can fix (missing file, wrong column, unreadable data, unreachable hub...)
is raised as :class:`~vdcnn.errors.DataError` with a one-line message naming the file.
"""

from .dataset import TextDataset
from .labels import LabelRule, run_label_rule
from .registry import DATA_DIR_ENV, REGISTRY, DatasetSpec
from .splits import (Splits, has_split, load_run_splits, load_split, load_splits, stratified_split,
                     with_train_subset)
from .stream import input_format_for, read_lines, read_records, read_texts

__all__ = [
    "DatasetSpec",
    "REGISTRY",
    "TextDataset",
    "LabelRule",
    "run_label_rule",
    "load_split",
    "load_splits",
    "load_run_splits",
    "with_train_subset",
    "has_split",
    "Splits",
    "stratified_split",
    "read_lines",
    "read_records",
    "input_format_for",
    "read_texts",
    "DATA_DIR_ENV",
]
