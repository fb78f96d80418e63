"""ONNX Runtime vs PyTorch CPU throughput of an exported VDCNN, and the bundle's size.

    VDCNN_DATA_DIR=/path/to/data python benchmarks/export_speed.py [--depth 9] [--limit N] [--threads T]

Builds a paper-size VDCNN (random weights are enough for speed), writes it as a
run folder in a temporary directory, exports it with ``vdcnn.export.export_run``
and classifies the AG News test texts (title + description, 7,600 rows) with
``Classifier`` (PyTorch, BatchNorm folded) and ``OnnxClassifier`` under the same
batching (length-sorted, trimmed batches of 256), max_length 1024, same threads.
Each is timed once after a short warm-up. Prints one table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.checkpoint import make_meta, save_weights  # noqa: E402
from vdcnn.classifier import Classifier, OnnxClassifier  # noqa: E402
from vdcnn.encoders import CharEncoder  # noqa: E402
from vdcnn.export import export_run  # noqa: E402
from vdcnn.fileio import write_json  # noqa: E402
from vdcnn.model import VDCNN, ModelConfig, count_parameters  # noqa: E402
from vdcnn.runtime import tune_malloc  # noqa: E402

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def read_ag_news_test(limit: int | None) -> list[str]:
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root:
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/test.csv.gz")
    path = Path(root) / "ag_news" / "test.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        texts = [f"{row[1]} {row[2]}" for row in csv.reader(f)]
    return texts[:limit] if limit else texts


def timed(fn, texts: list[str]) -> tuple[float, np.ndarray]:
    fn(texts[:64])  # warm-up
    start = time.perf_counter()
    probs = fn(texts)
    return time.perf_counter() - start, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=9)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N test texts.")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both (0 = torch default).")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    tune_malloc()  # as `vdcnn predict` does, so the figures are the CLI's
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    texts = read_ag_news_test(args.limit)

    torch.manual_seed(0)
    encoder = CharEncoder()
    config = ModelConfig(vocab_size=encoder.vocab_size, num_classes=len(LABELS), depth=args.depth)
    model = VDCNN(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        save_weights(run / "model.safetensors", model)
        write_json(run / "config.json", make_meta(config, encoder, LABELS, run={"encoder": {"max_length": 1024}}))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = export_run(run, "onnx")
        export_s = time.perf_counter() - start
        onnx_mb = (bundle / "model.onnx").stat().st_size / 1e6
        weights_mb = (run / "model.safetensors").stat().st_size / 1e6

        reference = Classifier.load(run, device="cpu", batch_size=args.batch_size)
        onnx = OnnxClassifier.load(bundle, batch_size=args.batch_size, threads=threads)
        torch_s, torch_probs = timed(reference.predict_proba, texts)
        onnx_s, onnx_probs = timed(onnx.predict_proba, texts)

    diff = np.abs(onnx_probs - torch_probs).max(axis=1)
    n = len(texts)
    rows = [
        ("throughput (texts/s)", f"{n / onnx_s:,.0f}", f"{n / torch_s:,.0f}", f"{torch_s / onnx_s:.2f}x"),
        ("wall time (s)", f"{onnx_s:.2f}", f"{torch_s:.2f}", f"{onnx_s / torch_s:.2f}x"),
        ("model file (MB)", f"{onnx_mb:.1f}", f"{weights_mb:.1f} (safetensors)", f"{onnx_mb / weights_mb:.2f}x"),
        ("max |prob diff|", f"{diff.max():.2e}", "-", f"{(diff >= 1e-4).sum()} of {n} >= 1e-4"),
        ("same predicted class", f"{(onnx_probs.argmax(1) == torch_probs.argmax(1)).mean() * 100:.2f} %", "-", "-"),
    ]
    print(f"VDCNN depth {config.conv_layers} ({count_parameters(model) / 1e6:.2f} M parameters), "
          f"{n} AG News test texts, max_length 1024, batch {args.batch_size}, ONNX opset 17 "
          f"(export took {export_s:.1f} s)")
    print(f"machine: {machine()}; torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    head = ("figure", "ONNX Runtime", "reference=PyTorch", "ratio")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(4)]
    for r in [head] + rows:
        print("  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
