"""Trained classifiers ready for raw texts: a run folder (PyTorch) or an export bundle (ONNX, TorchScript).

``load_classifier(path)`` (or ``Classifier.load``) gives the right kind for a folder; all
share ``TextClassifier``'s interface: ``predict_proba``, ``predict`` (top-k) and
``predict_stream`` (bounded memory). Export bundles (their layout: ``vdcnn.export``) are
folders holding ``bundle.json`` next to ``model.onnx`` or ``model.pt``.

Probabilities are calibrated: the logits are divided by the temperature fitted after training
(``vdcnn.calibration``; 1 for runs without one). Texts longer than ``max_length`` are cut or read
as overlapping windows (``long_text``, ``vdcnn.long_text``); the default is the run's.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .batching import iterate_arrays
from .calibration import TopLabelMap, calibrated_softmax, softmax, temperature_of, top_label_of
from .encoders import Encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError
from .fileio import first_line, read_versioned_json
from .long_text import check_mode, default_mode, document_logits, encode_documents
from .runtime import bf16_supported, resolve_device

# torch is imported where a run folder or a TorchScript bundle needs it: an ONNX bundle predicts
# without it (start-up: about 0.3 s for onnxruntime against 2 s for torch).
if TYPE_CHECKING:
    import torch

    from .explain import Explanation
    from .model import VDCNN

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
FORMATS = tuple(MODEL_FILES)
OUTPUT_NAMES = ["logits"]
DEFAULT_MAX_LENGTH = 1024


class TextClassifier:
    """What every classifier offers on top of its ``predict_logits``: calibrated probabilities,
    top-k labels and streaming.

    ``temperature`` divides the logits before the softmax; ``long_text`` (``truncate`` or
    ``windows``) is how texts longer than ``max_length`` are read unless a call says otherwise.
    """

    labels: list[str]
    temperature: float = 1.0
    top_label: "TopLabelMap | None" = None  # the top-label map after the temperature (vdcnn.calibration)
    long_text: str = "truncate"
    # A multi-label model (vdcnn.multilabel.attach): sigmoid probabilities, per-label Platt scaling and thresholds.
    multi_label: bool = False
    thresholds: np.ndarray | None = None
    platt: tuple[np.ndarray, np.ndarray] | None = None
    at_least_one: bool = True

    def predict_logits(self, texts: Sequence[str], long_text: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, texts: Sequence[str], long_text: str | None = None, calibrated: bool = True
                      ) -> np.ndarray:
        """Class probabilities ``(N, classes)`` in input order; ``calibrated=False`` gives the raw softmax
        (a multi-label model: one sigmoid probability per label)."""
        return self.probabilities(self.predict_logits(texts, long_text), calibrated)

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """The probabilities of ``logits``: softmax over temperature, or per-label sigmoid when multi-label."""
        if self.multi_label:
            from .multilabel import sigmoid_proba

            return sigmoid_proba(logits, self.platt if calibrated else None)
        if not calibrated:
            return softmax(logits)
        return calibrated_softmax(logits, self.temperature, self.top_label)

    def predict_proba_raw_and_calibrated(self, texts: Sequence[str], long_text: str | None = None
                                         ) -> tuple[np.ndarray, np.ndarray]:
        """Raw and calibrated probabilities from one pass over the texts (for calibration reports)."""
        logits = self.predict_logits(texts, long_text)
        return self.probabilities(logits, False), self.probabilities(logits)

    def predict(self, texts: Sequence[str], top_k: int = 1, long_text: str | None = None
                ) -> list[list[tuple[str, float]]]:
        """The ``top_k`` (label, probability) pairs for each text, most likely first."""
        probs = self.predict_proba(texts, long_text)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [[(self.labels[j], float(p[j])) for j in row] for row, p in zip(top, probs)]

    def predict_labels(self, texts: Sequence[str], long_text: str | None = None) -> list[list[tuple[str, float]]]:
        """A multi-label model's labels of each text: every label at or above its threshold, most probable
        first (the top label when none passes); a single-label model's top label."""
        if not self.multi_label:
            return self.predict(texts, 1, long_text)
        from .multilabel import decide

        probs = self.predict_proba(texts, long_text)
        chosen = decide(probs, self.thresholds, self.at_least_one)
        return [[(self.labels[j], float(p[j])) for j in np.argsort(-p, kind="stable") if row[j]]
                for p, row in zip(probs, chosen)]

    def predict_stream(self, chunks: Iterable[Sequence[str]]) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Probabilities chunk by chunk, so memory stays bounded for input of any size."""
        for chunk in chunks:
            if len(chunk):
                yield chunk, self.predict_proba(chunk)

    def explain(self, texts: Sequence[str], target: str | None = None, method: str = "auto",
                steps: int = 32, long_text: str | None = None) -> list[Explanation]:
        """Which characters drove each prediction: scored character spans (``vdcnn.explain``).

        ``target`` explains that label's probability instead of the predicted one; ``method``
        ``auto`` is integrated gradients for a run folder and occlusion for an export bundle.
        """
        from .explain import explain_texts

        return explain_texts(self, texts, target=target, method=method, steps=steps, long_text=long_text)


class Classifier(TextClassifier):
    """A trained model with its encoder and label names, ready to classify raw texts."""

    def __init__(self, model: VDCNN, encoder: Encoder, labels: list[str], max_length: int,
                 device: torch.device | str = "cpu", batch_size: int = 256, bf16: bool = False,
                 temperature: float = 1.0, long_text: str = "truncate") -> None:
        self.model = model
        self.encoder = encoder
        self.labels = labels
        self.max_length = max_length
        self.temperature = temperature
        self.long_text = check_mode(long_text)
        import torch

        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model.to(self.device).eval()
        if bf16 and not bf16_supported(self.device.type):
            raise ConfigError(f"bf16 was asked for but {self.device.type} here has no native bf16 support")
        self.autocast = torch.bfloat16 if bf16 else None
        self._predict_model = self.model  # bf16: a copy holding bf16 weights; explain keeps the float32 model
        if bf16:
            from .model import cast_network

            self._predict_model = cast_network(self.model, torch.bfloat16)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", batch_size: int = 256, fold_bn: bool = True,
             bf16: bool = False, long_text: str | None = None) -> TextClassifier:
        """Load a run folder; BatchNorm is folded into the convolutions for speed.

        ``bf16`` runs in bfloat16 autocast where the hardware has it: faster, but
        probabilities then move by about 1e-3 and may depend on batch-mates.
        ``long_text`` overrides the run's default way of reading texts longer than ``max_length``.

        An export bundle folder (``vdcnn export``) gives an ``OnnxClassifier`` or
        ``TorchScriptClassifier`` with the same interface.
        """
        if long_text is not None:
            check_mode(long_text)
        if is_bundle(path):
            return load_bundle(path, device=device, batch_size=batch_size, long_text=long_text)
        from .checkpoint import load_run
        from .model import fold_batchnorm
        from .multilabel import attach

        model, encoder, labels, meta = load_run(path)
        if fold_bn:
            fold_batchnorm(model)
        classifier = cls(model, encoder, labels, run_max_length(meta), resolve_device(device), batch_size, bf16,
                         temperature_of(meta), long_text or default_mode(meta))
        classifier.top_label = top_label_of(meta)
        return attach(classifier, meta)

    def predict_logits(self, texts: Sequence[str], long_text: str | None = None) -> np.ndarray:
        """Logits ``(N, classes)`` in input order (a long text's: the mean of its windows' with ``windows``)."""
        from .evaluate import predict_logits

        ids, lengths, owners = encode_documents(self.encoder, texts, self.max_length, long_text or self.long_text)
        trim = self.model.config.mask_padding
        return document_logits(lambda x, n: predict_logits(self._predict_model, x, n, self.batch_size, self.device, trim,
                                                            self.autocast), ids, lengths, owners)


def load_classifier(path: str | Path, device: str = "auto", batch_size: int = 256, bf16: bool = False,
                    long_text: str | None = None) -> TextClassifier:
    """The classifier for a run folder or an export bundle folder."""
    return Classifier.load(path, device=device, batch_size=batch_size, bf16=bf16, long_text=long_text)


class EnsembleClassifier(TextClassifier):
    """Several classifiers of the same labels as one: the mean of their (calibrated) probabilities.

    Members may differ in encoder (characters beside subwords), depth or backend; each reads long
    texts its own way unless a call gives ``long_text``.
    """

    def __init__(self, members: Sequence[TextClassifier], names: Sequence[str] | None = None) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one classifier")
        names = list(names or [f"member {i + 1}" for i in range(len(members))])
        for member, name in zip(members[1:], names[1:]):
            if list(member.labels) != list(members[0].labels):
                raise ConfigError(f"{name} has labels {list(member.labels)}, {names[0]} has "
                                  f"{list(members[0].labels)}: an ensemble needs the same labels in the same order")
        self.members = list(members)
        self.labels = list(members[0].labels)
        from .multilabel import ensemble_settings

        ensemble_settings(self, self.members)  # multi-label members: the mean of their thresholds

    def predict_proba(self, texts: Sequence[str], long_text: str | None = None, calibrated: bool = True
                      ) -> np.ndarray:
        return np.mean([m.predict_proba(texts, long_text, calibrated) for m in self.members], axis=0)

    def predict_proba_raw_and_calibrated(self, texts: Sequence[str], long_text: str | None = None
                                         ) -> tuple[np.ndarray, np.ndarray]:
        pairs = [m.predict_proba_raw_and_calibrated(texts, long_text) for m in self.members]
        return np.mean([p[0] for p in pairs], axis=0), np.mean([p[1] for p in pairs], axis=0)


def load_ensemble(paths: Sequence[str | Path], device: str = "auto", batch_size: int = 256, bf16: bool = False,
                  long_text: str | None = None) -> TextClassifier:
    """One classifier for one path; the mean of several (run folders or bundles, same labels)."""
    members = [load_classifier(p, device=device, batch_size=batch_size, bf16=bf16, long_text=long_text)
               for p in paths]
    return members[0] if len(members) == 1 else EnsembleClassifier(members, [str(p) for p in paths])


def run_max_length(meta: dict[str, Any]) -> int:
    """The encoder length a run was trained with (``config.json``)."""
    return int(meta.get("run", {}).get("encoder", {}).get("max_length", DEFAULT_MAX_LENGTH))


# --- export bundles ------------------------------------------------------------------------


def is_bundle(path: str | Path) -> bool:
    """True for a folder holding ``bundle.json`` (an exported model), not a run folder."""
    return (Path(path) / BUNDLE_FILE).is_file()


def read_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """``bundle.json`` of a bundle folder, checked for format and version."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / BUNDLE_FILE
    if not path.is_file():
        raise CheckpointError(f"{bundle_dir} is not an export bundle: {BUNDLE_FILE} is missing")
    info = read_versioned_json(path, "bundle description", "bundle format version", BUNDLE_FORMAT_VERSION,
                               ("encoder", "labels", "max_length", "model"))
    if info.get("format") not in FORMATS:
        raise CheckpointError(f"{path}: unknown bundle format {info.get('format')!r}")
    return info


