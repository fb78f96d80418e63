"""Deployment bundles: a run's model exported to ONNX or TorchScript, with its encoder.

```
BUNDLE/                 (default RUN/export-onnx or RUN/export-torchscript)
  model.onnx | model.pt   inputs ids int64 [batch, time], lengths int64 [batch];
                          output logits float32 [batch, classes]; batch and time are dynamic
  bundle.json             format, format_version, precision (fp32 or int8), encoder, labels, max_length,
                          model config; the run's calibration (temperature, top-label map) and long_text default when
                          it has them; for int8, how it was quantized and calibrated (``quantization``)
```
``quantize="int8"`` (ONNX only) writes the model statically quantized by ONNX Runtime
(``vdcnn.quantize``), its activation ranges calibrated on training texts of the run's dataset (or
the texts given); inputs and outputs are the same, so a service runs it as it runs fp32.
The graph outputs raw logits; the loader divides them by ``calibration.temperature`` before
the softmax (then applies ``calibration.top_label`` when the run has one) and reads long texts as windows where ``long_text.default`` says so, as a run folder does.
BatchNorm is folded into the convolutions before export. Every file is written
atomically and ``bundle.json`` last, so a bundle folder with a ``bundle.json``
is complete. ``vdcnn.classifier.load_bundle`` (and ``Classifier.load``, which
detects bundles) gives a classifier with the same interface as a run folder's.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import __version__
from .checkpoint import load_run
from .classifier import (
    BUNDLE_FILE, BUNDLE_FORMAT_VERSION, FORMATS, MODEL_FILES, OUTPUT_NAMES, jit_load, onnx_session, run_max_length,
    run_onnx, run_torchscript,
)
from .errors import CheckpointError, ConfigError, DataError
from .fileio import make_folder, write_bytes, write_json
from .model import VDCNN, fold_batchnorm
from .quantize import DEFAULT_CALIBRATION_ROWS, calibration_batches, check_precision

ONNX_OPSET = 17
INPUT_NAMES = ["ids", "lengths"]
# Exported logits must match PyTorch's to this, relative to their scale (checked on untraced shapes).
CHECK_TOLERANCE = 1e-3


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _example_inputs(config_vocab: int, batch: int, time: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, max(config_vocab, 3), (batch, time), generator=g, dtype=torch.int64)
    lengths = torch.linspace(time, 1, batch).round().to(torch.int64)
    mask = torch.arange(time)[None, :] < lengths[:, None]
    return ids * mask, lengths


def _export_onnx(model: VDCNN, args: tuple[torch.Tensor, torch.Tensor], opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the result is checked below
        torch.onnx.export(
            model, args, buffer, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return buffer.getvalue()


def _export_torchscript(model: VDCNN, args: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, args, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _runner(fmt: str, data: bytes) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Run exported bytes on (ids, lengths) arrays, for the post-export check."""
    if fmt == "onnx":
        session = onnx_session(data)
        return lambda ids, lengths: run_onnx(session, ids, lengths)
    module = jit_load(io.BytesIO(data), torch.device("cpu"))
    return lambda ids, lengths: run_torchscript(module, ids, lengths, torch.device("cpu"))


def check_quantize(fmt: str, quantize: str | None) -> str | None:
    """``quantize`` if the bundle kind takes it (int8: ONNX only), else a one-line error."""
    if quantize is None:
        return None
    check_precision(quantize)
    if fmt != "onnx":
        raise ConfigError(f"--quantize {quantize} needs --to onnx (ONNX Runtime runs the int8 model); "
                          f"{fmt} bundles are fp32")
    return quantize


def run_calibration_texts(run_dir: str | Path, meta: dict[str, Any], rows: int = DEFAULT_CALIBRATION_ROWS,
                          seed: int = 0) -> list[str]:
    """``rows`` texts drawn (seeded) from the training split of the run's dataset, for int8 calibration."""
    from .data import load_split, run_label_rule

    data = meta.get("run", {}).get("data", {})
    source = data.get("dataset")
    if not source:
        raise ConfigError(f"{run_dir} does not record its dataset: give calibration texts (--calibration FILE)")
    try:
        train = load_split(source, "train", text_columns=data.get("text_columns"),
                           label_column=data.get("label_column"),
                           label_rule=run_label_rule(meta, str(Path(run_dir) / "config.json")))
    except (DataError, ConfigError) as exc:
        raise ConfigError(f"cannot read the run's training data for int8 calibration ({exc}); "
                          f"give calibration texts (--calibration FILE)") from None
    pick = np.random.default_rng(seed).permutation(len(train.texts))[:rows]
    return [train.texts[i] for i in pick]


