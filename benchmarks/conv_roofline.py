"""How close the fp32 model runs to what this CPU can do: GFLOP/s of a large matrix product (the
BLAS GEMM), of each convolution shape of the depth-9 model (fp32 and bf16, as a plain
``nn.Conv1d`` and as vdcnn's channels-last ``Conv1d``), and of the whole folded model, with the
share of the forward that is convolution.

    python benchmarks/conv_roofline.py [--batch 256] [--length 256] [--threads 2]

Convolutions at or above the GEMM's rate are bound by arithmetic: they get faster only by doing less of
it (shorter batches, bf16, int8); what is left to a better program is the narrow convolutions and the
time outside convolutions and the head. Machine to itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.layers import Conv1d, channels_last  # noqa: E402
from vdcnn.model import VDCNN, ModelConfig, fold_batchnorm, forward_flops  # noqa: E402


def seconds(fn, repeat: int = 5) -> float:
    fn()
    begun = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - begun) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=256, help="characters a text (AG News averages 235)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, length = args.batch, args.length
    rows = []
    with torch.inference_mode():
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        peak = 2 * 2048 ** 3 / seconds(lambda: a @ b) / 1e9
        rows.append(("matmul 2048^3 fp32 (the BLAS GEMM)", peak))
        a16, b16 = a.bfloat16(), b.bfloat16()
        rows.append(("matmul 2048^3 bf16", 2 * 2048 ** 3 / seconds(lambda: a16 @ b16) / 1e9))
        for cin, cout, n in ((64, 64, length), (128, 128, length // 2), (256, 256, length // 4),
                             (512, 512, length // 8)):
            flops = 2 * batch * n * cin * cout * 3
            conv = Conv1d(cin, cout, 3, padding=1, bias=False)
            for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
                x, w = torch.randn(batch, cin, n, dtype=dtype), conv.weight.to(dtype)
                rate = flops / seconds(lambda: F.conv1d(x, w, padding=1)) / 1e9
                rows.append((f"conv1d k3 {cin}->{cout}, length {n}, {name}: plain Conv1d", rate))
                ours, x_cl = conv.to(dtype), channels_last(x)  # as activations arrive in the model
                rate = flops / seconds(lambda: ours(x_cl)) / 1e9
                rows.append((f"conv1d k3 {cin}->{cout}, length {n}, {name}: vdcnn (channels-last)", rate))
        model = fold_batchnorm(VDCNN(ModelConfig(depth=9)).eval())
        ids = torch.randint(2, 70, (batch, length))
        lengths = torch.full((batch,), length)
        forward = seconds(lambda: model(ids, lengths))
        rows.append((f"model d9 forward, batch {batch} x {length} (folded, masked)",
                     forward_flops(model.config, length) * batch / forward / 1e9))
        from torch.profiler import profile

        with profile() as prof:
            model(ids, lengths)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
        fc = sum(e.self_cpu_time_total for e in events if e.key in ("aten::addmm", "aten::mm", "aten::linear"))
    print(f"machine: {machine()}, torch {torch.__version__}")
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}} {'GFLOP/s':>8} {'vs matmul':>10}")
    for name, rate in rows:
        print(f"{name:<{width}} {rate:8.0f} {rate / peak:9.2f}x")
    print(f"model d9: {forward * 1000:.0f} ms a batch, {batch / forward:.0f} texts/s; of its CPU time "
          f"{conv / total:.0%} convolutions, {fc / total:.0%} fully connected head, {1 - (conv + fc) / total:.0%} "
          f"the rest (masking, pooling, k-max)")


if __name__ == "__main__":
    main()
