"""Multi-label classification: sigmoid outputs, per-label thresholds and calibration, and the report.

A multi-label run (its training labels a ``(rows, labels)`` 0/1 matrix, ``vdcnn.data.multilabel``)
trains one sigmoid output per label with binary cross-entropy, weighting the positives of rare
labels (``pos_weight``: sqrt(negatives / positives), capped at 10). After training it fits a
per-label Platt scaling ``sigmoid(a * logit + b)`` on validation (one shared temperature for labels
with too few positives; ``--no-calibrate``: raw sigmoid) and then one decision threshold per label
maximising that label's F1 on the validation probabilities (the global threshold maximising micro-F1
for labels with fewer than ``MIN_THRESHOLD_POSITIVES`` positives). Both are stored in ``config.json``
(``calibration``, ``multi_label``) and applied by every backend. A text's labels are those above their
thresholds; when none passes, the most probable one (the data always has one or more labels a text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .calibration import MAX_INVERSE_T, MIN_INVERSE_T
from .errors import CheckpointError

if TYPE_CHECKING:  # torch only where a model trains or is explained: an ONNX bundle predicts without it
    import torch

POS_WEIGHT_CAP = 10.0
MIN_THRESHOLD_POSITIVES = 5  # fewer validation positives: the label takes the global threshold
MIN_PLATT_POSITIVES = 20  # fewer: the label takes the shared temperature instead of its own (a, b)
MIN_CALIBRATION_TEXTS = 100
ECE_BINS = 15


# --- training ---------------------------------------------------------------------------------


def adapt_config(cfg: Any, labels: np.ndarray) -> list[str]:
    """Settings that mean something else for multi-label training, adapted; returns the log lines."""
    t = cfg.train
    lines = []
    if t.label_smoothing:
        lines.append(f"  multi-label: label smoothing {t.label_smoothing} turned off (it would push every "
                     "absent label towards a positive target)")
    cfg.set("train.label_smoothing", 0.0, source="multi-label")
    if t.select_by != "macro_f1" or "train.select_by" not in cfg.explicit:
        cfg.set("train.select_by", "micro_f1", source="multi-label")
    counts = np.asarray(labels).sum(0)
    lines.append(f"  multi-label: {len(counts)} labels, {np.asarray(labels).sum(1).mean():.2f} a text on average "
                 f"(rarest {int(counts.min())} rows, commonest {int(counts.max())}); sigmoid outputs with binary "
                 f"cross-entropy, best epoch by validation {t.select_by.replace('_', '-')} at per-label thresholds")
    return lines


def pos_weight(labels: np.ndarray, class_weights: str = "none") -> "torch.Tensor":
    """Weights of each label's positives in the BCE: sqrt(negatives / positives) capped at 10 (with
    ``balanced``: negatives / positives, capped at 10); 1 for a label without positives."""
    y = np.asarray(labels, dtype=np.float64)
    pos = y.sum(0)
    ratio = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)
    w = ratio if class_weights == "balanced" else np.sqrt(ratio)
    import torch

    return torch.tensor(np.clip(w, 1.0, POS_WEIGHT_CAP), dtype=torch.float32)


def init_output_bias(model: Any, labels: np.ndarray, class_weights: str = "none") -> None:
    """Start every label's output at the best constant guess: the logit of its training frequency
    (raised by its ``pos_weight``), not at 0.5 for all labels; with 28 mostly absent labels the first
    epoch would otherwise be spent learning that each is rare (Lin et al. 2017's prior initialisation)."""
    import torch

    y = np.asarray(labels, dtype=np.float64)
    prior = np.clip(y.mean(0), 1e-4, 1 - 1e-4)
    w = pos_weight(labels, class_weights).double().numpy()
    p = w * prior / (w * prior + 1 - prior)
    bias = torch.tensor(np.log(p / (1 - p)), dtype=torch.float32)
    out = model.head[-1] if model.config.conv else model.ngrams.out
    with torch.no_grad():
        out.bias.copy_(bias.to(out.bias.device))


def loss(logits: "torch.Tensor", y: "torch.Tensor", weight: "torch.Tensor | None") -> "torch.Tensor":
    """Binary cross-entropy of every (text, label) pair, summed over labels, mean over texts."""
    import torch.nn.functional as F

    per = F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=weight, reduction="none")
    return per.sum(1).mean()


