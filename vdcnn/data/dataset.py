"""The in-memory labelled dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class TextDataset:
    """Texts with integer labels ``0..n_classes-1`` indexing ``label_names``; a multi-label dataset's
    labels are a ``(rows, n_classes)`` 0/1 matrix."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    source: str

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

    @property
    def multi_label(self) -> bool:
        """Whether each row holds a set of labels (a 0/1 matrix) rather than one."""
        return self.labels.ndim == 2

    def class_counts(self) -> np.ndarray:
        """Rows per class, length ``n_classes``."""
        if self.multi_label:
            return self.labels.sum(0)
        return np.bincount(self.labels, minlength=self.n_classes)

    @property
    def n_present_classes(self) -> int:
        """Number of distinct labels that actually occur in this data."""
        return int(np.count_nonzero(self.class_counts()))

    def subset(self, indices: Sequence[int] | np.ndarray) -> "TextDataset":
        """The rows at ``indices``, same label names and source."""
        idx = np.asarray(indices, dtype=np.int64)
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=self.labels[idx],
            label_names=list(self.label_names),
            source=self.source,
        )
