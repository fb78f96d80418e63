"""Are explanations faithful? Deleting the top-scored characters must hurt more than random ones.

    VDCNN_DATA_DIR=../shared/data python benchmarks/explain_faithfulness.py --run runs/quick [--n 1000]

For ``--n`` AG News test texts (a seeded sample), each text is first cut to the part the model
reads (``max_length``), so a deletion never pulls unread text into view. Then 10 % of its
characters are deleted twice over: the highest-scored ones (each span's score shared by its
characters) and, as the reference, characters drawn at random (``--draws`` draws, averaged).
The figure is the drop of the predicted class's probability, averaged over texts; the ratio
top / random must be at least 2. Both attribution methods are measured: integrated gradients
(the default for run folders) and occlusion (the method for export bundles).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.data import load_split  # noqa: E402
from vdcnn.explain import METHODS, token_offsets  # noqa: E402
from vdcnn.predict import Classifier  # noqa: E402


def delete(text: str, positions: np.ndarray) -> str:
    drop = np.zeros(len(text), dtype=bool)
    drop[positions] = True
    return "".join(c for c, gone in zip(text, drop) if not gone)


def read_part(clf: Classifier, text: str) -> str:
    """The beginning of ``text`` that the model reads (all of it unless ``max_length`` cuts it)."""
    offsets, truncated = token_offsets(clf.encoder, text, clf.max_length)
    return text[: max((b for _, b in offsets), default=0)] if truncated else text


def deletion_effects(clf: Classifier, texts: list[str], char_scores: list[np.ndarray], targets: np.ndarray,
                     base: np.ndarray, fraction: float, draws: int, seed: int) -> dict[str, float]:
    """Mean probability drop and share of changed labels after deleting the top-scored
    ``fraction`` of each text's characters, and after deleting as many at random."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(texts))
    counts = [max(1, int(round(fraction * len(t)))) for t in texts]
    top = clf.predict_proba([delete(t, np.argsort(-s, kind="stable")[:k])
                             for t, s, k in zip(texts, char_scores, counts)])
    drops, flips = [], []
    for _ in range(draws):
        probs = clf.predict_proba([delete(t, rng.choice(len(t), k, replace=False)) for t, k in zip(texts, counts)])
        drops.append(base - probs[rows, targets])
        flips.append(probs.argmax(1) != targets)
    return {"top_drop": float((base - top[rows, targets]).mean()), "random_drop": float(np.mean(drops)),
            "top_flips": float((top.argmax(1) != targets).mean()), "random_flips": float(np.mean(flips))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (vdcnn train --out)")
    parser.add_argument("--n", type=int, default=1000, help="how many test texts")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of characters deleted")
    parser.add_argument("--draws", type=int, default=3, help="random deletions per text (averaged)")
    parser.add_argument("--methods", default=",".join(METHODS), help="attribution methods, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    clf = Classifier.load(args.run, device="cpu")
    split = load_split("ag_news", "test").texts
    pick = np.sort(np.random.default_rng(args.seed).choice(len(split), min(args.n, len(split)), replace=False))
    texts = [read_part(clf, split[i]) for i in pick]
    texts = [t for t in texts if t]
    start = time.perf_counter()
    probs = clf.predict_proba(texts)
    predict_ms = (time.perf_counter() - start) * 1000 / len(texts)  # the reference for the cost
    targets = probs.argmax(1)
    base = probs[np.arange(len(texts)), targets]

    print(f"$ VDCNN_DATA_DIR=../shared/data python benchmarks/explain_faithfulness.py "
          f"{' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(f"{len(texts)} AG News test texts (each cut to the part the model reads), run {args.run}, "
          f"{machine()}; deleting {args.fraction:.0%} of each text's characters")
    print(f"{'method':<22} {'top drop':>9} {'random drop':>12} {'ratio':>6} {'top flips':>10} "
          f"{'random flips':>13} {'ms/text':>8} {'x predict':>10}")
    notes = []
    for method in args.methods.split(","):
        start = time.perf_counter()
        explanations = clf.explain(texts, method=method)
        ms = (time.perf_counter() - start) * 1000 / len(texts)
        scores = [e.char_scores() for e in explanations]
        r = deletion_effects(clf, texts, scores, targets, base, args.fraction, args.draws, args.seed)
        ratio = r["top_drop"] / r["random_drop"] if r["random_drop"] > 0 else float("inf")
        print(f"{method:<22} {r['top_drop']:>9.4f} {r['random_drop']:>12.4f} {ratio:>6.2f} "
              f"{r['top_flips']:>10.1%} {r['random_flips']:>13.1%} {ms:>8.1f} {ms / predict_ms:>10.1f}")
        if method == "integrated_gradients":
            gap = np.array([abs(sum(s.score for s in e.spans) - (e.target_probability - e.baseline_probability))
                            for e in explanations])
            change = np.mean([abs(e.target_probability - e.baseline_probability) for e in explanations])
            notes.append(f"integrated gradients completeness |sum of scores - (p - p_baseline)|: mean {gap.mean():.4f}, "
                         f"95th percentile {np.percentile(gap, 95):.4f}, max {gap.max():.4f} "
                         f"(mean |p - p_baseline| {change:.4f})")
    notes.append(f"x predict: explaining time over plain prediction time ({predict_ms:.2f} ms/text, same texts, "
                 f"same run): integrated gradients run 34 rows a text (33 with a backward pass), occlusion <= 50")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