# --- probabilities, thresholds, calibration -----------------------------------------------------


def sigmoid_proba(logits: np.ndarray, platt: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per-label probabilities ``sigmoid(a * logits + b)`` in float64 (raw sigmoid without ``platt``)."""
    z = np.asarray(logits, dtype=np.float64)
    if platt is not None:
        z = z * platt[0] + platt[1]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def torch_proba(logits: "torch.Tensor", platt: tuple[np.ndarray, np.ndarray] | None) -> "torch.Tensor":
    """``sigmoid_proba`` for a differentiable torch tensor (explanations)."""
    import torch

    if platt is not None:
        a = torch.as_tensor(platt[0], dtype=logits.dtype, device=logits.device)
        b = torch.as_tensor(platt[1], dtype=logits.dtype, device=logits.device)
        logits = logits * a + b
    return torch.sigmoid(logits)


def _best_cut(p: np.ndarray, y: np.ndarray, bottom: float | None = 0.0) -> tuple[float, float]:
    """(threshold, F1) of the cut maximising F1 when predicting ``p >= threshold``; ``bottom`` is the
    score below every text (0 for probabilities; ``None``: one under the lowest, for logits)."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ps) + 1)
    f1 = 2 * tp / (k + ys.sum())
    distinct = np.r_[ps[1:] != ps[:-1], True]  # a cut is only possible between different scores
    f1 = np.where(distinct, f1, -1.0)
    i = int(np.argmax(f1))
    nxt = ps[i + 1] if i + 1 < len(ps) else (ps[i] - 1.0 if bottom is None else bottom)
    return float((ps[i] + nxt) / 2), float(max(f1[i], 0.0))


def tune_cuts(scores: np.ndarray, labels: np.ndarray, min_positives: int = MIN_THRESHOLD_POSITIVES,
              bottom: float | None = None) -> tuple[np.ndarray, float, int]:
    """Per-label cuts maximising each label's F1 when predicting ``scores >= cut`` (any increasing score:
    logits, probabilities), the global cut (maximising micro-F1) that labels with fewer than
    ``min_positives`` positives take, and how many did. On logits the choice is exact whatever their
    scale; on raw sigmoids of large logits it is not (they round to 0 and 1)."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    glob = _best_cut(scores.ravel(), y.ravel(), bottom)[0] if y.any() else (0.0 if bottom is None else 0.5)
    out = np.full(scores.shape[1], glob)
    fallback = 0
    for j in range(scores.shape[1]):
        if y[:, j].sum() >= min_positives:
            out[j] = _best_cut(scores[:, j], y[:, j], bottom)[0]
        else:
            fallback += 1
    return out, float(glob), fallback


def tune_thresholds(probs: np.ndarray, labels: np.ndarray, min_positives: int = MIN_THRESHOLD_POSITIVES
                    ) -> tuple[np.ndarray, float, int]:
    """``tune_cuts`` on probabilities, the thresholds kept inside (1e-4, 1 - 1e-4): what a run stores."""
    out, glob, fallback = tune_cuts(probs, labels, min_positives, bottom=0.0)
    return np.clip(out, 1e-4, 1 - 1e-4), glob, fallback


def f1_at_tuned_cuts(val_logits: np.ndarray, val_labels: np.ndarray, logits: np.ndarray | None = None,
                     labels: np.ndarray | None = None) -> dict[str, float]:
    """Micro- and macro-F1 of ``logits`` (default: the validation rows themselves) at per-label cuts tuned
    on the validation logits: how candidates (blends, penalties, ablation parts) are compared before
    calibration, independent of the logits' scale."""
    from sklearn.metrics import f1_score

    cuts, _, _ = tune_cuts(val_logits, val_labels)
    z, y = (val_logits, val_labels) if logits is None else (logits, labels)
    pred = decide(np.asarray(z, dtype=np.float64), cuts)
    return {f"{avg}_f1": float(f1_score(y, pred, average=avg, zero_division=0)) for avg in ("micro", "macro")}


def decide(probs: np.ndarray, thresholds: np.ndarray, at_least_one: bool = True) -> np.ndarray:
    """The 0/1 label matrix: every label at or above its threshold (and the top one where none is)."""
    pred = (np.asarray(probs) >= np.asarray(thresholds)[None, :]).astype(np.int64)
    if at_least_one and len(pred):
        empty = ~pred.any(1)
        pred[empty, np.asarray(probs)[empty].argmax(1)] = 1
    return pred


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0, z) - y * z))


