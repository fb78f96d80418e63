"""Prediction as a library: ``Classifier.load(run).predict(texts)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from .checkpoint import load_run
from .encoders import Encoder
from .evaluate import predict_logits, softmax
from .model import VDCNN, fold_batchnorm
from .errors import ConfigError
from .runtime import bf16_supported, tune_malloc
from .runtime import resolve_device

if TYPE_CHECKING:
    from .explain import Explanation


class TextClassifier:
    """What every classifier offers on top of its ``predict_proba``: top-k labels and streaming."""

    labels: list[str]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: Sequence[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``top_k`` (label, probability) pairs for each text, most likely first."""
        probs = self.predict_proba(texts)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [[(self.labels[j], float(p[j])) for j in row] for row, p in zip(top, probs)]

    def explain(self, texts: Sequence[str], target: str | None = None, method: str = "auto",
                steps: int = 32) -> list["Explanation"]:
        """Which characters drove each prediction: scored character spans (``vdcnn.explain``).

        ``target`` explains that label's probability instead of the predicted one; ``method``
        ``auto`` is integrated gradients for a run folder and occlusion for an export bundle.
        """
        from .explain import explain_texts

        return explain_texts(self, texts, target=target, method=method, steps=steps)

    def predict_stream(self, chunks: Iterable[Sequence[str]]) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Probabilities chunk by chunk, so memory stays bounded for input of any size."""
        for chunk in chunks:
            if len(chunk):
                yield chunk, self.predict_proba(chunk)


class Classifier(TextClassifier):
    """A trained model with its encoder and label names, ready to classify raw texts."""

    def __init__(self, model: VDCNN, encoder: Encoder, labels: list[str], max_length: int,
                 device: torch.device | str = "cpu", batch_size: int = 256, bf16: bool = False) -> None:
        self.model = model
        self.encoder = encoder
        self.labels = labels
        self.max_length = max_length
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model.to(self.device).eval()
        if bf16 and not bf16_supported(self.device.type):
            raise ConfigError(f"bf16 was asked for but {self.device.type} here has no native bf16 support")
        self.autocast = torch.bfloat16 if bf16 else None

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", batch_size: int = 256, fold_bn: bool = True,
             bf16: bool = False) -> "Classifier":
        """Load a run folder; BatchNorm is folded into the convolutions for speed.

        ``bf16`` runs in bfloat16 autocast where the hardware has it: faster, but
        probabilities then move by about 1e-3 and may depend on batch-mates.

        An export bundle folder (``vdcnn export``) gives an ``OnnxClassifier`` or
        ``TorchScriptClassifier`` with the same interface.
        """
        from .export import is_bundle, load_bundle

        if is_bundle(run_dir):
            return load_bundle(run_dir, device=device, batch_size=batch_size)  # type: ignore[return-value]
        tune_malloc()
        model, encoder, labels, meta = load_run(run_dir)
        if fold_bn:
            fold_batchnorm(model)
        max_length = int(meta.get("run", {}).get("encoder", {}).get("max_length", 1024))
        return cls(model, encoder, labels, max_length, resolve_device(device), batch_size, bf16)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(N, classes)`` in input order."""
        ids, lengths = self.encoder.encode_batch(texts, self.max_length)
        trim = self.model.config.mask_padding
        return softmax(predict_logits(self.model, ids, lengths, self.batch_size, self.device, trim, self.autocast))



def format_predictions(probs: np.ndarray, labels: Sequence[str], top_k: int = 1, fmt: str = "tsv") -> list[str]:
    """Output lines: ``label<TAB>prob`` (top-k pairs on one line) or a JSON object per text."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    lines = []
    for row, p in zip(top, probs):
        if fmt == "jsonl":
            obj: dict[str, Any] = {"label": labels[row[0]], "probability": round(float(p[row[0]]), 6),
                                   "probabilities": {name: round(float(v), 6) for name, v in zip(labels, p)}}
            if top_k > 1:
                obj["top_k"] = [[labels[j], round(float(p[j]), 6)] for j in row]
            lines.append(json.dumps(obj, ensure_ascii=False))
        else:
            lines.append("\t".join(f"{labels[j]}\t{p[j]:.4f}" for j in row))
    return lines
