"""Deployment bundles: a run's model exported to ONNX or TorchScript, with its encoder.

```
BUNDLE/                 (default RUN/export-onnx or RUN/export-torchscript)
  model.onnx | model.pt   inputs ids int64 [batch, time], lengths int64 [batch];
                          output logits float32 [batch, classes]; batch and time are dynamic
  bundle.json             format, format_version, encoder, labels, max_length, model config
```
BatchNorm is folded into the convolutions before export. Every file is written
atomically and ``bundle.json`` last, so a bundle folder with a ``bundle.json``
is complete. ``load_bundle`` (and ``Classifier.load``, which detects bundles)
gives a classifier with the same interface as ``vdcnn.predict.Classifier``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import __version__
from .batching import iterate_ids
from .checkpoint import _describe_os_error, atomic_write, load_run, write_json
from .encoders import Encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError
from .model import VDCNN, fold_batchnorm
from .predict import TextClassifier

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
FORMATS = tuple(MODEL_FILES)
ONNX_OPSET = 17
INPUT_NAMES = ["ids", "lengths"]
OUTPUT_NAMES = ["logits"]
# Exported logits must match PyTorch's to this (checked on shapes unlike the traced ones).
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


def _jit_load(source: Any, device: torch.device) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(source, map_location=device)


def _runner(fmt: str, data: bytes) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Run exported bytes on (ids, lengths) arrays, for the post-export check."""
    if fmt == "onnx":
        session = _onnx_session(data)
        return lambda ids, lengths: _run_onnx(session, ids, lengths)
    module = _jit_load(io.BytesIO(data), torch.device("cpu"))
    return lambda ids, lengths: _run_torchscript(module, ids, lengths, torch.device("cpu"))


