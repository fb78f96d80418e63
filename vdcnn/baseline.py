"""The reference every text classifier should beat: TF-IDF n-grams + logistic regression.

``fit_baseline(train)`` trains it (scikit-learn) on exactly the rows vdcnn trains on;
``evaluate_baseline`` scores it on a split with the same report as ``vdcnn eval``. Word 1-2-grams
for text written with spaces, character 1-3-grams for scripts that do not separate words
(Chinese, Japanese, Thai...), C=4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .evaluate import classification_report

__all__ = ["Baseline", "fit_baseline", "evaluate_baseline", "spaced_script", "BASELINE_NAME"]

BASELINE_NAME = "TF-IDF+LR"


def spaced_script(texts: Sequence[str], sample: int = 2000) -> bool:
    """Whether words are separated by spaces (mean word length under 12 characters)."""
    step = max(1, len(texts) // sample)
    words = chars = 0
    for t in texts[::step]:
        parts = t.split()
        words += len(parts)
        chars += sum(len(p) for p in parts)
    return words > 0 and chars / words < 12


@dataclass
class Baseline:
    """A fitted TF-IDF + logistic-regression pipeline and what it was fitted with."""

    pipeline: Any
    analyzer: str  # "word 1-2-grams" or "char 1-3-grams"
    fit_seconds: float

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict_proba(list(texts))


def fit_baseline(texts: Sequence[str], labels: np.ndarray, n_classes: int, C: float = 4.0, seed: int = 0) -> Baseline:
    """TF-IDF (sublinear tf, min_df 2) + multinomial logistic regression on ``texts``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    if spaced_script(texts):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
        analyzer = "word 1-2-grams"
    else:
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
        analyzer = "char 1-3-grams"
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    if np.asarray(labels).ndim == 2:  # multi-label: one binary logistic regression per label
        from sklearn.multiclass import OneVsRestClassifier

        pipeline = make_pipeline(vectorizer, OneVsRestClassifier(model))
        pipeline.fit(list(texts), np.asarray(labels))
        return Baseline(pipeline, analyzer + ", one-vs-rest", time.perf_counter() - started)
    pipeline = make_pipeline(vectorizer, model)
    pipeline.fit(list(texts), np.asarray(labels))
    # Classes absent from training get probability 0, so columns line up with label indices.
    return Baseline(_AllClasses(pipeline, n_classes), analyzer, time.perf_counter() - started)


class _AllClasses:
    """Wraps a fitted pipeline so ``predict_proba`` has one column per label index."""

    def __init__(self, pipeline: Any, n_classes: int) -> None:
        self.pipeline, self.n_classes = pipeline, n_classes

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        proba = self.pipeline.predict_proba(texts)
        out = np.zeros((len(texts), self.n_classes), dtype=np.float64)
        out[:, self.pipeline.classes_] = proba
        return out


def evaluate_baseline(baseline: Baseline, texts: Sequence[str], labels: np.ndarray,
                      label_names: list[str]) -> dict[str, Any]:
    """The same report as ``vdcnn eval`` (accuracy, macro-F1, per class) for the baseline."""
    proba = baseline.predict_proba(texts)
    return classification_report(np.asarray(labels), proba.argmax(1), label_names, np.log(np.clip(proba, 1e-12, 1)))


def run_baseline(cfg: Any, log: Any = None) -> dict[str, Any]:
    """Fit the baseline on the training rows of ``cfg``'s split (validation held out, same seed)
    and score it on validation and test; returns ``{"analyzer", "fit_s", "val", "test"}``."""
    from .data import load_run_splits  # the same split, read by the same code as training

    splits = load_run_splits(cfg)
    names = splits.label_names
    baseline = fit_baseline(splits.train.texts, splits.train.labels, len(names), seed=cfg.train.seed)
    result: dict[str, Any] = {"name": BASELINE_NAME, "analyzer": baseline.analyzer,
                              "fit_s": round(baseline.fit_seconds, 1), "train_rows": len(splits.train),
                              "val": None, "test": None, "test_source": None}
    if splits.train.multi_label:
        return _multilabel_baseline(baseline, splits, result)
    if len(splits.val):
        result["val"] = _scores(evaluate_baseline(baseline, splits.val.texts, splits.val.labels, names))
    if splits.test is not None:
        result["test"] = _scores(evaluate_baseline(baseline, splits.test.texts, splits.test.labels, names))
        result["test_source"] = splits.test.source
    return result


