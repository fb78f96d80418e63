"""The linear path: a regularised logistic regression on the model's own hashed n-grams, fitted
after training and weighted against the network on validation.

On a few thousand short texts a bag of n-grams with a well-chosen penalty (TF-IDF + logistic
regression) is hard to beat, and a network trained by SGD on the same rows overfits before it
gets there. So a run under the automatic recipe fits that model too, on the same ids the network
reads and inside it (``vdcnn.ngrams.LinearNgrams``): features are TF-IDF vectors of the hashed
n-gram buckets of the encoder's ids (the n-gram path's hash), with TF-IDF's sublinear term
frequency (1 + log count) or raw counts, whichever validation prefers, and the l2 norm, which is
exactly what the model computes, so the fitted weights load into the network and export with it
(ONNX, TorchScript).
The penalty ``C`` is chosen on the validation split by the run's own selection metric; the path's
weight against the network by the validation NLL of the sum (at its fitted temperature; multi-label
runs: by the selection metric), and a weight of 0 (no linear path) is kept unless the sum beats
the network alone there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .model_config import LINEAR_TF

__all__ = ["LinearFit", "Regression", "hashed_counts", "term_frequencies", "fit_linear_path", "fit_regression", "blend", "orders_for", "selection_score", "BLEND_WEIGHTS",
           "inverse_frequencies", "penalty_search_rows", "BUCKETS", "PENALTIES", "PENALTY_RANGE"]

PENALTIES = (4.0, 16.0, 64.0, 256.0)  # inverse regularisation strengths tried on validation first
PENALTY_RANGE = (0.25, 4096.0)  # past the grid's ends the search goes on (x4, /4) while an end wins, within these
BLEND_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # the linear path's logits, times this, added to the network's;
# 64 is the path all but alone (SST-2's validation NLL still fell at 16: 0.4646 network alone, 0.4246 at 16)
BUCKETS = 2 ** 18
SEARCH_ENTRIES = 2_000_000  # n-gram entries of training rows the penalty search fits on (time ~ entries)


def orders_for(encoder_name: str) -> tuple[int, ...]:
    """N-gram orders of the path: word-piece 1-3-grams for subwords (TF-IDF's word n-grams);
    character 1-5-grams for characters; byte 1-6-grams for bytes (two characters of most scripts
    outside ASCII)."""
    return {"subword": (1, 2, 3), "char": (1, 2, 3, 4, 5)}.get(encoder_name, (1, 2, 3, 4, 5, 6))


def selection_score(select_by: str, multi_label: bool = False) -> Callable[[np.ndarray, np.ndarray], float]:
    """The run's validation score as ``score(labels, logits)``: accuracy or macro-F1 of the top class;
    for multi-label data micro- (or macro-) F1 at per-label cuts tuned on these same rows' logits (as
    the run tunes thresholds after training), so candidates are compared as they would be used."""
    from sklearn.metrics import f1_score

    if multi_label:
        from .multilabel import f1_at_tuned_cuts

        key = "macro_f1" if select_by == "macro_f1" else "micro_f1"
        return lambda y, z: f1_at_tuned_cuts(z, y)[key]
    if select_by == "macro_f1":
        return lambda y, z: float(f1_score(y, np.asarray(z).argmax(1), average="macro"))
    return lambda y, z: float(np.mean(np.asarray(y) == np.asarray(z).argmax(1)))


@dataclass
class LinearFit:
    """The fitted path: ``weight`` (buckets, classes) and ``bias`` ready for ``LinearNgrams``, already
    multiplied by the blend weight; ``report`` is what ``config.json`` records."""

    weight: np.ndarray | None
    bias: np.ndarray | None
    idf: np.ndarray | None
    orders: tuple[int, ...]
    buckets: int
    report: dict[str, Any] = field(default_factory=dict)
    tf: str = "log"

    @property
    def kept(self) -> bool:
        return self.weight is not None

    def logits(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The path's logits as the model computes them (numpy), for checks and reports."""
        assert self.weight is not None and self.idf is not None and self.bias is not None
        tf = term_frequencies(hashed_counts(ids, lengths, self.orders, self.buckets), self.tf)
        return (np.asarray(tf @ self.weight.astype(np.float64)) / _norms(tf, self.idf, self.tf)[:, None]
                + self.bias[None, :])


