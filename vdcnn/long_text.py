"""Texts longer than a run's ``max_length``: cut them (``truncate``) or read them as overlapping windows.

With ``windows`` a text whose ids do not fit is read as windows of ``max_length`` ids, ``stride``
(half a window) apart, the last one ending at the text's end; the document's logits are the mean
of its windows' logits. The first window is the truncated text itself, scored exactly as with
``truncate`` (the same rows in the same batches); the further windows of all long texts are
scored after them in batches of their own. So texts that fit get bitwise the logits of
``truncate``. A text is read up to ``MAX_READ`` times ``max_length`` ids (127 windows), so one
huge line costs bounded time and memory; the rest of it is cut.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .encoders import Encoder, _as_texts
from .errors import ConfigError

MODES = ("truncate", "windows")
# A run whose training texts were cut more often than this reads long texts as windows by default.
WINDOWS_DEFAULT_SHARE = 0.10
# Windows read at most this many times max_length ids of one text.
MAX_READ = 64
# Long validation texts needed before they, not the share rule, decide a run's default.
MIN_LONG_VALIDATION = 20


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``MODES``, else a one-line error."""
    if mode not in MODES:
        raise ConfigError(f"long_text must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def long_text_stats(lengths: np.ndarray, max_length: int) -> dict[str, Any]:
    """The ``long_text`` entry of ``config.json``: the share of training texts that filled ``max_length``
    (were cut, or fit exactly) and the mode inference uses by default."""
    share = float(np.mean(np.asarray(lengths) >= max_length)) if len(lengths) else 0.0
    return {"train_share_cut": round(share, 6), "max_length": int(max_length),
            "default": "windows" if share > WINDOWS_DEFAULT_SHARE else "truncate"}


def default_mode(meta: dict[str, Any] | None) -> str:
    """The mode a run (``config.json``) or bundle (``bundle.json``) reads long texts with; runs trained
    before long-text support truncate, as they did."""
    entry = (meta or {}).get("long_text")
    mode = entry.get("default", "truncate") if isinstance(entry, dict) else "truncate"
    return mode if mode in MODES else "truncate"


def window_starts(n_ids: int, max_length: int, stride: int | None = None) -> list[int]:
    """Start of each window over ``n_ids`` ids: ``0, stride, 2 * stride, ...`` and ``n_ids - max_length``."""
    if n_ids <= max_length:
        return [0]
    stride = max(1, stride or max_length // 2)
    return [*range(0, n_ids - max_length, stride), n_ids - max_length]


def id_bound(text: str, max_length: int) -> int:
    """How many ids of ``text`` windows read: all (an encoder gives at most 4 per character), up to
    ``MAX_READ * max_length``."""
    return min(max(max_length + 1, 4 * len(text) + 4), MAX_READ * max_length)


def _all_ids(encoder: Encoder, text: str, max_length: int) -> np.ndarray:
    """The ids of ``text`` that windows read (every id, up to ``id_bound``)."""
    ids, lengths = encoder.encode_batch([text], id_bound(text, max_length))
    return ids[0, : int(lengths[0])]


def encode_documents(encoder: Encoder, texts: Sequence[Any], max_length: int, mode: str = "truncate"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, lengths, owners)``: row ``i < len(texts)`` is text ``i`` cut to ``max_length`` (what
    ``encode_batch`` gives); with ``windows`` the rows after them are the further windows of the
    long texts, ``owners[k]`` being the text of row ``len(texts) + k``."""
    check_mode(mode)
    texts = _as_texts(texts)
    ids, lengths = encoder.encode_batch(texts, max_length)
    owners: list[int] = []
    extra: list[np.ndarray] = []
    if mode == "windows":
        for i in np.flatnonzero(lengths >= max_length):
            full = _all_ids(encoder, texts[i], max_length)
            for start in window_starts(len(full), max_length)[1:]:
                extra.append(full[start:start + max_length])
                owners.append(int(i))
    if extra:
        ids = np.concatenate([ids, np.stack(extra).astype(ids.dtype)])
        lengths = np.concatenate([lengths, np.full(len(extra), max_length, dtype=lengths.dtype)])
    return ids, lengths, np.asarray(owners, dtype=np.int64)


def document_logits(run_rows: Callable[[np.ndarray, np.ndarray], np.ndarray], ids: np.ndarray,
                    lengths: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Logits per text from ``encode_documents`` rows: ``run_rows(ids, lengths)`` on the texts' own
    rows, then on the further windows, and each text's mean over its rows."""
    n = len(lengths) - len(owners)
    logits = run_rows(ids[:n], lengths[:n])
    if not len(owners):
        return logits
    return average_windows(np.concatenate([logits, run_rows(ids[n:], lengths[n:])]), n, owners)


def average_windows(logits: np.ndarray, n_texts: int, owners: np.ndarray) -> np.ndarray:
    """Logits ``(n_texts, classes)``: each text's mean over its rows (texts of one row unchanged)."""
    if not len(owners):
        return logits[:n_texts]
    sums = logits[:n_texts].astype(np.float64)
    np.add.at(sums, owners, logits[n_texts:])
    counts = 1 + np.bincount(owners, minlength=n_texts)
    return (sums / counts[:, None]).astype(logits.dtype)


def choose_on_validation(entry: dict[str, Any], encoder: Encoder, texts: Sequence[str], labels: np.ndarray,
                         run_rows: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, Any]:
    """``entry`` (``long_text_stats``) with its ``windows`` default checked on validation: it stays
    only if, on the validation texts longer than ``max_length``, windows are right at least as
    often as truncation (on 20 Newsgroups the headers at a post's start carry the class and the
    later windows dilute it). Fewer than ``MIN_LONG_VALIDATION`` such texts leave the share rule's
    choice. ``run_rows(ids, lengths)`` gives the trained model's logits."""
    if entry.get("default") != "windows":
        return entry
    max_length = int(entry["max_length"])
    ids, lengths, owners = encode_documents(encoder, texts, max_length, "windows")
    n = len(lengths) - len(owners)
    long = np.unique(owners)
    entry = {**entry, "validation": {"long_texts": int(len(long))}}
    if len(long) < MIN_LONG_VALIDATION:
        entry["validation"]["decided_by"] = f"the share rule (fewer than {MIN_LONG_VALIDATION} long validation texts)"
        return entry
    labels = np.asarray(labels)[long]
    first = run_rows(ids[long], lengths[long])
    position = np.full(n, -1, dtype=np.int64)
    position[long] = np.arange(len(long))
    windows = average_windows(np.concatenate([first, run_rows(ids[n:], lengths[n:])]), len(long), position[owners])
    truncate_acc = float(np.mean(first.argmax(1) == labels))
    windows_acc = float(np.mean(windows.argmax(1) == labels))
    entry["validation"].update({"truncate_accuracy": round(truncate_acc, 6), "windows_accuracy": round(windows_acc, 6),
                                "decided_by": "validation"})
    entry["default"] = "windows" if windows_acc >= truncate_acc else "truncate"
    return entry
