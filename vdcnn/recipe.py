"""The automatic recipe: settings chosen from the training data when no preset is given.

``apply_recipe(cfg, train)`` looks at the training texts and labels and fills every setting the
user did not set explicitly (``cfg.explicit``): the encoder (never the paper's character alphabet
for text it cannot spell), the model and training settings that hold from 5k to 120k rows, and
the class-imbalance handling. ``choose_max_length`` then fits the maximum length to the encoded
length distribution. Each choice is returned as a line of text for the training log.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .baseline import spaced_script
from .encoders import PAPER_ALPHABET

__all__ = ["apply_recipe", "choose_max_length", "char_coverage", "RECIPE_NOTE"]

RECIPE_NOTE = "automatic recipe (no --config given; `--config vdcnn9` etc. give the paper's recipes)"

_ALPHABET = frozenset(PAPER_ALPHABET)
_SAMPLE = 5000


def char_coverage(texts: Sequence[str], sample: int = _SAMPLE) -> float:
    """Share of non-space characters (of up to ``sample`` texts) that the paper's alphabet spells."""
    step = max(1, len(texts) // sample)
    known = total = 0
    for t in texts[::step]:
        chars = [c for c in t.lower() if not c.isspace()]
        total += len(chars)
        known += sum(c in _ALPHABET for c in chars)
    return known / total if total else 1.0


def _subword_vocab(n_rows: int) -> int:
    """Larger vocabularies need more rows to learn their embeddings: 2k at 5k rows, 8k from 40k on."""
    return int(np.clip(round(n_rows / 5000) * 1000, 2000, 8000))


def _settings(n_rows: int, imbalance: float, spaced: bool) -> dict[str, Any]:
    """The recipe as ``section.key -> value``: depth 9 on learned subwords, regularised for small data.

    Text without spaces (Chinese) is read a character per token, where replacing a quarter of the
    tokens destroys a 20-character title: it gets little noise and dropout (TNEWS underfit with them).
    """
    small = n_rows < 20_000
    settings: dict[str, Any] = {
        "encoder.name": "subword",
        "encoder.vocab_size": _subword_vocab(n_rows),
        "model.depth": 9,
        "model.shortcut": False,
        "model.downsample": "max",
        "model.embedding_dim": 128,
        "model.fc_dims": [512],
        "model.dropout": 0.5 if spaced else 0.3,
        "train.optimizer": "adamw",
        "train.lr": 0.002,
        "train.weight_decay": 0.05,
        "train.schedule": "onecycle",
        "train.batch_size": 32 if small else 64,
        "train.label_smoothing": 0.1,
        "train.augment_noise": (0.15 if small else 0.25) if spaced else 0.05,
        "train.ema_decay": 0.998,
        "train.epochs": 30 if small else 20,
        "train.time_budget": "5m" if small else "12m",
    }
    if imbalance >= 4:
        settings["train.select_by"] = "macro_f1"
    return settings


def apply_recipe(cfg: Any, texts: Sequence[str], labels: np.ndarray, n_classes: int) -> list[str]:
    """Fill the settings the user left open from the training data; returns log lines."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else 1.0
    chosen = _settings(len(texts), imbalance, spaced=spaced_script(texts))
    for key, value in chosen.items():
        if key not in cfg.explicit:
            cfg.set(key, value, source="automatic recipe")
    cfg.auto = False
    cfg.validate()
    coverage = char_coverage(texts)
    t = cfg.train
    lines = [
        f"{RECIPE_NOTE}: {len(texts):,} training rows, {n_classes} classes (largest/smallest {imbalance:.1f}x)",
        f"  encoder {cfg.encoder.name}"
        + (f" ({cfg.encoder.vocab_size} BPE pieces learned from the training texts)" if cfg.encoder.name == "subword"
           else "")
        + f"; the paper's alphabet spells {coverage:.0%} of the characters"
        + ("" if coverage >= 0.9 else ", so the character encoder would read most of this text as unknown"),
        f"  depth {cfg.model.get('depth')}, {t.optimizer} lr {t.lr} ({t.schedule}), batch {t.batch_size}, "
        f"up to {t.epochs} epochs" + (f" within {t.time_budget}" if t.time_budget else "")
        + (", best epoch by macro-F1" if t.select_by == "macro_f1" else "")
        + (", balanced class weights" if t.class_weights == "balanced" else ""),
    ]
    return lines


def choose_max_length(lengths: np.ndarray, quantile: float = 0.98, multiple: int = 16,
                      lo: int = 32, hi: int = 1024) -> int:
    """A maximum length that keeps ``quantile`` of the texts whole, rounded up to ``multiple``."""
    if len(lengths) == 0:
        return lo
    q = float(np.quantile(lengths, quantile))
    return int(np.clip(-(-int(np.ceil(q)) // multiple) * multiple, lo, hi))
