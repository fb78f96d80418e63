"""Do predictions depend on batch-mates or padding? Measured on the AG News test texts.

    VDCNN_DATA_DIR=../shared/data python benchmarks/invariance.py --run runs/quick [--n 7600]

Scores every text three ways with the library's ``Classifier``: in one call over
all texts (length-sorted, bucketed batches: the normal path), alone (one call per
text), and in a batch with the longest texts of the split (so it is padded far
beyond its own length). Prints, for alone and among-long-texts against the normal
path: the largest probability difference, how many texts differ by 1e-4 or more
(the project's tolerance), and how many change label. ``--bf16`` measures bf16
inference instead of fp32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.data import load_split  # noqa: E402
from vdcnn.predict import Classifier  # noqa: E402

TOLERANCE = 1e-4


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, int, int]:
    """(max |difference|, texts differing by >= TOLERANCE, label changes)."""
    diff = np.abs(reference - other).max(1)
    flips = int((reference.argmax(1) != other.argmax(1)).sum())
    return float(diff.max(initial=0.0)), int((diff >= TOLERANCE).sum()), flips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (vdcnn train --out)")
    parser.add_argument("--n", type=int, default=7600, help="how many test texts")
    parser.add_argument("--mates", type=int, default=7, help="longest texts put beside each text")
    parser.add_argument("--bf16", action="store_true", help="bf16 inference instead of fp32")
    args = parser.parse_args()

    clf = Classifier.load(args.run, device="cpu", bf16=args.bf16)
    split = load_split("ag_news", "test").texts
    texts = split[: args.n]
    longest = sorted(split, key=len)[-args.mates:]

    start = time.perf_counter()
    batched = clf.predict_proba(texts)
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])
    among_long = np.concatenate([clf.predict_proba([t, *longest])[:1] for t in texts])
    seconds = time.perf_counter() - start

    print(f"{len(texts)} AG News test texts, run {args.run}, {'bf16' if args.bf16 else 'fp32'}, "
          f"{machine()}, {seconds:.0f} s")
    print(f"{'comparison with the batched path':<34} {'max |diff|':>10} {'>= 1e-4':>8} {'label changes':>14}")
    for name, probs in (("alone", alone), (f"beside the {args.mates} longest texts", among_long)):
        worst, over, flips = compare(batched, probs)
        print(f"{name:<34} {worst:>10.2e} {over:>8} {flips:>14}")


if __name__ == "__main__":
    main()