def export_run(run_dir: str | Path, fmt: str = "onnx", out_dir: str | Path | None = None,
               opset: int = ONNX_OPSET, check: bool = True, quantize: str | None = None,
               calibration_texts: Sequence[str] | None = None,
               calibration_rows: int = DEFAULT_CALIBRATION_ROWS) -> Path:
    """Export the run's model (BatchNorm folded) as a bundle folder; returns its path.

    With ``check`` the exported model is run on inputs of another batch size and
    length than the traced ones and must match PyTorch (max |diff| of logits
    below 1e-3 of the largest logit, or of 1), so a trace that baked in a shape never ships.
    ``quantize="int8"`` (ONNX only; default folder ``RUN/export-onnx-int8``) then quantizes the
    checked model, calibrated on ``calibration_texts`` or, without them, ``calibration_rows``
    training texts of the run's dataset; ``bundle.json`` records the share of calibration texts
    whose label the int8 model keeps.
    """
    _check_format(fmt)
    check_quantize(fmt, quantize)
    if calibration_rows < 1:
        raise ConfigError(f"calibration rows must be at least 1, got {calibration_rows}")
    run_dir = Path(run_dir)
    model, encoder, labels, meta = load_run(run_dir)
    fold_batchnorm(model)
    model.eval()
    config = model.config
    max_length = run_max_length(meta)
    if quantize is not None:
        texts = (list(calibration_texts) if calibration_texts is not None
                 else run_calibration_texts(run_dir, meta, calibration_rows))
        feeds, rows = calibration_batches(encoder, texts, max_length)
    default_name = f"export-{fmt}" + (f"-{quantize}" if quantize else "")
    out = make_folder(Path(out_dir) if out_dir is not None else run_dir / default_name)

    args = _example_inputs(config.vocab_size, 2, min(64, max_length), seed=0)
    with torch.no_grad():
        data = _export_onnx(model, args, opset) if fmt == "onnx" else _export_torchscript(model, args)
    report: dict[str, Any] = {}
    if check:
        ids, lengths = _example_inputs(config.vocab_size, 5, 300, seed=1)  # not the traced shape
        with torch.no_grad():
            expected = model(ids, lengths).numpy()
        got = _runner(fmt, data)(ids.numpy(), lengths.numpy())
        diff = float(np.abs(got - expected).max())
        # Relative to the logits' scale: a deep net's large logits carry proportionally larger float error.
        if not diff / max(1.0, float(np.abs(expected).max())) < CHECK_TOLERANCE:
            raise CheckpointError(f"the exported {fmt} model does not match PyTorch (max |logit diff| {diff:.3g})")
        report = {"batch": int(ids.shape[0]), "time": int(ids.shape[1]), "max_abs_logit_diff": diff}
    quantization: dict[str, Any] = {}
    if quantize is not None:
        data, quantization = _quantize(data, feeds, rows)

    model_file = out / MODEL_FILES[fmt]
    write_bytes(model_file, data)
    bundle = {
        "format": fmt,
        "format_version": BUNDLE_FORMAT_VERSION,
        "precision": quantize or "fp32",
        "vdcnn_version": __version__,
        "torch_version": torch.__version__,
        "model_file": model_file.name,
        "inputs": {"ids": "int64 [batch, time]", "lengths": "int64 [batch]"},
        "outputs": {"logits": "float32 [batch, classes]"},
        "batchnorm_folded": True,
        "encoder": encoder.to_dict(),
        "labels": list(labels),
        "max_length": max_length,
        "model": config.to_dict(),
        "source_run": str(run_dir.resolve()),
    }
    for key in ("calibration", "long_text", "multi_label"):  # runs trained before these existed have neither
        if isinstance(meta.get(key), dict):
            bundle[key] = meta[key]
    if fmt == "onnx":
        bundle["opset"] = opset
    if report:
        bundle["check"] = report
    if quantization:
        bundle["quantization"] = quantization
    write_json(out / BUNDLE_FILE, bundle)
    return out


def _quantize(data: bytes, feeds: list[dict[str, np.ndarray]], rows: int) -> tuple[bytes, dict[str, Any]]:
    """The int8 model of fp32 ONNX ``data`` and its ``quantization`` entry: method, calibration rows,
    and the share of the ``rows`` calibration texts whose label it keeps (the fp32 model's)."""
    from .quantize import QUANTIZED_OPS, quantize_onnx

    quantized, method, reduce_range = quantize_onnx(data, feeds)
    fp32, int8 = onnx_session(data), onnx_session(quantized)
    agree = [run_onnx(int8, f["ids"], f["lengths"]).argmax(1) == run_onnx(fp32, f["ids"], f["lengths"]).argmax(1)
             for f in feeds]
    same = np.concatenate(agree)[:rows]
    return quantized, {
        "method": "onnxruntime static, QDQ",
        "weights": "int8, per output channel" + (" (7-bit range: exported on a CPU without VNNI)"
                                                 if reduce_range else ""),
        "activations": "uint8, per tensor",
        "ops": list(QUANTIZED_OPS),
        "calibration": {"method": method, "rows": int(len(same))},
        "calibration_label_agreement": round(float(same.mean()), 6),
    }
