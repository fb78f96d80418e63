"""The automatic recipe: settings chosen from the training data when no preset is given.

``plan_run(cfg, splits)`` is the one stage that decides a run under the automatic recipe, from
its loaded splits and before any split is encoded for training. It returns a ``Plan``: the
resolved config, the encoder (a subword vocabulary learned on the training texts), the log's
account of each choice, and autotune's search space. Inside it, in order:

1. ``apply_recipe``: from the texts and labels, every setting the user did not set explicitly
   (``cfg.explicit``): the encoder (never the paper's character alphabet for text it cannot
   spell), model and training settings that hold from 5k to 120k rows, class-imbalance handling;
2. the encoder, built on the training texts;
3. from the encoded lengths of (a sample of) the training texts: ``choose_max_length`` and
   ``fit_to_lengths`` (downsamplings of the conv path, the n-gram path's orders and size);
4. ``autotune.candidates``: the recipes worth trying against this one on validation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .baseline import spaced_script
from .encoders import PAPER_ALPHABET, Encoder, build_encoder
from .model_config import CHANNELS

if TYPE_CHECKING:
    from .autotune import Candidate
    from .config import RunConfig
    from .data import Splits

__all__ = ["Plan", "plan_run", "apply_recipe", "choose_max_length", "choose_downsamples", "choose_ngram_buckets",
           "fit_to_lengths", "char_coverage", "RECIPE_NOTE"]

RECIPE_NOTE = "automatic recipe (no --config given; `--config vdcnn9` etc. give the paper's recipes)"

_ALPHABET = frozenset(PAPER_ALPHABET)
_SAMPLE = 5000
LENGTH_SAMPLE = 20_000  # training texts encoded to measure the length distribution
# Settings the recipe decides only once the training texts are encoded (``fit_to_lengths``).
LENGTH_CHOICES = ("model.downsamples", "model.ngram_buckets", "model.ngram_orders")


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


LONG_CORPUS_CHARS = 10_000_000  # from here on a corpus of few, long documents gets a longer budget


def _settings(n_rows: int, imbalance: float, spaced: bool, chars: int = 0) -> dict[str, Any]:
    """The recipe as ``section.key -> value``: depth 9 on learned subwords, regularised for small data.

    Text without spaces (Chinese) is read a character per token, where replacing a quarter of the
    tokens destroys a 20-character title: it gets little noise and dropout (TNEWS underfit with them).
    """
    small = n_rows < 20_000
    # The time a pass takes grows with the text, not the row count: 11k long posts (22M
    # characters) take longer per epoch than 57k news snippets. The budget covers the whole run
    # (autotune, the linear path's regression, the network, the final scoring): under 10 minutes
    # below 20k rows, under 20 from there on.
    budget = "5m" if small and chars < LONG_CORPUS_CHARS else "9m" if small else "15m"
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
        "model.ngram_dim": 64,
        "model.ngram_buckets": 2 ** 16,  # refined from the encoded lengths (fit_to_lengths)
        "train.epochs": 30 if small else 20,
        "train.time_budget": budget,
        "train.linear_path": True,
    }
    if imbalance >= 4:
        settings["train.select_by"] = "macro_f1"
    return settings


def apply_recipe(cfg: Any, texts: Sequence[str], labels: np.ndarray, n_classes: int) -> list[str]:
    """Fill the settings the user left open from the training data; returns log lines."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = labels.sum(0) if labels.ndim == 2 else np.bincount(labels, minlength=n_classes)  # 2-D: multi-label
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) else 1.0
    chosen = _settings(len(texts), imbalance, spaced=spaced_script(texts), chars=sum(map(len, texts)))
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


def choose_downsamples(lengths: np.ndarray, kmax: int = 8, stages: int = 4) -> int:
    """How many stage transitions halve the length: as many as leave the median text ``kmax``
    positions for the final k-max pooling (the paper's three suit 1,024 characters; a 20-token
    question pooled three times keeps 3 positions, and the head would see mostly padding)."""
    median = float(np.median(lengths)) if len(lengths) else 1.0
    return int(np.clip(np.floor(np.log2(max(median, 1.0) / kmax)), 0, stages - 1))


