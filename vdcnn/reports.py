"""The text a training run reports: one line per epoch, per-class recall of the best model."""

from __future__ import annotations

from typing import Any


def format_epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    """``epoch 3/20: train loss ... acc ..., val loss ... acc ... macro-F1 ..., N texts/s  (best, saved)``."""
    val_txt = (f"val loss {row['val_loss']:.4f} acc {row['val_acc'] * 100:.2f} % macro-F1 "
               f"{row['val_macro_f1'] * 100:.2f} %" if row["val_acc"] is not None else "no validation")
    if row.get("val_micro_f1") is not None:  # multi-label: acc is subset accuracy
        val_txt += f" micro-F1 {row['val_micro_f1'] * 100:.2f} %"
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc'] * 100:.2f} %, "
            f"{val_txt}, {row['samples_per_s']:.0f} texts/s{'  (best, saved)' if improved else ''}")


def format_recall_table(labels: list[str], val: dict[str, Any] | None, test: dict[str, Any] | None) -> list[str]:
    """Per-class recall (and support) of the best model on validation and test, one line per class."""
    width = max(8, *(len(x) for x in labels))
    parts = [(name, r) for name, r in (("validation", val), ("test", test)) if r]
    lines = [f"  {'recall':<{width}}  " + "  ".join(f"{name:>16}" for name, _ in parts)]
    for label in labels:
        cells = [f"{r['per_class'][label]['recall'] * 100:.1f} % ({r['per_class'][label]['support']})"
                 for _, r in parts]
        lines.append(f"  {label:<{width}}  " + "  ".join(f"{c:>16}" for c in cells))
    return lines


def recalls(report: dict[str, Any] | None) -> dict[str, float] | None:
    """Per-class recall of a classification report, rounded for config.json."""
    return {k: round(v["recall"], 6) for k, v in report["per_class"].items()} if report else None
