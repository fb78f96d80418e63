"""The models users pick instead of vdcnn, fitted on one split of a dataset and scored on its test split.

Used by ``benchmarks/dataset_table.py``; also a script (prints the peers of one dataset):

    VDCNN_DATA_DIR=../shared/data python benchmarks/peers.py trec6

- TF-IDF + logistic regression (the toolkit's own baseline features), C chosen on validation.
- fastText (``fasttext-numpy2-wheel``, optional): defaults; word bigrams with 25 epochs; and
  ``-autotune-validation`` on the same validation split for 60 s. Skipped, with the reason, when
  the package is not installed.

Every peer is fitted on the training rows vdcnn trains on, chosen on the validation rows vdcnn
chooses on, and returns its test predictions, so a paired test (McNemar) can compare them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vdcnn.baseline import spaced_script  # noqa: E402
from vdcnn.evaluate import classification_report  # noqa: E402

C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0)


def score(labels: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, float]:
    report = classification_report(np.asarray(labels), np.asarray(pred), names)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def tfidf_lr(splits: Any, metric: str) -> dict[str, Any]:
    """TF-IDF (the baseline's features) + logistic regression, C chosen on validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    names = splits.label_names
    if spaced_script(splits.train.texts):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
    else:
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    x_train = vec.fit_transform(splits.train.texts)
    x_val, x_test = vec.transform(splits.val.texts), vec.transform(splits.test.texts)
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000, random_state=0).fit(x_train, splits.train.labels)
        val = score(splits.val.labels, model.predict(x_val), names)[metric]
        if best is None or val > best[0]:
            best = (val, c, model)
    assert best is not None
    pred = best[2].predict(x_test)
    return {"name": f"TF-IDF+LR (C={best[1]:g})", "val": best[0], "pred": pred,
            **score(splits.test.labels, pred, names)}


def fasttext_available() -> str | None:
    """None when fastText can be imported, else the reason it cannot."""
    try:
        import fasttext  # noqa: F401
    except ImportError as exc:
        return f"fastText not installed ({exc}); pip install fasttext-numpy2-wheel"
    return None


def _ft_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def fasttext_peers(splits: Any, metric: str, autotune_s: int = 60) -> list[dict[str, Any]]:
    """fastText with defaults, with word bigrams (25 epochs), and autotuned on validation."""
    import fasttext

    names = splits.label_names
    spaced = spaced_script(splits.train.texts)
    # Text without spaces gets a space between characters: fastText's tokens are space-separated.
    prep: Callable[[str], str] = _ft_line if spaced else (lambda t: " ".join(_ft_line(t).replace(" ", "")))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        def write(name: str, texts: list[str], labels: np.ndarray) -> str:
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                for t, y in zip(texts, labels):
                    f.write(f"__label__{int(y)} {prep(t)}\n")
            return path

        train = write("train.txt", splits.train.texts, splits.train.labels)
        val = write("val.txt", splits.val.texts, splits.val.labels)
        variants: list[tuple[str, dict[str, Any]]] = [
            ("fastText (defaults)", {}),
            ("fastText (bigrams, 25 epochs)", {"wordNgrams": 2, "epoch": 25}),
            (f"fastText (autotuned {autotune_s} s)", {"autotuneValidationFile": val, "autotuneDuration": autotune_s}),
        ]
        for name, kw in variants:
            model = _train_fasttext(fasttext, train, kw)
            if model is None:
                out.append({"name": name + " [diverged 8 times]", "val": float("nan"), "pred": None,
                            "accuracy": float("nan"), "macro_f1": float("nan")})
                continue

            def predict(texts: list[str]) -> np.ndarray:
                labels, _ = model.predict([prep(t) for t in texts], k=1)
                return np.array([int(ls[0].replace("__label__", "")) if ls else 0 for ls in labels])

            val_score = score(splits.val.labels, predict(splits.val.texts), names)[metric]
            pred = predict(splits.test.texts)
            out.append({"name": name, "val": val_score, "pred": pred, **score(splits.test.labels, pred, names)})
    return out


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Send the process's own stdout and stderr (file descriptors 1 and 2) to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _train_fasttext(fasttext: Any, train: str, kw: dict[str, Any]) -> Any | None:
    """fastText's trainer with its own defaults. It raises "Encountered NaN" now and then (its
    updates are lock-free across threads; here also whenever lr is passed explicitly, a quirk of
    the fasttext-numpy2-wheel binding; more often on a busy CPU, where one thread lags and the
    learning rate, computed from the progress of all, turns negative): tried again, on 2 and 1
    threads in turn, at most 8 times; None when every try diverged."""
    for attempt in range(8):
        try:
            with _silenced():  # autotune prints its progress from C++ whatever verbose says
                return fasttext.train_supervised(input=train, thread=2 - attempt % 2, verbose=0, **kw)
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
    return None


def mcnemar(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test of two classifiers on the same rows: (a right & b wrong, a wrong & b right, p)."""
    from scipy.stats import binomtest

    right_a, right_b = a == labels, b == labels
    n01 = int(np.sum(right_a & ~right_b))
    n10 = int(np.sum(~right_a & right_b))
    p = 1.0 if n01 + n10 == 0 else float(binomtest(n01, n01 + n10, 0.5).pvalue)
    return n01, n10, p


def main() -> None:
    from vdcnn.data import load_splits

    name = sys.argv[1]
    splits = load_splits(str(Path(os.environ["VDCNN_DATA_DIR"]) / name), seed=0)
    metric = "macro_f1" if name == "sms_spam" else "accuracy"
    rows = [tfidf_lr(splits, metric)]
    reason = fasttext_available()
    rows += fasttext_peers(splits, metric) if reason is None else []
    for r in rows:
        print(f"{r['name']:<34} val {r['val'] * 100:6.2f}  test acc {r['accuracy'] * 100:6.2f}  "
              f"macro-F1 {r['macro_f1'] * 100:6.2f}")
    if reason:
        print(reason)


if __name__ == "__main__":
    main()
