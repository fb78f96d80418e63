"""The linear path's penalty search: one fit solved in the rows' space against the same fit over the buckets.

    VDCNN_DATA_DIR=../shared/data python benchmarks/regression_speed.py [--dataset 20newsgroups_bydate] [--C 16]

The search's training rows and features are built as ``vdcnn.linear_path.fit_regression`` builds them
(the automatic recipe's subword encoder and length, word-piece 1-3-grams, TF-IDF, at most
``SEARCH_ENTRIES`` n-gram entries of training rows); the same regression is then fitted both ways, timed,
and compared: seconds, objective, largest logit difference and label agreement on the validation rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from vdcnn import linear_path as lp
    from vdcnn.batching import encode_texts
    from vdcnn.data import load_splits
    from vdcnn.encoders import build_encoder
    from vdcnn.recipe import _subword_vocab, choose_max_length

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="20newsgroups_bydate")
    parser.add_argument("--C", type=float, default=16.0)
    args = parser.parse_args()
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root:
        sys.exit("set VDCNN_DATA_DIR to the folder of the real datasets (../shared/data)")
    splits = load_splits(str(Path(root) / args.dataset), seed=0)
    encoder = build_encoder("subword", splits.train.texts, _subword_vocab(len(splits.train)))
    sample = encode_texts(encoder, splits.train.texts, np.zeros(len(splits.train), dtype=np.int64), 1024,
                          use_cache=False)
    length = choose_max_length(sample.lengths)
    train, val = (encode_texts(encoder, part.texts, np.asarray(part.labels), length, use_cache=False)
                  for part in (splits.train, splits.val))
    orders = lp.orders_for("subword")
    counts = lp.hashed_counts(train.ids, train.lengths, orders, lp.BUCKETS)
    idf, used = lp.inverse_frequencies(counts)
    x = lp._features(lp.term_frequencies(counts, "log"), idf, "log")[:, used].tocsr()
    x_val = lp._features(lp.term_frequencies(lp.hashed_counts(val.ids, val.lengths, orders, lp.BUCKETS), "log"),
                         idf, "log")[:, used].tocsr()
    rows = lp.penalty_search_rows(x, seed=0)
    x, y = x[rows], np.asarray(splits.train.labels)[rows]
    xt = x.T.tocsr()
    k = y.shape[1] if y.ndim == 2 else len(np.unique(y))

    begun = time.perf_counter()
    factor = lp.row_factor(x)
    factor_s = time.perf_counter() - begun
    fitted = lp._regression(x, xt, y, args.C, factor=factor)
    rows_s = time.perf_counter() - begun
    begun = time.perf_counter()
    reference = lp._regression(x, xt, y, args.C)
    space_s = time.perf_counter() - begun

    def objective(fit: "lp._Regression") -> float:
        z = np.asarray(x @ fit.coef) + fit.bias
        penalty = float((fit.coef ** 2).sum()) / (2 * args.C)
        if y.ndim == 2:  # multi-label: one sigmoid per label
            return float((np.logaddexp(0.0, z) - y * z).sum()) + penalty
        z -= z.max(1, keepdims=True)
        classes = np.searchsorted(fit.classes, y)
        return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), classes]).sum()) + penalty

    z_rows = np.asarray(x_val @ fitted.coef) + fitted.bias
    z_space = np.asarray(x_val @ reference.coef) + reference.bias
    print(f"{args.dataset}: {x.shape[0]:,} search rows, {x.shape[1]:,} buckets in use, {k} classes, "
          f"{x.nnz:,} entries; C {args.C:g}; rows' space chosen by the run: {lp._in_row_space(x, k)}")
    print(f"{'fit':<40}{'seconds':>10}{'objective':>16}")
    print(f"{'over the buckets (reference)':<40}{space_s:>10.1f}{objective(reference):>16.4f}")
    print(f"{'in the rows space (factor included)':<40}{rows_s:>10.1f}{objective(fitted):>16.4f}")
    print(f"  of which the Cholesky factor: {factor_s:.1f} s; ratio {space_s / rows_s:.1f}x")
    print(f"validation ({len(z_rows):,} rows): largest logit difference {np.abs(z_rows - z_space).max():.2e}, "
          f"labels agree {np.mean(z_rows.argmax(1) == z_space.argmax(1)) * 100:.2f} %")


if __name__ == "__main__":
    main()