def _multilabel_baseline(baseline: Baseline, splits: Any, result: dict[str, Any]) -> dict[str, Any]:
    """One-vs-rest scores at per-label thresholds tuned on validation as vdcnn tunes its own
    (the global micro-F1 threshold for labels with few positives; 0.5 without validation)."""
    from .multilabel import report, tune_thresholds

    names = splits.label_names
    thresholds = np.full(len(names), 0.5)
    if len(splits.val):
        probs = baseline.predict_proba(splits.val.texts)
        thresholds = tune_thresholds(probs, splits.val.labels)[0]
        result["val"] = _ml_scores(report(splits.val.labels, probs, thresholds, names))
    if splits.test is not None:
        probs = baseline.predict_proba(splits.test.texts)
        result["test"] = _ml_scores(report(splits.test.labels, probs, thresholds, names))
        result["test_source"] = splits.test.source
    result["thresholds"] = [round(float(t), 6) for t in thresholds]
    return result


def _ml_scores(rep: dict[str, Any]) -> dict[str, Any]:
    return {"micro_f1": rep["micro_f1"], "macro_f1": rep["macro_f1"], "samples_f1": rep["samples_f1"],
            "accuracy": rep["accuracy"], "n": rep["n"], "recall": {k: v["recall"] for k, v in rep["per_class"].items()}}


def _scores(report: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n": report["n"],
            "recall": {k: v["recall"] for k, v in report["per_class"].items()}}


def baseline_for_run(run_dir: Any) -> tuple[dict[str, Any], str]:
    """Fit the baseline on the run's own split, store it in the run's config.json results, and
    return it with a one-line comparison such as ``vdcnn 89.40 % vs TF-IDF+LR 90.16 % ...``."""
    from pathlib import Path

    from . import checkpoint as ckpt
    from .config import RunConfig

    run_dir = Path(run_dir)
    meta = ckpt.read_config(run_dir)
    cfg = RunConfig.from_dict(meta.get("run", {}), source=str(run_dir / ckpt.CONFIG_FILE))
    result = run_baseline(cfg)
    meta = ckpt.read_config(run_dir)  # re-read: nothing else may be lost
    meta.setdefault("results", {})["baseline"] = result
    ckpt.write_json(run_dir / ckpt.CONFIG_FILE, meta)
    return result, comparison_line(meta.get("results", {}), result)


def comparison_line(results: dict[str, Any], baseline: dict[str, Any]) -> str:
    """``vdcnn A % vs TF-IDF+LR B % on the same test split (macro-F1 a vs b)``."""
    if "test_micro_f1" in results or "best_val_micro_f1" in results:  # multi-label
        return _multilabel_line(results, baseline)
    split, ours = "test", results.get("test_acc")
    theirs = (baseline.get("test") or {})
    if ours is None or not theirs:
        ours = results.get("val_acc") if results.get("val_acc") is not None else results.get("best_val_acc")
        split, theirs = "validation", baseline.get("val") or {}
    if ours is None or not theirs:
        return f"{BASELINE_NAME}: no test or validation split to compare on"
    f1 = results.get("test_macro_f1") if split == "test" else results.get("best_val_macro_f1")
    line = (f"vdcnn {ours * 100:.2f} % vs {BASELINE_NAME} {theirs['accuracy'] * 100:.2f} % accuracy on the same "
            f"{split} split")
    if f1 is not None:
        line += f" (macro-F1 {f1 * 100:.2f} vs {theirs['macro_f1'] * 100:.2f})"
    return line + f"; {BASELINE_NAME} ({baseline['analyzer']}) fitted in {baseline['fit_s']:.0f} s"


def _multilabel_line(results: dict[str, Any], baseline: dict[str, Any]) -> str:
    """``vdcnn micro-F1 A vs TF-IDF+LR B on the same test split (macro-F1 a vs b)`` for multi-label runs."""
    split, ours, theirs = "test", results.get("test_micro_f1"), baseline.get("test") or {}
    f1 = results.get("test_macro_f1")
    if ours is None or not theirs:
        split, ours, theirs = "validation", results.get("best_val_micro_f1"), baseline.get("val") or {}
        f1 = results.get("best_val_macro_f1")
    if ours is None or not theirs:
        return f"{BASELINE_NAME}: no test or validation split to compare on"
    return (f"vdcnn micro-F1 {ours * 100:.2f} vs {BASELINE_NAME} {theirs['micro_f1'] * 100:.2f} on the same {split} "
            f"split (macro-F1 {f1 * 100:.2f} vs {theirs['macro_f1'] * 100:.2f}); {BASELINE_NAME} "
            f"({baseline['analyzer']}, thresholds tuned on validation) fitted in {baseline['fit_s']:.0f} s")