def onnx_session(model: str | Path | bytes, threads: int = 0, device: str = "cpu") -> Any:
    """An ONNX Runtime session for a model file or its bytes (CPU unless ``device="cuda"``)."""
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
        name = "" if isinstance(model, bytes) else model
        raise CheckpointError(f"cannot load the ONNX model {name}: {first_line(exc, 160)}") from None


def run_onnx(session: Any, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Logits of an ONNX session for ``(ids, lengths)`` arrays."""
    # A model that ignores lengths (mask_padding off) has no lengths input.
    names = {i.name for i in session.get_inputs()}
    feed = {"ids": np.ascontiguousarray(ids, dtype=np.int64)}
    if "lengths" in names:
        feed["lengths"] = np.ascontiguousarray(lengths, dtype=np.int64)
    return session.run(OUTPUT_NAMES, feed)[0]


def jit_load(source: Any, device: torch.device) -> Any:
    """``torch.jit.load`` without its deprecation chatter."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(source, map_location=device)


def run_torchscript(module: Any, ids: np.ndarray, lengths: np.ndarray, device: torch.device) -> np.ndarray:
    """Logits of a TorchScript module for ``(ids, lengths)`` arrays."""
    import torch

    with torch.inference_mode():
        x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
        n = torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=device)
        return module(x, n).float().cpu().numpy()


