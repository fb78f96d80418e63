"""Prediction as a library: ``Classifier.load(run).predict(texts)``, and its output lines.

The classifiers live in ``vdcnn.classifier``; they are importable from here too, as the README shows.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from .classifier import (  # noqa: F401 - the public import path of the classifiers
    BundleClassifier, Classifier, OnnxClassifier, TextClassifier, TorchScriptClassifier, load_classifier,
)

OUTPUT_FORMATS = ("tsv", "jsonl")
INPUT_FORMATS = ("auto", "lines", "csv", "tsv", "jsonl")


def format_predictions(probs: np.ndarray, labels: Sequence[str], top_k: int = 1, fmt: str = "tsv") -> list[str]:
    """Output lines: ``label<TAB>prob`` (top-k pairs on one line) or a JSON object per text."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    lines = []
    for row, p in zip(top, probs):
        if fmt == "jsonl":
            obj: dict[str, Any] = {"label": labels[row[0]], "probability": round(float(p[row[0]]), 6),
                                   "probabilities": {name: round(float(v), 6) for name, v in zip(labels, p)}}
            if top_k > 1:
                obj["top_k"] = [[labels[j], round(float(p[j]), 6)] for j in row]
            lines.append(json.dumps(obj, ensure_ascii=False))
        else:
            lines.append("\t".join(f"{labels[j]}\t{p[j]:.4f}" for j in row))
    return lines