def hashed_counts(ids: np.ndarray, lengths: np.ndarray, orders: Sequence[int], buckets: int) -> Any:
    """Sparse ``(texts, buckets)`` counts of each text's hashed n-grams (scipy CSR), from the model's own
    ``vdcnn.ngrams.hash_ngrams``: the regression is fitted on exactly the buckets the model looks up."""
    import scipy.sparse as sp
    import torch

    from .ngrams import hash_ngrams

    ids = np.asarray(ids, dtype=np.int64)
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), ids.shape[1])
    hashed, mask = hash_ngrams(torch.from_numpy(ids), torch.from_numpy(lengths), tuple(orders), buckets)
    rows, cols = np.nonzero(mask.numpy())
    counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, hashed.numpy()[rows, cols])),
                           shape=(len(ids), buckets))
    counts.sum_duplicates()
    return counts


def term_frequencies(counts: Any, tf: str) -> Any:
    """Each text's term frequency per bucket: 1 + log(count) for ``"log"`` (TF-IDF's sublinear tf),
    the counts themselves for ``"count"``."""
    if tf == "count":
        return counts
    out = counts.copy()
    out.data = 1.0 + np.log(out.data)
    return out


def _norms(tf: Any, idf: np.ndarray, kind: str) -> np.ndarray:
    """``LinearNgrams``' divisor: the l2 norm of the TF-IDF vector (``"log"``), or the root of the summed
    squared idf of every n-gram occurrence (``"count"``, computable per position)."""
    idf = np.asarray(idf, dtype=np.float64)
    squares = tf.multiply(tf) @ idf ** 2 if kind == "log" else tf @ idf ** 2
    return np.sqrt(np.maximum(np.asarray(squares).ravel(), 1e-12))


def _features(tf: Any, idf: np.ndarray, kind: str) -> Any:
    """What ``LinearNgrams`` sums: idf-weighted term frequencies over ``_norms``."""
    import scipy.sparse as sp

    return sp.diags(1.0 / _norms(tf, idf, kind)) @ tf @ sp.diags(idf)


@dataclass
class _Regression:
    """A fitted multinomial logistic regression: ``coef`` (features, classes) and ``bias`` over ``classes``."""

    coef: np.ndarray
    bias: np.ndarray
    classes: np.ndarray
    rows: tuple[Any, np.ndarray] | None = None  # (factor, U) of a fit solved in the row space, for warm starts

    def logits(self, x: Any, n_classes: int) -> np.ndarray:
        """(rows, n_classes) logits; classes absent from the training rows get -1e4."""
        out = np.full((x.shape[0], n_classes), -1e4)
        out[:, self.classes] = np.asarray(x @ self.coef) + self.bias
        return out