class BundleClassifier(TextClassifier):
    """An exported model with its encoder and label names; the interface of ``Classifier``."""

    format = ""

    def __init__(self, run: Callable[[np.ndarray, np.ndarray], np.ndarray], encoder: Encoder, labels: list[str],
                 max_length: int, mask_padding: bool = True, batch_size: int = 256,
                 info: dict[str, Any] | None = None, long_text: str | None = None) -> None:
        self._run = run
        self.encoder = encoder
        self.labels = labels
        self.max_length = max_length
        self.mask_padding = mask_padding
        self.batch_size = batch_size
        self.info = info or {}
        self.precision = str(self.info.get("precision", "fp32"))  # int8 for a quantized ONNX bundle
        self.temperature = temperature_of(self.info)
        self.top_label = top_label_of(self.info)
        self.long_text = check_mode(long_text or default_mode(self.info))
        from .multilabel import attach

        attach(self, self.info)

    def predict_logits(self, texts: Sequence[str], long_text: str | None = None) -> np.ndarray:
        """Logits ``(N, classes)`` in input order; batches run in length order, trimmed."""
        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids, lengths, owners = encode_documents(self.encoder, texts, self.max_length, long_text or self.long_text)
        return document_logits(self._run_rows, ids, lengths, owners)

    def _run_rows(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = np.zeros((len(lengths), len(self.labels)), dtype=np.float32)
        for index, x, n in iterate_arrays(ids, lengths, self.batch_size, self.mask_padding):
            out[index] = self._run(x, n)[: len(index)]
        return out

    @classmethod
    def _parts(cls, bundle_dir: str | Path) -> tuple[dict[str, Any], Encoder, Path]:
        info = read_bundle(bundle_dir)
        if info["format"] != cls.format:
            raise CheckpointError(f"{bundle_dir} holds a {info['format']} bundle, not {cls.format}")
        try:
            encoder = encoder_from_dict(info["encoder"])
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"{Path(bundle_dir) / BUNDLE_FILE}: {exc}") from None
        model_file = Path(bundle_dir) / str(info.get("model_file", MODEL_FILES[cls.format]))
        if not model_file.is_file():
            raise CheckpointError(f"model file missing: {model_file}")
        return info, encoder, model_file

    @classmethod
    def _from_parts(cls, run: Callable[[np.ndarray, np.ndarray], np.ndarray], encoder: Encoder,
                    info: dict[str, Any], batch_size: int, long_text: str | None = None) -> Any:
        try:
            return cls(run, encoder, list(info["labels"]), int(info["max_length"]),
                       bool(info["model"].get("mask_padding", True)), batch_size, info, long_text)
        except ConfigError as exc:
            if long_text is not None:
                raise
            raise CheckpointError(f"{BUNDLE_FILE}: {exc}") from None