def export_run(run_dir: str | Path, fmt: str = "onnx", out_dir: str | Path | None = None,
               opset: int = ONNX_OPSET, check: bool = True) -> Path:
    """Export the run's model (BatchNorm folded) as a bundle folder; returns its path.

    With ``check`` the exported model is run on inputs of another batch size and
    length than the traced ones and must match PyTorch (max |diff| of logits
    below 1e-3), so a trace that baked in a shape never ships.
    """
    _check_format(fmt)
    run_dir = Path(run_dir)
    model, encoder, labels, meta = load_run(run_dir)
    fold_batchnorm(model)
    model.eval()
    config = model.config
    max_length = int(meta.get("run", {}).get("encoder", {}).get("max_length", 1024))
    out = Path(out_dir) if out_dir is not None else run_dir / f"export-{fmt}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(_describe_os_error(exc, out)) from None
    if not out.is_dir():
        raise CheckpointError(f"cannot write the bundle: {out} is not a folder")

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
        if not diff < CHECK_TOLERANCE:
            raise CheckpointError(f"the exported {fmt} model does not match PyTorch (max |logit diff| {diff:.3g})")
        report = {"batch": int(ids.shape[0]), "time": int(ids.shape[1]), "max_abs_logit_diff": diff}

    model_file = out / MODEL_FILES[fmt]
    atomic_write(model_file, lambda p: p.write_bytes(data))
    bundle = {
        "format": fmt,
        "format_version": BUNDLE_FORMAT_VERSION,
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
    if fmt == "onnx":
        bundle["opset"] = opset
    if report:
        bundle["check"] = report
    write_json(out / BUNDLE_FILE, bundle)
    return out


# --- loading -------------------------------------------------------------------------------


def is_bundle(path: str | Path) -> bool:
    """True for a folder holding ``bundle.json`` (an exported model), not a run folder."""
    return (Path(path) / BUNDLE_FILE).is_file()


def read_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """``bundle.json`` of a bundle folder, checked for format and version."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / BUNDLE_FILE
    if not path.is_file():
        raise CheckpointError(f"{bundle_dir} is not an export bundle: {BUNDLE_FILE} is missing")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt: not valid JSON") from None
    if not isinstance(info, dict) or "format_version" not in info:
        raise CheckpointError(f"{path} is not a vdcnn bundle description")
    version = info["format_version"]
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise CheckpointError(f"{path} has bundle format version {version!r}, newer than this vdcnn understands "
                              f"({BUNDLE_FORMAT_VERSION}); upgrade vdcnn")
    if info.get("format") not in FORMATS:
        raise CheckpointError(f"{path}: unknown bundle format {info.get('format')!r}")
    for key in ("encoder", "labels", "max_length", "model"):
        if key not in info:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    return info


def _onnx_session(model: str | Path | bytes, threads: int = 0, device: str = "cpu") -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX bundles need onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--device cuda was asked for but onnxruntime has no CUDA provider")
        providers.insert(0, "CUDAExecutionProvider")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad model file
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the ONNX model {model if not isinstance(model, bytes) else ''}: "
                              f"{reason}") from None


def _run_onnx(session: Any, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    # A model that ignores lengths (mask_padding off) has no lengths input.
    names = {i.name for i in session.get_inputs()}
    feed = {"ids": np.ascontiguousarray(ids, dtype=np.int64)}
    if "lengths" in names:
        feed["lengths"] = np.ascontiguousarray(lengths, dtype=np.int64)
    return session.run(OUTPUT_NAMES, feed)[0]


@torch.inference_mode()
def _run_torchscript(module: Any, ids: np.ndarray, lengths: np.ndarray, device: torch.device) -> np.ndarray:
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
    n = torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=device)
    return module(x, n).float().cpu().numpy()


class BundleClassifier(TextClassifier):
    """An exported model with its encoder and label names; the interface of ``Classifier``."""

    format = ""

    def __init__(self, run: Callable[[np.ndarray, np.ndarray], np.ndarray], encoder: Encoder, labels: list[str],
                 max_length: int, mask_padding: bool = True, batch_size: int = 256,
                 info: dict[str, Any] | None = None) -> None:
        self._run = run
        self.encoder = encoder
        self.labels = labels
        self.max_length = max_length
        self.mask_padding = mask_padding
        self.batch_size = batch_size
        self.info = info or {}

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits ``(N, classes)`` in input order; batches run in length order, trimmed."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not len(texts):
            return out
        ids, lengths = self.encoder.encode_batch(texts, self.max_length)
        for index, x, n in iterate_ids(ids, lengths, self.batch_size, self.mask_padding):
            out[index] = self._run(x.numpy(), n.numpy())[: len(index)]
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(N, classes)`` in input order."""
        from .evaluate import softmax

        return softmax(self.predict_logits(texts))

    @classmethod
    def _parts(cls, bundle_dir: str | Path, fmt: str) -> tuple[dict[str, Any], Encoder, Path]:
        info = read_bundle(bundle_dir)
        if info["format"] != fmt:
            raise CheckpointError(f"{bundle_dir} holds a {info['format']} bundle, not {fmt}")
        try:
            encoder = encoder_from_dict(info["encoder"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{Path(bundle_dir) / BUNDLE_FILE}: {exc}") from None
        model_file = Path(bundle_dir) / str(info.get("model_file", MODEL_FILES[fmt]))
        if not model_file.is_file():
            raise CheckpointError(f"model file missing: {model_file}")
        return info, encoder, model_file


class OnnxClassifier(BundleClassifier):
    """An ONNX bundle run with ONNX Runtime (CPU unless ``device="cuda"``)."""

    format = "onnx"

    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", batch_size: int = 256, threads: int = 0
             ) -> "OnnxClassifier":
        info, encoder, model_file = cls._parts(bundle_dir, "onnx")
        session = _onnx_session(model_file, threads, "cuda" if device == "cuda" else "cpu")
        clf = cls(lambda ids, lengths: _run_onnx(session, ids, lengths), encoder, list(info["labels"]),
                  int(info["max_length"]), bool(info["model"].get("mask_padding", True)), batch_size, info)
        clf.session = session
        return clf


class TorchScriptClassifier(BundleClassifier):
    """A TorchScript bundle run with ``torch.jit.load``."""

    format = "torchscript"

    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", batch_size: int = 256
             ) -> "TorchScriptClassifier":
        from .runtime import resolve_device

        info, encoder, model_file = cls._parts(bundle_dir, "torchscript")
        dev = resolve_device(device)
        try:
            module = _jit_load(str(model_file), dev)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad model file
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot load the TorchScript model {model_file}: {reason}") from None
        module.eval()
        clf = cls(lambda ids, lengths: _run_torchscript(module, ids, lengths, dev), encoder, list(info["labels"]),
                  int(info["max_length"]), bool(info["model"].get("mask_padding", True)), batch_size, info)
        clf.module = module
        return clf


def load_bundle(bundle_dir: str | Path, device: str = "auto", batch_size: int = 256) -> BundleClassifier:
    """The classifier for a bundle folder, ONNX or TorchScript as its ``bundle.json`` says."""
    fmt = read_bundle(bundle_dir)["format"]
    if fmt == "onnx":
        return OnnxClassifier.load(bundle_dir, device=device, batch_size=batch_size)
    return TorchScriptClassifier.load(bundle_dir, device=device, batch_size=batch_size)