def _regression(x: Any, xt: Any, labels: np.ndarray, C: float, start: _Regression | None = None,
                max_iter: int = 100, factor: np.ndarray | None = None) -> _Regression:
    """Multinomial logistic regression (one sigmoid per label for 2-D 0/1 labels), ``sum(cross-entropy) + |W|^2 / (2C)`` (scikit-learn's objective
    divided by C; bias not penalised), by L-BFGS with both ``x`` and its transpose ``xt`` in CSR
    (scikit-learn's own fit multiplies by a CSC transpose, ten times slower here).

    With ``factor`` (``row_factor(x)``: the penalty search, where there are far fewer rows than
    features and one factor serves every fit), the same problem is solved in the row space of ``x``:
    the iterates' weights are ``x.T @ A`` for some ``A`` (rows, classes), and with
    ``x @ x.T = L @ L.T`` the objective in ``U = L.T @ A`` is a
    regression on the dense rows of ``L`` with the same penalty ``|U|^2``, an isometry of the original:
    the same optimum, the same steps, with rows x classes unknowns instead of features x classes
    (20 Newsgroups' penalty search: 1,822 rows against 262k buckets, 4 s a fit instead of 68). A warm
    ``start`` carries over only from a fit on the same ``factor`` (the penalty path). Should the
    weights not reproduce the row-space logits (rows repeating each other beyond the jitter), the
    fit is done again in the feature space."""
    from scipy.optimize import minimize

    n, d = x.shape
    multi = labels.ndim == 2  # one 0/1 column per label: independent sigmoids (one-vs-rest)
    if multi:
        classes = np.arange(labels.shape[1])
        onehot = labels.astype(np.float64)
    else:
        classes, y = np.unique(labels, return_inverse=True)
        onehot = np.zeros((n, len(classes)))
        onehot[np.arange(n), y] = 1.0
    k = len(classes)
    if factor is not None:
        dims, design, design_t = n, factor, np.ascontiguousarray(factor.T)
        begin = start.rows[1] if start is not None and start.rows is not None and start.rows[0] is factor else None
    else:
        dims, design, design_t = d, x, xt
        begin = start.coef if start is not None and len(start.classes) == k and start.coef.shape[0] == d else None

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:dims * k].reshape(dims, k), theta[dims * k:]
        z = np.asarray(design @ w) + b
        if multi:
            data = float((np.logaddexp(0.0, z) - onehot * z).sum())
            g = 1.0 / (1.0 + np.exp(-z)) - onehot
        else:
            z -= z.max(1, keepdims=True)
            lse = np.log(np.exp(z).sum(1))
            data = float(lse.sum() - (z * onehot).sum())
            g = np.exp(z - lse[:, None]) - onehot
        loss = data + float((w * w).sum()) / (2 * C)
        return loss, np.concatenate([(np.asarray(design_t @ g) + w / C).ravel(), g.sum(0)])

    theta = (np.concatenate([begin.ravel(), start.bias]) if begin is not None and start is not None
             else np.zeros(dims * k + k))
    result = minimize(loss_and_grad, theta, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    coef, bias = result.x[:dims * k].reshape(dims, k), result.x[dims * k:]
    if factor is None:
        return _Regression(coef, bias, classes)
    from scipy.linalg import solve_triangular

    weights = np.asarray(xt @ solve_triangular(factor.T, coef, lower=False))  # W = x.T @ A, A = L^-T @ U
    if not np.allclose(np.asarray(x @ weights), factor @ coef, rtol=1e-3, atol=1e-2):
        # rows too close to repeating each other for the factor: the problem as it was posed
        return _regression(x, xt, labels, C, None, max_iter)
    return _Regression(weights, bias, classes, (factor, coef))


ROW_SPACE_ROWS = 8_000  # up to here (and below half the features) the penalty search runs in the row space


def _in_row_space(x: Any, k: int) -> bool:
    """Whether fits on ``x`` with ``k`` classes are cheaper in its row space: a pass over the dense
    factor (rows^2 numbers, twice an evaluation) against L-BFGS's work on features x classes unknowns
    (measured here: about ten times a number's cost per unknown). TREC-6's 4,906 questions stay over
    their 71k buckets; 20 Newsgroups' 1,822 posts of the search go to the row space."""
    n, d = x.shape
    return 0 < n <= ROW_SPACE_ROWS and n * n < 10 * d * k


def row_factor(x: Any) -> np.ndarray:
    """Lower-triangular ``L`` with ``L @ L.T = x @ x.T + eps I`` (Cholesky of the rows' Gram matrix). The
    jitter ``eps``, 1e-6 of the mean diagonal, keeps repeated texts factorable: it acts as one private
    feature per training row of value 1e-3, which moves a training logit by at most ``eps * C``."""
    gram = np.asarray((x @ x.T).toarray(), dtype=np.float64)
    jitter = 1e-6 * max(float(np.trace(gram)) / max(len(gram), 1), 1e-12)
    gram[np.diag_indices_from(gram)] += jitter
    return np.linalg.cholesky(gram)


def _blend_weight(blends: dict[float, float], net_score: float, val_logits: np.ndarray, logits: np.ndarray,
                  val_labels: np.ndarray, classes: np.ndarray) -> tuple[float, bool, dict[float, float]]:
    """The path's weight against the network, whether to add it at all, and the validation losses.

    Single-label: by the validation NLL of ``network + weight * path`` at its own fitted temperature
    (``calibration.calibrated_nll``; rows whose class no training row has are left out, the path
    never predicts them). On a few hundred validation rows the argmax score of one weight against
    another is a coin flip that usually drops the path (TREC-6: the network alone 86.95 % macro-F1,
    the best sum 86.69 %) though the sum is far more likely (NLL 0.386 alone, 0.351 at weight 0.5)
    and better on test (87.2 % alone, 89.2 %). Multi-label: by ``score`` (F1 at tuned cuts)."""
    if val_labels.ndim == 2:
        weight = max(blends, key=lambda w: (blends[w], -w))
        return weight, blends[weight] > net_score, {}
    from .calibration import calibrated_nll

    rows = np.isin(val_labels, classes)
    y = val_labels[rows]
    # Divided by 1 + w: the same NLL at the fitted temperature, with that temperature kept inside its bounds.
    losses = {w: calibrated_nll((val_logits[rows] + w * logits[rows]) / (1 + w), y) for w in (0.0, *BLEND_WEIGHTS)}
    weight = min(BLEND_WEIGHTS, key=lambda w: (losses[w], w))
    return weight, losses[weight] < losses[0.0], losses


def inverse_frequencies(train_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's smoothed idf of every bucket over the training texts' counts, and the buckets those
    texts fill (the only ones the regression sees)."""
    df = np.bincount(train_counts.indices, minlength=train_counts.shape[1])
    return np.log((1 + train_counts.shape[0]) / (1 + df)) + 1.0, np.flatnonzero(df)


def penalty_search_rows(x_train: Any, seed: int) -> np.ndarray:
    """The training rows the penalty search fits on: all of them, or a seeded draw of about
    ``SEARCH_ENTRIES`` n-gram entries' worth."""
    n = x_train.shape[0]
    if x_train.nnz <= SEARCH_ENTRIES:
        return np.arange(n)
    keep = SEARCH_ENTRIES / x_train.nnz
    return np.sort(np.random.default_rng(seed).permutation(n)[:max(1, int(keep * n))])


@dataclass
class Regression:
    """The path's regression fitted on the training rows, its penalty and term frequency chosen on
    validation (``fit_regression``); ``blend`` then weighs it against a network."""

    model: _Regression
    idf: np.ndarray
    used: np.ndarray  # the buckets the training texts fill (the regression's features)
    val_logits: np.ndarray  # the path's logits on the validation rows
    n_classes: int
    orders: tuple[int, ...]
    buckets: int
    report: dict[str, Any]
    tf: str


def fit_regression(train_ids: np.ndarray, train_lengths: np.ndarray, train_labels: np.ndarray,
                   val_ids: np.ndarray, val_lengths: np.ndarray, val_labels: np.ndarray, n_classes: int,
                   orders: Sequence[int], buckets: int, score: Callable[[np.ndarray, np.ndarray], float],
                   seed: int = 0, tf: str | None = None) -> Regression:
    """The logistic regression on the training rows, its penalty and term frequency chosen by
    ``score(labels, logits)`` on validation (``selection_score``). It needs no network, so a run fits
    it before training one, inside its time budget. The penalty is searched on up to
    ``SEARCH_ENTRIES`` n-gram entries of training rows (all of them on small data), then the chosen
    one is fitted on every row. The term frequency (``model_config.LINEAR_TF``) is chosen at the chosen
    penalty, unless ``tf`` fixes it (or no n-gram repeats within a training text, where they all read the same)."""
    started = time.perf_counter()
    orders = tuple(int(n) for n in orders)
    train_counts = hashed_counts(train_ids, train_lengths, orders, buckets)
    val_counts = hashed_counts(val_ids, val_lengths, orders, buckets)
    idf, used = inverse_frequencies(train_counts)
    kinds = (tf,) if tf else LINEAR_TF
    if train_counts.data.max(initial=0) <= 1:
        kinds = kinds[:1]

    def design(kind: str) -> tuple[Any, Any]:
        return tuple(_features(term_frequencies(c, kind), idf, kind)[:, used].tocsr()  # type: ignore[return-value]
                     for c in (train_counts, val_counts))

    x_train, x_val = design(kinds[0])
    train_labels = np.asarray(train_labels)
    val_labels = np.asarray(val_labels)

    search_rows = penalty_search_rows(x_train, seed)
    x_search, y_search = x_train[search_rows], train_labels[search_rows]
    xt_search = x_search.T.tocsr()
    classes = y_search.shape[1] if y_search.ndim == 2 else len(np.unique(y_search))
    factor = row_factor(x_search) if _in_row_space(x_search, classes) else None  # one factor for the penalty path
    tried: list[dict[str, Any]] = []
    fits: dict[float, _Regression] = {}

    def attempt(C: float, start: _Regression | None) -> _Regression:
        fit = fits[C] = _regression(x_search, xt_search, y_search, C, start, factor=factor)
        tried.append({"C": C, "alone": round(score(val_labels, fit.logits(x_val, n_classes)), 5)})
        for other in set(fits) - {best(), min(fits), max(fits)}:  # only these are needed again (the result, warm starts)
            del fits[other]
        return fit

    def best() -> float:
        return max(tried, key=lambda r: (r["alone"], -r["C"]))["C"]

    previous = None
    for C in PENALTIES:  # warm-started along the path: each fit starts from the last one
        previous = attempt(C, previous)
    while True:  # an end of the grid won: the best penalty may lie beyond it
        C, low, high = best(), min(fits), max(fits)
        if C == high and high * 4 <= PENALTY_RANGE[1]:
            attempt(high * 4, fits[high])
        elif C == low and low / 4 >= PENALTY_RANGE[0]:
            attempt(low / 4, fits[low])
        else:
            break
    tried.sort(key=lambda r: r["C"])
    model, chosen = fits[C], kinds[0]
    tf_scores = {chosen: max(r["alone"] for r in tried)}
    for kind in kinds[1:]:  # the other term frequencies, at the chosen penalty
        other_train, other_val = design(kind)
        other_search = other_train[search_rows]
        other = _regression(other_search, other_search.T.tocsr(), y_search, C, model,
                            factor=row_factor(other_search) if factor is not None else None)
        tf_scores[kind] = round(score(val_labels, other.logits(other_val, n_classes)), 5)
        if tf_scores[kind] > tf_scores[chosen]:
            model, chosen, x_train, x_val = other, kind, other_train, other_val
    if len(search_rows) < len(train_labels):
        model = _regression(x_train, x_train.T.tocsr(), train_labels, C, model)
    logits = model.logits(x_val, n_classes)
    report = {"orders": list(orders), "buckets": buckets, "tf": chosen, "tf_tried": tf_scores, "C": C,
              "val_linear": round(score(val_labels, logits), 5), "tried": tried,
              "search_rows": int(len(search_rows)), "fit_seconds": round(time.perf_counter() - started, 1)}
    return Regression(model, idf, used, logits, n_classes, orders, buckets, report, chosen)


def blend(regression: Regression, val_logits: np.ndarray, val_labels: np.ndarray,
          score: Callable[[np.ndarray, np.ndarray], float]) -> LinearFit:
    """The path's weight against the network whose validation logits are ``val_logits`` (chosen on
    validation, ``_blend_weight``): the fit to load (``kept``), or one whose report says why there is none."""
    started = time.perf_counter()
    val_labels = np.asarray(val_labels)
    model, logits, n_classes = regression.model, regression.val_logits, regression.n_classes
    net_score = score(val_labels, val_logits)
    blends = {w: score(val_labels, val_logits + w * logits) for w in BLEND_WEIGHTS}
    weight, kept, losses = _blend_weight(blends, net_score, val_logits, logits, val_labels, model.classes)
    report = {**regression.report, "weight": weight, "best_weight": weight, "blend_by": "nll" if losses else "score",
              "val_network": round(net_score, 5), "val_together": round(blends[weight], 5),
              "blends": {f"{w:g}": round(v, 5) for w, v in blends.items()},
              "fit_seconds": round(regression.report["fit_seconds"] + time.perf_counter() - started, 1)}
    if losses:
        report["blend_nll"] = {("network" if w == 0 else f"{w:g}"): round(v, 5) for w, v in losses.items()}
    orders, buckets, idf, used = regression.orders, regression.buckets, regression.idf, regression.used
    if not kept:
        report["weight"] = 0.0
        return LinearFit(None, None, None, orders, buckets, report, regression.tf)
    table = np.zeros((buckets, n_classes))
    table[np.ix_(used, model.classes)] = model.coef * idf[used, None] * weight  # idf and blend weight folded in
    bias = np.full(n_classes, -1e4)  # a class no training row has is never predicted by this path
    bias[model.classes] = model.bias
    return LinearFit(table.astype(np.float32), (bias * weight).astype(np.float32), idf.astype(np.float32), orders,
                     buckets, report, regression.tf)


def fit_linear_path(train_ids: np.ndarray, train_lengths: np.ndarray, train_labels: np.ndarray,
                    val_ids: np.ndarray, val_lengths: np.ndarray, val_labels: np.ndarray,
                    val_logits: np.ndarray, n_classes: int, orders: Sequence[int], buckets: int,
                    score: Callable[[np.ndarray, np.ndarray], float], seed: int = 0,
                    tf: str | None = None) -> LinearFit:
    """``fit_regression`` then ``blend`` against the network whose validation logits are ``val_logits``."""
    regression = fit_regression(train_ids, train_lengths, train_labels, val_ids, val_lengths, val_labels, n_classes,
                                orders, buckets, score, seed, tf)
    return blend(regression, val_logits, val_labels, score)
