"""Inference over encoded arrays and classification metrics (plots: ``vdcnn.plots``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .batching import iterate_ids
from .calibration import softmax  # noqa: F401 - also importable from here, as it always was


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, ids: np.ndarray, lengths: np.ndarray, batch_size: int = 256,
                   device: torch.device | str = "cpu", trim: bool = True, autocast_dtype: torch.dtype | None = None
                   ) -> np.ndarray:
    """Logits ``(N, classes)`` in input order; batches run in length order, trimmed."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(lengths), model.config.num_classes), dtype=np.float32)
    device = torch.device(device)
    for index, x, n in iterate_ids(ids, lengths, batch_size, trim, device):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x, n)[: len(index)]
        out[index] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str],
                          logits: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, error, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    k = len(labels)
    classes = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    report: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "error": float(1 - accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "labels": list(labels),
        "per_class": {
            labels[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i in classes
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }
    if logits is not None and len(y_true):
        loss = F.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(np.asarray(y_true)).long())
        report["loss"] = float(loss)
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary: headline metrics, per-class table, confusion matrix."""
    labels = report["labels"]
    width = max(12, *(len(x) for x in labels))
    lines = [
        f"examples  {report['n']}",
        f"accuracy  {report['accuracy'] * 100:.2f} %",
        f"error     {report['error'] * 100:.2f} %",
        f"macro-F1  {report['macro_f1'] * 100:.2f} %",
        "",
        f"{'class':<{width}}  precision  recall     f1  support",
    ]
    for name in labels:
        c = report["per_class"][name]
        lines.append(f"{name:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    short = [x[:10] for x in labels]
    cell = max(8, *(len(x) for x in short))
    lines.append(" " * width + "  " + " ".join(f"{x:>{cell}}" for x in short))
    for name, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
