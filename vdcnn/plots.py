"""Every plot vdcnn draws (matplotlib, imported only when a plot is drawn): the confusion matrix of
``vdcnn eval --plot`` and the curves and gradient norms of ``vdcnn compare``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def plot_confusion(report: dict[str, Any], path: str | Path, title: str = "Confusion matrix") -> None:
    """Confusion matrix as a PNG, counts and row-normalised colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion_matrix"], dtype=float)
    labels = report["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.6 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {report['accuracy'] * 100:.2f} %)")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def save_png(fig: Any, path: str | Path) -> None:
    """Write a matplotlib figure as a PNG, atomically (never a torn file)."""
    from .fileio import atomic_write

    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))


_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


def _styles(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Colour by depth, solid line for shortcut, dashed for plain."""
    depths = sorted({r["depth"] for r in rows if r.get("depth") is not None})
    colour = {d: _PALETTE[i % len(_PALETTE)] for i, d in enumerate(depths)}
    return {
        r["name"]: {
            "color": colour.get(r.get("depth"), "#444444"),
            "linestyle": "-" if r.get("shortcut") else "--",
            "marker": "o" if r.get("shortcut") else "s",
            "markersize": 4,
            "linewidth": 1.8,
            "label": _label(r),
        }
        for r in rows
    }


def _label(row: dict[str, Any]) -> str:
    text = f"{row['name']}"
    if row.get("depth") is not None and not re.fullmatch(r"d\d+-(shortcut|plain)", row["name"]):
        text += f" (depth {row['depth']}, shortcut {'on' if row.get('shortcut') else 'off'})"
    if row.get("status", "finished") != "finished":
        text += f" [{row['status']}]"
    return text


def _series(history: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, h in enumerate(history, 1):
        v = h.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(h.get("epoch", i)))
            ys.append(v * scale)
    return xs, ys


def _figure_title(rows: Sequence[dict[str, Any]], what: str) -> str:
    datasets = sorted({Path(str(r["dataset"])).name for r in rows if r.get("dataset")})
    return f"{what}{' - ' + ', '.join(datasets) if datasets else ''}"


def _finish_figure(fig: Any, axes: Sequence[Any], rows: Sequence[dict[str, Any]], path: str | Path, note: str) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3, which="major")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    ncol = min(4, max(1, len(labels)))
    if labels:
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, fontsize=9,
                            title=note or None, title_fontsize=8.5)
        legend.get_title().set_color("#555555")
    save_png(fig, path)


def plot_curves(rows: Sequence[dict[str, Any]], histories: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """Two panels: training loss and validation accuracy per epoch, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = _styles(rows)
    n_legend_rows = math.ceil(len(rows) / 4)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6 + 0.25 * n_legend_rows), layout="constrained")
    any_val = False
    for row in rows:
        history = histories.get(row["name"], [])
        style = styles[row["name"]]
        ax_loss.plot(*_series(history, "train_loss"), **style)
        xs, ys = _series(history, "val_acc", 100.0)
        any_val = any_val or bool(xs)
        ax_acc.plot(xs, ys, **style)
    ax_loss.set_title("Training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy (mean over epoch)")
    ax_acc.set_title("Validation accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    if not any_val:
        ax_acc.text(0.5, 0.5, "no validation split", transform=ax_acc.transAxes, ha="center", va="center",
                    color="#777777")
    fig.suptitle(_figure_title(rows, "VDCNN shortcut x depth"), fontsize=12)
    _finish_figure(fig, [ax_loss, ax_acc], rows, path, "colour: depth; solid line: shortcut on, dashed: plain")
    plt.close(fig)


def _stage_keys(histories: Iterable[list[dict[str, Any]]]) -> list[str]:
    keys: set[str] = set()
    for history in histories:
        for h in history:
            if isinstance(h.get("grad_norm"), dict):
                keys.update(h["grad_norm"])
    return sorted(keys, key=lambda k: (int(re.sub(r"\D", "", k) or 0), k))


def plot_grad_norms(rows: Sequence[dict[str, Any]], histories: dict[str, list[dict[str, Any]]],
                    path: str | Path) -> None:
    """One panel per stage, shared log y-axis: mean gradient norm per epoch, one line per variant.

    The shared axis is the point: in a deep plain net the early stages' norms sit far
    below the late ones (vanishing gradient); shortcuts keep them level.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = _stage_keys(histories.get(r["name"], []) for r in rows) or ["stage1"]
    ncols = min(4, len(stages))
    nrows = math.ceil(len(stages) / ncols)
    n_legend_rows = math.ceil(len(rows) / 4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.6, 3.6 * nrows + 0.6 + 0.25 * n_legend_rows),
                             sharey=True, squeeze=False, layout="constrained")
    flat = list(axes.flat)
    styles = _styles(rows)
    plotted = False
    for ax, stage in zip(flat, stages):
        for row in rows:
            xs, ys = [], []
            for i, h in enumerate(histories.get(row["name"], []), 1):
                g = (h.get("grad_norm") or {}).get(stage)
                if isinstance(g, (int, float)) and math.isfinite(g) and g > 0:  # log scale: skip zeros
                    xs.append(int(h.get("epoch", i)))
                    ys.append(g)
            plotted = plotted or bool(xs)
            ax.plot(xs, ys, **styles[row["name"]])
        ax.set_title(f"{stage.replace('stage', 'stage ')}{' (input side)' if stage == stages[0] else ''}"
                     f"{' (output side)' if stage == stages[-1] and len(stages) > 1 else ''}", fontsize=10)
        ax.set_xlabel("epoch")
    for ax in flat[len(stages):]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r][0].set_ylabel("gradient L2 norm (log scale)")
    if plotted:
        for ax in flat[: len(stages)]:
            ax.set_yscale("log")
    else:
        flat[0].text(0.5, 0.5, "no gradient norms recorded", transform=flat[0].transAxes, ha="center",
                     va="center", color="#777777")
    fig.suptitle(_figure_title(rows, "Gradient norm per stage"), fontsize=12)
    _finish_figure(fig, flat[: len(stages)], rows, path,
            "mean over sampled steps of each epoch; colour: depth; solid: shortcut on, dashed: plain")
    plt.close(fig)


def plot_reliability(before: list[dict[str, Any]], after: list[dict[str, Any]], path: str | Path,
                     title: str = "Reliability", ece: tuple[float, float] | None = None,
                     after_name: str = "calibrated") -> None:
    """Reliability diagram PNG: accuracy per confidence bin, raw beside calibrated, diagonal = perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, rows, name, e in zip(axes, (before, after), ("raw scores", after_name),
                                 ece or (None, None)):
        width = rows[0]["high"] - rows[0]["low"]
        filled = [r for r in rows if r["count"]]
        ax.bar([r["low"] for r in filled], [r["accuracy"] for r in filled], width=width, align="edge",
               color="#4c72b0", edgecolor="white", label="accuracy")
        ax.bar([r["low"] for r in filled], [r["confidence"] - r["accuracy"] for r in filled], width=width,
               bottom=[r["accuracy"] for r in filled], align="edge", color="#dd8452", alpha=0.45,
               edgecolor="white", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top probability (confidence)")
        ax.set_title(name + (f", ECE {e:.4f}" if e is not None else ""))
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def plot_calibration_report(report: dict[str, Any], path: str | Path, title: str = "Reliability") -> None:
    """The reliability diagram PNG of a ``calibration_report``."""
    from .calibration import format_temperatures

    plot_reliability(report["reliability_before"], report["reliability_after"], path, title=title,
                     ece=(report["ece_before"], report["ece_after"]),
                     after_name=f"temperature {format_temperatures(report)}")
