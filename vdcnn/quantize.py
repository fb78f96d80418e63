"""int8 ONNX models: ONNX Runtime static quantization, calibrated on real texts of the run.

Static, not dynamic: dynamic quantization leaves convolutions in float, and convolutions are
nearly all of VDCNN's work. The exported fp32 graph gets QuantizeLinear/DequantizeLinear pairs
(QDQ format) around its convolutions and linear layers: weights int8 per output channel,
activations uint8 per tensor (the U8S8 kernels that AVX512-VNNI runs), their ranges calibrated
by running the fp32 model on a few hundred training texts encoded by the run's own encoder.
The n-gram path (hashing, an embedding lookup and one small linear layer) stays in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .encoders import Encoder
from .errors import ConfigError
from .runtime import cpu_has_vnni

PRECISIONS = ("int8",)
# Calibration: how many texts, and how an activation's range is chosen: the 99.999th percentile of
# its absolute values (outliers clipped) beat min-max on TREC-6 (86.0 against 85.6 %, fp32 86.2 %)
# and matched it on AG News (benchmarks/precision.py). ONNX Runtime's percentile histogram fails on
# a tensor of (nearly) one value ("Too many bins for data range", seen on SST-2): min-max then.
DEFAULT_CALIBRATION_ROWS = 512
CALIBRATION_METHODS = ("Percentile", "MinMax")
CALIBRATION_BATCH = 64
# The calibrator keeps every activation of every calibration batch in memory (about 3 KB per id at
# depth 9): the texts are cut to this many ids in all (rows x longest), at least MIN_ROWS rows.
CALIBRATION_IDS = 131_072
MIN_CALIBRATION_ROWS = 64
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def check_precision(precision: str) -> str:
    """``precision`` if it is one ``PRECISIONS`` names, else a one-line error."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown quantization {precision!r}; choose {', '.join(PRECISIONS)}")
    return precision


def calibration_batches(encoder: Encoder, texts: Sequence[str], max_length: int,
                        batch_size: int = CALIBRATION_BATCH) -> tuple[list[dict[str, np.ndarray]], int]:
    """ONNX feeds ``{"ids", "lengths"}`` for ``texts``, all padded to the longest one, and how many
    texts they hold (the first rows of the feeds, in order).

    One shape for every batch (the histogram calibrators stack their batches). Padding changes
    no statistic that matters: the model masks it, as at inference. Only the first texts are
    used if all of them would exceed ``CALIBRATION_IDS`` ids (``MIN_CALIBRATION_ROWS`` at least).
    """
    if not texts:
        raise ConfigError("int8 calibration needs at least one text")
    ids, lengths = encoder.encode_batch(list(texts), max_length)
    longest = max(int(lengths.max()), 1)
    rows = max(MIN_CALIBRATION_ROWS, CALIBRATION_IDS // longest)
    if rows < len(lengths):
        ids, lengths = ids[:rows], lengths[:rows]
        longest = max(int(lengths.max()), 1)
    # Every batch full too: the last one is completed with the first texts again.
    size = min(batch_size, len(lengths))
    rows = len(lengths)
    index = np.arange(-(-rows // size) * size) % rows
    ids = np.ascontiguousarray(ids[index, :longest], dtype=np.int64)
    lengths = lengths[index].astype(np.int64)
    return [{"ids": ids[i:i + size], "lengths": lengths[i:i + size]} for i in range(0, len(lengths), size)], rows


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization advises on pre-processing through the root logger and prints its
    calibration steps: keep both off the command's stdout and stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_onnx(model: bytes, feeds: list[dict[str, np.ndarray]], exclude_prefixes: Sequence[str] = ("/ngrams",)
                  ) -> tuple[bytes, str, bool]:
    """The int8 (QDQ) version of an fp32 ONNX model, its activation ranges calibrated on ``feeds``, the
    calibration method that gave it (the first of ``CALIBRATION_METHODS`` that works), and whether its
    weights use the 7-bit range (``runtime.cpu_has_vnni``: this CPU has no VNNI).

    Nodes whose names start with ``exclude_prefixes`` stay in float (the n-gram path's linear layer
    takes its bias from a computed tensor, which the quantizer cannot fold)."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
        )
    except ImportError:
        raise ConfigError("int8 export needs onnx and onnxruntime: pip install 'vdcnn[export]'") from None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    graph = onnx.load_from_string(model)
    inputs = {i.name for i in graph.graph.input}
    if "lengths" not in inputs:  # a model that ignores lengths (mask_padding off) has no such input
        feeds = [{k: v for k, v in f.items() if k in inputs} for f in feeds]
    excluded = [n.name for n in graph.graph.node if n.name.startswith(tuple(exclude_prefixes))]
    reduce_range = not cpu_has_vnni()
    with tempfile.TemporaryDirectory(prefix="vdcnn-int8-") as tmp, _quiet_root_logger():
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        for method in CALIBRATION_METHODS:
            try:
                quantize_static(
                    str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
                    calibrate_method=getattr(CalibrationMethod, method), reduce_range=reduce_range,
                )
                return target.read_bytes(), method.lower(), reduce_range
            except ValueError as exc:
                failure = exc
        raise ConfigError(f"int8 calibration failed: {str(failure).splitlines()[0]}")