def fit_platt(logits: np.ndarray, labels: np.ndarray, min_positives: int = MIN_PLATT_POSITIVES
              ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Per-label Platt scaling ``(a, b)`` minimising each label's BCE; labels with fewer than
    ``min_positives`` positives (or negatives) take ``a = 1/T`` of one temperature shared by all labels
    and ``b = 0``. Returns a, b, the shared T and how many labels have their own fit."""
    from scipy.optimize import minimize, minimize_scalar

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    shared = minimize_scalar(lambda s: _bce(z * s, y), bounds=(MIN_INVERSE_T, MAX_INVERSE_T), method="bounded").x
    a, b = np.full(z.shape[1], shared), np.zeros(z.shape[1])
    own = 0
    for j in range(z.shape[1]):
        pos = y[:, j].sum()
        if pos < min_positives or len(y) - pos < min_positives:
            continue

        def objective(ab: np.ndarray, j: int = j) -> tuple[float, np.ndarray]:
            s = z[:, j] * ab[0] + ab[1]
            p = 1.0 / (1.0 + np.exp(-np.clip(s, -500, 500)))
            g = p - y[:, j]
            return _bce(s, y[:, j]), np.array([np.mean(g * z[:, j]), np.mean(g)])

        res = minimize(objective, np.array([shared, 0.0]), jac=True, method="L-BFGS-B",
                       bounds=[(MIN_INVERSE_T, MAX_INVERSE_T), (-20.0, 20.0)])
        a[j], b[j] = res.x
        own += 1
    return a, b, float(1.0 / shared), own


def binary_ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of every (text, label) probability against its 0/1 truth."""
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(labels, dtype=np.float64).ravel()
    if not len(p):
        return 0.0
    index = np.clip(np.ceil(p * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for k in range(bins):
        inside = index == k
        if inside.any():
            total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def fit_after_training(logits: np.ndarray, labels: np.ndarray, calibrate: bool, log: Callable[[str], None]
                       ) -> dict[str, Any]:
    """The ``calibration`` and ``multi_label`` entries of a finished run's ``config.json``, fitted on the
    validation logits: Platt scaling (unless ``calibrate`` is off or validation is small), then thresholds."""
    y = np.asarray(labels)
    entries: dict[str, Any] = {}
    platt = None
    if not calibrate:
        entries["calibration"] = {"method": "none", "temperature": 1.0, "reason": "--no-calibrate"}
    elif len(y) < MIN_CALIBRATION_TEXTS or not np.isfinite(logits).all():
        why = (f"{len(y)} validation texts (fewer than {MIN_CALIBRATION_TEXTS})" if len(y) < MIN_CALIBRATION_TEXTS
               else "non-finite validation logits")
        entries["calibration"] = {"method": "none", "temperature": 1.0, "reason": why}
        log(f"calibration: skipped, {why}; probabilities are the raw sigmoid")
    else:
        a, b, shared_t, own = fit_platt(logits, y)
        platt = (a, b)
        raw, cal = sigmoid_proba(logits), sigmoid_proba(logits, platt)
        z = np.asarray(logits, dtype=np.float64)
        entries["calibration"] = {
            "method": "platt", "temperature": 1.0, "scale": [round(float(v), 6) for v in a],
            "bias": [round(float(v), 6) for v in b], "shared_temperature": round(shared_t, 6),
            "labels_own_fit": own, "fitted_on": "validation", "n": int(len(y)), "bins": ECE_BINS,
            "ece_before": round(binary_ece(raw, y), 6), "ece_after": round(binary_ece(cal, y), 6),
            "nll_before": round(_bce(z, y), 6), "nll_after": round(_bce(z * a + b, y), 6),
        }
        platt = platt_of(entries)  # the rounded values stored are the values scored
        c = entries["calibration"]
        log(f"calibration: per-label Platt scaling on validation ({own} of {y.shape[1]} labels their own, the rest "
            f"temperature {shared_t:.3f}): ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} over every "
            f"(text, label) probability, NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}")
    probs = sigmoid_proba(logits, platt)
    thresholds, glob, fallback = (tune_thresholds(probs, y) if len(y) and y.any()
                                  else (np.full(y.shape[1], 0.5), 0.5, y.shape[1]))
    entries["multi_label"] = {
        "thresholds": [round(float(v), 6) for v in thresholds],
        "global_threshold": round(glob, 6),
        "threshold_rule": (f"per-label F1 on validation; labels with fewer than {MIN_THRESHOLD_POSITIVES} "
                           f"validation positives take the global threshold (micro-F1)"),
        "labels_on_global_threshold": fallback,
        "at_least_one": True,
    }
    log(f"thresholds: one per label tuned on validation (median {np.median(thresholds):.3f}, range "
        f"{thresholds.min():.3f}-{thresholds.max():.3f}; {fallback} label(s) with under {MIN_THRESHOLD_POSITIVES} "
        f"positives on the global {glob:.3f})")
    return entries


# --- stored settings --------------------------------------------------------------------------


def is_multi_label(meta: dict[str, Any] | None) -> bool:
    """Whether a run's ``config.json`` (or a bundle's ``bundle.json``) is a multi-label model's."""
    meta = meta or {}
    return bool((meta.get("label_rule") or {}).get("multi_label")) or isinstance(meta.get("multi_label"), dict)


def platt_of(meta: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored per-label Platt scaling (None: raw sigmoid)."""
    c = (meta or {}).get("calibration") or {}
    if not isinstance(c, dict) or c.get("method") != "platt":
        return None
    try:
        a, b = np.asarray(c["scale"], dtype=np.float64), np.asarray(c["bias"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("malformed multi-label calibration (scale, bias)") from None
    if a.shape != b.shape or not np.isfinite(a).all() or not np.isfinite(b).all():
        raise CheckpointError("malformed multi-label calibration (scale, bias)")
    return a, b


def attach(classifier: Any, meta: dict[str, Any] | None) -> Any:
    """Give a classifier loaded from a run or a bundle its multi-label settings (if it has them)."""
    if not is_multi_label(meta):
        return classifier
    k = len(classifier.labels)
    settings = (meta or {}).get("multi_label") or {}
    thresholds = np.asarray(settings.get("thresholds", [0.5] * k), dtype=np.float64)
    if thresholds.shape != (k,) or not np.isfinite(thresholds).all():
        raise CheckpointError(f"multi_label.thresholds must hold {k} numbers, one per label")
    platt = platt_of(meta)
    if platt is not None and platt[0].shape != (k,):
        raise CheckpointError(f"multi-label calibration must hold {k} scales and biases, one per label")
    classifier.multi_label = True
    classifier.thresholds = thresholds
    classifier.platt = platt
    classifier.at_least_one = bool(settings.get("at_least_one", True))
    return classifier


def ensemble_settings(ensemble: Any, members: Sequence[Any]) -> None:
    """An ensemble of multi-label members: the mean of their thresholds (all must be multi-label)."""
    kinds = {bool(getattr(m, "multi_label", False)) for m in members}
    if len(kinds) > 1:
        from .errors import ConfigError

        raise ConfigError("an ensemble cannot mix multi-label and single-label models")
    if kinds == {True}:
        ensemble.multi_label = True
        ensemble.thresholds = np.mean([m.thresholds for m in members], axis=0)
        ensemble.at_least_one = all(m.at_least_one for m in members)


# --- reports ----------------------------------------------------------------------------------


def report(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, labels: Sequence[str],
           at_least_one: bool = True, logits: np.ndarray | None = None) -> dict[str, Any]:
    """Micro/macro/samples F1, subset accuracy, Hamming loss and per-label precision/recall/F1/support."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = np.asarray(y_true, dtype=np.int64)
    pred = decide(probs, thresholds, at_least_one)
    p, r, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y, pred, average="micro", zero_division=0)
    subset = float(accuracy_score(y, pred)) if len(y) else 0.0
    out: dict[str, Any] = {
        "multi_label": True,
        "n": int(len(y)),
        "accuracy": subset,  # subset accuracy: every label of the text right
        "error": 1 - subset,
        "micro_f1": float(mf), "micro_precision": float(mp), "micro_recall": float(mr),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y, pred, average="samples", zero_division=0)) if len(y) else 0.0,
        "hamming_loss": float(hamming_loss(y, pred)) if len(y) else 0.0,
        "labels_per_text": float(pred.sum(1).mean()) if len(y) else 0.0,
        "labels": list(labels),
        "thresholds": [float(t) for t in thresholds],
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                   "threshold": float(thresholds[i])}
            for i, name in enumerate(labels)
        },
    }
    if logits is not None and len(y):
        import torch

        out["loss"] = float(loss(torch.from_numpy(np.asarray(logits)), torch.from_numpy(y), None))
    return out


