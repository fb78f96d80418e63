"""ONNX Runtime and TorchScript vs PyTorch CPU throughput of an exported VDCNN, parity and size.

    VDCNN_DATA_DIR=/path/to/data python benchmarks/export_speed.py [--run RUN | --depth 9] [--limit N] [--threads T]

Exports a trained run folder (``--run``), or else a paper-size VDCNN with random
weights (enough for speed) written as a run folder in a temporary directory, with
``vdcnn.export.export_run`` to both formats (bundles in a temporary directory), and
classifies the AG News test texts (title + description, 7,600 rows) with
``Classifier`` (PyTorch, BatchNorm folded: the reference), ``TorchScriptClassifier``
and ``OnnxClassifier`` under the same batching (length-sorted, trimmed batches of
256), the run's max_length, same threads. Each is timed once after a short warm-up.
Prints one table: throughput, model file size, largest probability difference from
PyTorch and label agreement.
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
from vdcnn.classifier import Classifier, OnnxClassifier, TorchScriptClassifier  # noqa: E402
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


def random_run(folder: Path, depth: int) -> Path:
    """A paper-size character VDCNN with random weights, saved as a run folder."""
    torch.manual_seed(0)
    encoder = CharEncoder()
    config = ModelConfig(vocab_size=encoder.vocab_size, num_classes=len(LABELS), depth=depth)
    run = folder / "run"
    run.mkdir()
    save_weights(run / "model.safetensors", VDCNN(config).eval())
    write_json(run / "config.json", make_meta(config, encoder, LABELS, run={"encoder": {"max_length": 1024}}))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="A trained run folder (default: random paper-size model).")
    parser.add_argument("--depth", type=int, default=9, help="Depth of the random model (without --run).")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N test texts.")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for all (0 = torch default).")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    tune_malloc()  # as `vdcnn predict` does, so the figures are the CLI's
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    texts = read_ag_news_test(args.limit)
    n = len(texts)

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or random_run(Path(tmp), args.depth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundles = {fmt: export_run(run, fmt, out_dir=Path(tmp) / f"export-{fmt}") for fmt in ("onnx", "torchscript")}
        reference = Classifier.load(run, device="cpu", batch_size=args.batch_size)
        backends = {"ONNX Runtime": OnnxClassifier.load(bundles["onnx"], batch_size=args.batch_size, threads=threads),
                    "TorchScript": TorchScriptClassifier.load(bundles["torchscript"], device="cpu",
                                                              batch_size=args.batch_size)}
        sizes = {"ONNX Runtime": (bundles["onnx"] / "model.onnx").stat().st_size / 1e6,
                 "TorchScript": (bundles["torchscript"] / "model.pt").stat().st_size / 1e6,
                 "PyTorch": (run / "model.safetensors").stat().st_size / 1e6}
        torch_s, torch_probs = timed(reference.predict_proba, texts)
        results = {name: timed(clf.predict_proba, texts) for name, clf in backends.items()}

    rows = [("PyTorch (reference)", f"{n / torch_s:,.0f}", "1.00x", f"{sizes['PyTorch']:.1f} (safetensors)", "-", "-", "-")]
    for name, (seconds, probs) in results.items():
        diff = np.abs(probs - torch_probs).max(axis=1)
        rows.append((name, f"{n / seconds:,.0f}", f"{torch_s / seconds:.2f}x", f"{sizes[name]:.1f}", f"{diff.max():.1e}",
                     f"{(diff >= 1e-4).sum()} of {n}", f"{(probs.argmax(1) == torch_probs.argmax(1)).mean() * 100:.2f} %"))
    model = reference.model
    what = f"run {run}" if args.run else "random weights"
    print(f"VDCNN depth {model.config.conv_layers} ({count_parameters(model) / 1e6:.2f} M parameters, {what}), "
          f"{n} AG News test texts, max_length {reference.max_length}, batch {args.batch_size}, fp32")
    print(f"machine: {machine()}; torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    head = ("backend", "texts/s", "vs PyTorch", "model file (MB)", "max |prob diff|", "texts >= 1e-4", "same label")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