def choose_ngram_buckets(lengths: np.ndarray, orders: int) -> int:
    """Hash buckets of the n-gram path: about one per distinct n-gram the training texts can hold,
    as a power of two between 2^15 and 2^18 (the table is updated densely at every step, so it
    is kept no larger than the data fills)."""
    ngrams = float(np.sum(lengths)) * orders
    return int(2 ** np.clip(np.ceil(np.log2(max(ngrams, 1.0) / 4)), 15, 18))


def fit_to_lengths(cfg: Any, lengths: np.ndarray, open_keys: set[str], encoder_name: str) -> list[str]:
    """Choices made from the encoded lengths of the training texts, for the keys the user left open:
    the downsamplings of the conv path and the n-gram path's orders and size. Returns log lines."""
    lines = []
    if "model.ngram_orders" in open_keys:
        # Subword ids are words or word pieces: fastText's word n-grams. Character and byte ids
        # are single characters: character n-grams, as fastText's subword features.
        cfg.set("model.ngram_orders", [1, 2, 3] if encoder_name == "subword" else [2, 3, 4, 5],
                source="automatic recipe")
    orders = len(cfg.model.get("ngram_orders", (1, 2, 3)))
    if "model.ngram_buckets" in open_keys:
        cfg.set("model.ngram_buckets", choose_ngram_buckets(lengths, orders), source="automatic recipe")
    if "model.downsamples" in open_keys:
        cfg.set("model.downsamples", choose_downsamples(lengths, int(cfg.model.get("kmax", 8)),
                                                          len(cfg.model.get("channels", CHANNELS))),
                source="automatic recipe")
    m = cfg.model
    median = float(np.median(lengths)) if len(lengths) else 0.0
    downs = m.get("downsamples")
    lines.append(f"  layout for a median of {median:.0f} ids: "
                 + ("every stage transition downsamples" if downs is None else f"{downs} downsampling(s) of the conv path")
                 + (f"; n-gram path: orders {', '.join(map(str, m.get('ngram_orders', (1, 2, 3))))}, "
                    f"{m['ngram_buckets']:,} hash buckets" if m.get("ngram_buckets") else "; no n-gram path"))
    return lines


@dataclass
class Plan:
    """What the automatic recipe decided for one run, before any split is encoded for training."""

    config: "RunConfig"  # the run's config with every open setting filled (``auto`` off)
    encoder: Encoder  # built on the training texts (a subword vocabulary is learned here)
    settings: dict[str, Any]  # ``section.key -> value`` for each setting the recipe chose
    search: list["Candidate"]  # autotune's candidates; the first is this plan itself
    lines: list[str]  # the training log's account of the choices


def plan_run(cfg: "RunConfig", splits: "Splits") -> Plan:
    """The automatic recipe for ``cfg``'s open settings on these splits (``cfg`` is not changed)."""
    from .autotune import candidates
    from .batching import encode_texts

    texts, labels = splits.train.texts, splits.train.labels
    open_keys = {k for k in LENGTH_CHOICES if k not in cfg.explicit}
    fit_length = "encoder.max_length" not in cfg.explicit
    resolved = copy.deepcopy(cfg)
    lines = apply_recipe(resolved, texts, labels, len(splits.label_names))
    encoder = build_encoder(resolved.encoder.name, texts, resolved.encoder.vocab_size)
    step = max(1, -(-len(texts) // LENGTH_SAMPLE))
    sample = list(texts[::step])
    lengths = encode_texts(encoder, sample, np.zeros(len(sample), dtype=np.int64), resolved.encoder.max_length,
                           use_cache=False).lengths
    if fit_length:
        resolved.set("encoder.max_length", choose_max_length(lengths), source="automatic recipe")
        whole = float(np.mean(lengths < resolved.encoder.max_length)) if len(lengths) else 1.0
        lines.append(f"  max length {resolved.encoder.max_length} ids ({whole:.0%} of the training texts fit whole"
                     + (f", measured on {len(sample):,} of them" if step > 1 else "") + ")")
    lines += fit_to_lengths(resolved, np.minimum(lengths, resolved.encoder.max_length), open_keys, encoder.name)
    resolved.validate()
    chosen = {key: _get(resolved, key) for key in sorted(resolved.explicit - cfg.explicit)}
    return Plan(config=resolved, encoder=encoder, settings=chosen, search=candidates(cfg, char_coverage(texts)),
                lines=lines)


def _get(cfg: "RunConfig", dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return cfg.model.get(key) if section == "model" else getattr(getattr(cfg, section), key)
