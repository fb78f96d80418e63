"""Speed of vdcnn against the plain reference, measured in the same run.

    python benchmarks/speed.py [--depths 9,29] [--n 2048] [--train-steps 8] [--skip-train]

Prints one table: figure, reference, ratio, machine. Texts are real AG News test
rows from $VDCNN_DATA_DIR (both sides get the same texts). Inference: the
reference pads every text to 1024 and runs batches of 256; vdcnn goes through
``Classifier.predict_proba`` (encoding included, length-bucketed batches, folded
BatchNorm, inference mode). Training: samples/s over the same number of steps,
batch 64 on CPU (128 on GPU), reference at fixed length 1024 in fp32.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.reference import PlainVDCNN  # noqa: E402
from vdcnn.batching import Encoded, batch_order, make_batch  # noqa: E402
from vdcnn.data import load_split  # noqa: E402
from vdcnn.encoders import CharEncoder  # noqa: E402
from vdcnn.model import VDCNN, ModelConfig, fold_batchnorm  # noqa: E402
from vdcnn.predict import Classifier  # noqa: E402
from vdcnn.runtime import bf16_supported, tune_malloc  # noqa: E402


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def inference_reference(depth: int, texts: list[str], device: str) -> float:
    torch.manual_seed(0)
    ref = PlainVDCNN(depth).to(device).eval()
    ids, _ = CharEncoder().encode_batch(texts, 1024)
    ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
    batch = 1024 if device == "cuda" else 256

    def run_ref():
        with torch.no_grad():
            for i in range(0, len(ids_t), batch):
                ref(ids_t[i:i + batch])

    return len(texts) / timed(run_ref)


def inference_ours(depth: int, texts: list[str], device: str, bf16: bool = False) -> float:
    torch.manual_seed(0)
    model = fold_batchnorm(VDCNN(ModelConfig(depth=depth)).eval())
    batch = 1024 if device == "cuda" else 256
    clf = Classifier(model, CharEncoder(), ["a", "b", "c", "d"], 1024, device, batch, bf16=bf16)
    return len(texts) / timed(lambda: clf.predict_proba(texts))


def _train_data(texts: list[str], device: str, steps: int):
    batch = 128 if device == "cuda" else 64
    ids, lengths = CharEncoder().encode_batch(texts, 1024)
    labels = np.random.default_rng(0).integers(0, 4, len(texts))
    data = Encoded(ids, lengths, labels)
    order = batch_order(lengths, batch, np.random.default_rng(0), bucket=True)[:steps]
    return data, order, sum(len(i) for i in order)


def training_reference(depth: int, texts: list[str], device: str, steps: int) -> float:
    data, order, seen = _train_data(texts, device, steps)
    torch.manual_seed(0)
    ref = PlainVDCNN(depth).to(device).train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    ref_batches = [make_batch(data, idx, trim=False, device=device) for idx in order]

    def run_ref():
        for x, _, y in ref_batches:
            loss = F.cross_entropy(ref(x), y)
            opt_ref.zero_grad()
            loss.backward()
            opt_ref.step()

    return seen / timed(run_ref)


def training_ours(depth: int, texts: list[str], device: str, steps: int, bf16: bool) -> float:
    data, order, seen = _train_data(texts, device, steps)
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=depth)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)  # as vdcnn.train does

    def run_ours():
        for idx in order:
            x, n, y = make_batch(data, idx, trim=True, device=device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x, n).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return seen / timed(run_ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="9,29")
    parser.add_argument("--n", type=int, default=2048, help="AG News test texts used (spread over the split)")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    all_texts = load_split("ag_news", "test").texts
    step = max(1, len(all_texts) // args.n)
    texts = all_texts[::step][: args.n]
    depths = [int(d) for d in args.depths.split(",")]
    # The reference first, with the default allocator; then vdcnn, which tunes it.
    refs = {}
    for depth in depths:
        refs[("inference", depth)] = inference_reference(depth, texts, device)
        if not args.skip_train:
            refs[("training", depth)] = training_reference(depth, texts, device, args.train_steps)
    tune_malloc()
    bf16 = bf16_supported(device)
    rows = []
    for depth in depths:
        rows.append((f"{device} inference d{depth} fp32, texts/s", inference_ours(depth, texts, device),
                     refs[("inference", depth)]))
        if bf16:
            rows.append((f"{device} inference d{depth} bf16, texts/s", inference_ours(depth, texts, device, True),
                         refs[("inference", depth)]))
        if not args.skip_train:
            rows.append((f"{device} training d{depth} {'bf16' if device == 'cuda' else 'fp32'}, samples/s",
                         training_ours(depth, texts, device, args.train_steps, device == "cuda"),
                         refs[("training", depth)]))
            if bf16 and device == "cpu":
                rows.append((f"{device} training d{depth} bf16, samples/s",
                             training_ours(depth, texts, device, args.train_steps, True), refs[("training", depth)]))
        for row in rows[-4:]:
            print(f"  {row[0]}: {row[1]:.0f} vs {row[2]:.0f}", file=sys.stderr)
    where = machine()
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'vdcnn':>9}  {'reference':>9}  {'ratio':>6}  machine")
    for name, ours, ref in rows:
        print(f"{name:<{width}}  {ours:>9.0f}  {ref:>9.0f}  {ours / ref:>5.2f}x  {where}")


if __name__ == "__main__":
    main()