class OnnxClassifier(BundleClassifier):
    """An ONNX bundle run with ONNX Runtime (CPU unless ``device="cuda"``)."""

    format = "onnx"

    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", batch_size: int = 256, threads: int = 0,
             long_text: str | None = None) -> "OnnxClassifier":
        info, encoder, model_file = cls._parts(bundle_dir)
        session = onnx_session(model_file, threads, "cuda" if device == "cuda" else "cpu")
        clf = cls._from_parts(lambda ids, lengths: run_onnx(session, ids, lengths), encoder, info, batch_size,
                              long_text)
        clf.session = session
        return clf


class TorchScriptClassifier(BundleClassifier):
    """A TorchScript bundle run with ``torch.jit.load``."""

    format = "torchscript"

    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", batch_size: int = 256,
             long_text: str | None = None) -> "TorchScriptClassifier":
        info, encoder, model_file = cls._parts(bundle_dir)
        dev = resolve_device(device)
        try:
            module = jit_load(str(model_file), dev)
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad model file
            raise CheckpointError(f"cannot load the TorchScript model {model_file}: {first_line(exc, 160)}") from None
        module.eval()
        clf = cls._from_parts(lambda ids, lengths: run_torchscript(module, ids, lengths, dev), encoder, info,
                              batch_size, long_text)
        clf.module = module
        return clf


def load_bundle(bundle_dir: str | Path, device: str = "auto", batch_size: int = 256, long_text: str | None = None
                ) -> BundleClassifier:
    """The classifier for a bundle folder, ONNX or TorchScript as its ``bundle.json`` says."""
    fmt = read_bundle(bundle_dir)["format"]
    kind = OnnxClassifier if fmt == "onnx" else TorchScriptClassifier
    return kind.load(bundle_dir, device=device, batch_size=batch_size, long_text=long_text)
