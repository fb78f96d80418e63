"""Timing helpers of ``benchmarks/gpu_check.py``: vdcnn against the plain reference, the bf16 peak, an epoch.

Every figure is a rate measured after a warm-up (first cuDNN/oneDNN calls, allocator growth), with
the device synchronised before the clock is read. The reference (``benchmarks/reference.py``) runs
as the paper describes it: every text padded to 1024, plain SGD, eager; vdcnn runs through its own
building blocks (length-bucketed batches cut to their longest text, the library's fused optimiser,
folded BatchNorm for inference). Inference is compared the same way on both sides (the model
alone on device-resident ids); ``vdcnn_inference`` times ``Classifier.predict_proba`` end to end
(encoding and the copy back included), reported beside it.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.reference import PlainVDCNN
from vdcnn.batching import Encoded, batch_order, make_batch
from vdcnn.config import RunConfig
from vdcnn.encoders import CharEncoder
from vdcnn.model import VDCNN, ModelConfig, fold_batchnorm, forward_flops
from vdcnn.predict import Classifier
from vdcnn.train import make_optimizer

REFERENCE_LENGTH = 1024


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` after one untimed warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def matmul_peak(device: str, n: int = 8192, repeat: int = 10) -> float:
    """FLOP/s of a square bf16 matrix product (fp32 on a CPU): the machine's practical peak."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)

    def run() -> None:
        for _ in range(repeat):
            torch.mm(a, b)

    return 2 * n**3 * repeat / timed(run, device)


def encode(texts: list[str], labels: np.ndarray, max_length: int = REFERENCE_LENGTH) -> Encoded:
    ids, lengths = CharEncoder().encode_batch(texts, max_length)
    return Encoded(ids, lengths, np.asarray(labels, dtype=np.int64))


def _bf16(device: str, enabled: bool):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)


def reference_training(depth: int, data: Encoded, device: str, batch: int, steps: int, bf16: bool) -> float:
    """Samples/s of the plain reference: fixed length 1024, SGD with momentum, eager."""
    torch.manual_seed(0)
    model = PlainVDCNN(depth).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    order = [np.arange(i, i + batch) % len(data) for i in range(0, steps * batch, batch)]
    batches = [make_batch(data, idx, trim=False, device=device) for idx in order]

    def run() -> None:
        for x, _, y in batches:
            with _bf16(device, bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return steps * batch / timed(run, device)


@torch.no_grad()
def reference_inference(depth: int, data: Encoded, device: str, batch: int, bf16: bool, repeat: int = 1) -> float:
    """Texts/s of the plain reference in eval mode, every text padded to 1024."""
    torch.manual_seed(0)
    model = PlainVDCNN(depth).to(device).eval()
    ids = torch.from_numpy(data.ids.astype(np.int64)).to(device)

    def run() -> None:
        for i in range(0, len(ids), batch):
            with _bf16(device, bf16):
                model(ids[i:i + batch])

    return len(ids) / timed(run, device, repeat)


def _trimmed_length(lengths: np.ndarray, max_length: int, multiple: int = 8) -> int:
    """The length ``make_batch`` cuts a batch to: its longest text, rounded up to ``multiple``."""
    longest = max(int(lengths.max(initial=1)), 1)
    return min(-(-longest // multiple) * multiple, max_length)


def vdcnn_training(depth: int, data: Encoded, device: str, batch: int, bf16: bool,
                   steps: int | None = None, warmup: int = 3) -> dict[str, float]:
    """Samples/s and FLOP/s of vdcnn training (bucketed batches, masks, fused SGD), over ``steps``
    batches (all of them, one epoch, when None) after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    config = ModelConfig(depth=depth)
    model = VDCNN(config).to(device).train()
    opt = make_optimizer(RunConfig(), model)
    order = batch_order(data.lengths, batch, np.random.default_rng(0), bucket=True)
    timed_order = order[:steps] if steps else order

    def step(idx: np.ndarray) -> None:
        x, n, y = make_batch(data, idx, trim=True, device=device)
        with _bf16(device, bf16):
            loss = F.cross_entropy(model(x, n).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for idx in order[:warmup]:
        step(idx)
    sync(device)
    start = time.perf_counter()
    for idx in timed_order:
        step(idx)
    sync(device)
    seconds = time.perf_counter() - start
    samples = sum(len(idx) for idx in timed_order)
    max_length = data.ids.shape[1]
    flops = 3 * sum(len(idx) * forward_flops(config, _trimmed_length(data.lengths[idx], max_length))
                    for idx in timed_order)  # backward ~ 2x forward
    return {"samples_per_s": samples / seconds, "flops_per_s": flops / seconds, "samples": samples,
            "seconds": seconds}


@torch.no_grad()
def vdcnn_model_inference(depth: int, data: Encoded, device: str, batch: int, bf16: bool, repeat: int = 1) -> float:
    """Texts/s of vdcnn's model alone (folded BatchNorm, texts sorted by length, each batch cut to its
    longest text) on ids already on the device: timed as ``reference_inference`` times the reference."""
    torch.manual_seed(0)
    model = fold_batchnorm(VDCNN(ModelConfig(depth=depth)).eval()).to(device)
    order = np.argsort(data.lengths, kind="stable")
    batches = [make_batch(data, order[i:i + batch], trim=True, device=device)[:2] for i in range(0, len(order), batch)]

    def run() -> None:
        for ids, lengths in batches:
            with _bf16(device, bf16):
                model(ids, lengths)

    return len(data) / timed(run, device, repeat)


def vdcnn_inference(depth: int, texts: list[str], device: str, batch: int, bf16: bool, repeat: int = 1) -> float:
    """Texts/s of ``Classifier.predict_proba`` (encoding included, folded BatchNorm, length buckets)."""
    torch.manual_seed(0)
    model = fold_batchnorm(VDCNN(ModelConfig(depth=depth)).eval())
    clf = Classifier(model, CharEncoder(), ["a", "b", "c", "d"], REFERENCE_LENGTH, device, batch, bf16=bf16)
    return len(texts) / timed(lambda: clf.predict_proba(texts), device, repeat)


def reference_flops_per_sample(depth: int) -> int:
    """Forward FLOPs of one reference text (the same layout as vdcnn's paper preset at length 1024)."""
    return forward_flops(ModelConfig(depth=depth), REFERENCE_LENGTH)
