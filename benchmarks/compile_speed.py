"""Does ``torch.compile`` pay for inference? Eager vs compiled, same model, same texts, one run.

    VDCNN_DATA_DIR=../shared/data python benchmarks/compile_speed.py --run runs/quick [--n 7600]

Scores the AG News test texts with the library's bucketed inference (BatchNorm
folded, fp32) twice: eager, and through ``torch.compile(dynamic=True)`` (bucketed
batches have many lengths, so a static compile would recompile for each). The
compiled model is warmed up on the same batches first and the compile time is
printed separately. Prints texts/s of both, the ratio, and the largest
probability difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.data import load_split  # noqa: E402
from vdcnn.evaluate import predict_logits, softmax  # noqa: E402
from vdcnn.predict import Classifier  # noqa: E402
from vdcnn.runtime import tune_malloc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (vdcnn train --out)")
    parser.add_argument("--n", type=int, default=7600, help="how many test texts")
    args = parser.parse_args()
    tune_malloc()  # as `vdcnn predict` does, so the figures are the CLI's

    clf = Classifier.load(args.run, device="cpu")
    texts = load_split("ag_news", "test").texts[: args.n]
    ids, lengths = clf.encoder.encode_batch(texts, clf.max_length)

    def timed(model: torch.nn.Module) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        logits = predict_logits(model, ids, lengths, clf.batch_size)
        return time.perf_counter() - start, softmax(logits)

    timed(clf.model)  # warm-up
    eager_s, eager = timed(clf.model)
    compiled_model = torch.compile(clf.model, dynamic=True)
    compile_s, _ = timed(compiled_model)  # compiles (and warms up) on every batch shape
    compiled_s, compiled = timed(compiled_model)

    n = len(texts)
    print(f"{n} AG News test texts, run {args.run}, fp32, {machine()}, torch {torch.__version__}")
    print(f"{'figure':<38} {'compiled':>9} {'eager':>9} {'ratio':>7}")
    print(f"{'inference, texts/s':<38} {n / compiled_s:>9.0f} {n / eager_s:>9.0f} {eager_s / compiled_s:>6.2f}x")
    print(f"first compiled pass (compile + run): {compile_s:.1f} s; "
          f"max |prob diff| compiled vs eager: {np.abs(compiled - eager).max():.1e}")


if __name__ == "__main__":
    main()