def score_logits(logits: np.ndarray, y_true: np.ndarray, labels: Sequence[str],
                 fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of ``logits`` with a run's fitted settings (``fit_after_training``'s entries), or, during
    training, with thresholds tuned on these very rows (raw sigmoid): the selection score."""
    if fitted is None:
        probs = sigmoid_proba(logits)
        thresholds = (sigmoid_proba(tune_cuts(logits, y_true)[0]) if np.asarray(y_true).any()
                      else np.full(len(labels), 0.5))
    else:
        probs = sigmoid_proba(logits, platt_of(fitted))
        thresholds = np.asarray(fitted["multi_label"]["thresholds"])
    return report(y_true, probs, thresholds, labels, True, logits)


def format_report(rep: dict[str, Any]) -> str:
    """``vdcnn eval``'s table for a multi-label report."""
    labels = rep["labels"]
    width = max(12, *(len(x) for x in labels))
    lines = [
        f"examples         {rep['n']}",
        f"micro-F1         {rep['micro_f1'] * 100:.2f} %  (precision {rep['micro_precision'] * 100:.2f} %, "
        f"recall {rep['micro_recall'] * 100:.2f} %)",
        f"macro-F1         {rep['macro_f1'] * 100:.2f} %",
        f"samples-F1       {rep['samples_f1'] * 100:.2f} %",
        f"subset accuracy  {rep['accuracy'] * 100:.2f} %  (every label of the text right)",
        f"Hamming loss     {rep['hamming_loss']:.4f}",
        f"labels a text    {rep['labels_per_text']:.2f} predicted",
        "",
        f"{'label':<{width}}  precision  recall     f1  support  threshold",
    ]
    for name in labels:
        c = rep["per_class"][name]
        lines.append(f"{name:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}"
                     f"  {c['threshold']:9.3f}")
    return "\n".join(lines)


def calibration_report(classifier: Any, raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray
                       ) -> dict[str, Any]:
    """ECE over every (text, label) probability, raw sigmoid and calibrated."""
    members = getattr(classifier, "members", [classifier])
    return {"method": "platt per label", "calibrated": any(getattr(m, "platt", None) is not None for m in members),
            "bins": ECE_BINS, "ece_before": binary_ece(raw, labels), "ece_after": binary_ece(calibrated, labels)}


def format_calibration_report(rep: dict[str, Any]) -> str:
    head = f"calibration ({rep['bins']}-bin expected calibration error of every (text, label) probability)"
    if not rep["calibrated"]:
        return f"{head}\nECE       {rep['ece_before']:.4f} (not calibrated: raw sigmoid)"
    return f"{head}\nECE       {rep['ece_before']:.4f} raw, {rep['ece_after']:.4f} calibrated (per-label Platt)"


def format_predictions(probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray, top_k: int | None,
                       fmt: str, at_least_one: bool = True) -> list[str]:
    """Output lines of ``vdcnn predict`` on a multi-label model: every label at or above its threshold,
    most probable first (at most ``top_k``; the top label when none passes), as ``label<TAB>prob`` pairs
    or a JSON object with ``labels`` and every probability."""
    import json

    chosen = decide(probs, thresholds, at_least_one)
    lines = []
    for p, row in zip(probs, chosen):
        idx = [int(j) for j in np.argsort(-p, kind="stable") if row[j]][: top_k or None]
        if fmt == "jsonl":
            obj = {"labels": [labels[j] for j in idx], "scores": [round(float(p[j]), 6) for j in idx],
                   "probabilities": {name: round(float(v), 6) for name, v in zip(labels, p)}}
            lines.append(json.dumps(obj, ensure_ascii=False))
        else:
            lines.append("\t".join(f"{labels[j]}\t{p[j]:.4f}" for j in idx))
    return lines

