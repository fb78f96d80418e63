"""Text encoders: raw strings to padded id arrays plus true lengths.

Every encoder has one interface: ``encode_batch(texts, max_length)`` returns
``(ids, lengths)`` where ``ids`` is an ``(N, max_length)`` integer array padded
with ``pad_id`` (always 0) and ``lengths`` holds the number of real tokens of
each text (at most ``max_length``). ``to_dict()``/``encoder_from_dict()``
round-trip through JSON so an encoder travels inside a checkpoint.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError

PAD_ID = 0
UNK_ID = 1

# The VDCNN paper's alphabet: lower-case letters, digits, punctuation and space.
# Han ideographs (with extension A and compatibility forms), kana and CJK punctuation.
UNSPACED_SCRIPT = "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
PAPER_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{} "


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")


def _pack(pieces: Sequence[np.ndarray], max_length: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Place variable-length id arrays into one zero-padded matrix without a per-token loop."""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    lengths = np.minimum(lengths, max_length)
    ids = np.zeros((len(pieces), max_length), dtype=dtype)
    if len(pieces) and lengths.sum():
        flat = np.concatenate([p[:n] for p, n in zip(pieces, lengths)])
        rows = np.repeat(np.arange(len(pieces)), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(flat.size) - np.repeat(starts, lengths)
        ids[rows, cols] = flat
    return ids, lengths.astype(np.int32)


def _as_texts(texts: Iterable[Any]) -> list[str]:
    return ["" if t is None else (t if isinstance(t, str) else str(t)) for t in texts]


def _valid_unicode(texts: Iterable[str]) -> list[str]:
    """Replace lone surrogates, which the Rust tokenizer cannot take."""
    return [t.encode("utf-8", "replace").decode("utf-8") for t in texts]


class CharEncoder:
    """The paper's character alphabet, lower-cased; anything else maps to ``unk``."""

    name = "char"

    def __init__(self, alphabet: str = PAPER_ALPHABET, lowercase: bool = True) -> None:
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ConfigError("char alphabet must be a non-empty string of distinct characters")
        self.alphabet = alphabet
        self.lowercase = lowercase
        # Code points above the table size are unknown; the table covers the alphabet.
        size = max(ord(c) for c in alphabet) + 1
        self._table = np.full(size + 1, UNK_ID, dtype=np.uint8 if len(alphabet) < 254 else np.int16)
        for i, c in enumerate(alphabet):
            self._table[ord(c)] = i + 2

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 2

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def dtype(self) -> np.dtype:
        return self._table.dtype

    def encode_batch(self, texts: Iterable[Any], max_length: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        _check_max_length(max_length)
        texts = _as_texts(texts)
        if self.lowercase:
            texts = [t[:max_length].lower()[:max_length] for t in texts]
        else:
            texts = [t[:max_length] for t in texts]
        if not texts:
            return _pack([], max_length, self.dtype)
        joined = "".join(texts).encode("utf-32-le", "surrogatepass")
        codes = np.frombuffer(joined, dtype=np.uint32)
        codes = np.minimum(codes, len(self._table) - 1)
        flat = self._table[codes]
        # One ids row per text: split the flat code array at the text boundaries.
        bounds = np.cumsum([len(t) for t in texts])[:-1]
        return _pack(np.split(flat, bounds), max_length, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "alphabet": self.alphabet, "lowercase": self.lowercase}


class ByteEncoder:
    """UTF-8 bytes of any language; id = byte + 1 (0 is padding)."""

    name = "byte"

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int16)

    def encode_batch(self, texts: Iterable[Any], max_length: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        _check_max_length(max_length)
        # A UTF-8 character is at most 4 bytes, so cutting the string first bounds the work.
        data = [t[: max_length].encode("utf-8", "replace")[:max_length] for t in _as_texts(texts)]
        pieces = [np.frombuffer(b, dtype=np.uint8).astype(np.int16) + 1 for b in data]
        return _pack(pieces, max_length, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name}


class SubwordEncoder:
    """A byte-level BPE tokenizer (``tokenizers``) learned from the training texts."""

    name = "subword"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[Any], vocab_size: int = 8000, min_frequency: int = 2) -> "SubwordEncoder":
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if vocab_size < 300:
            raise ConfigError(f"subword vocab_size must be at least 300, got {vocab_size}")
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        # Scripts written without spaces (Chinese, Japanese) would reach BPE as one "word" per clause,
        # and it would learn whole frequent clauses as tokens: each such character is its own word.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(UNSPACED_SCRIPT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=True),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=["[PAD]", "[UNK]"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_valid_unicode(_as_texts(texts)), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.vocab_size < 2**15 else np.int32)

    def encode_batch(self, texts: Iterable[Any], max_length: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        _check_max_length(max_length)
        # Cut very long strings first: a token covers at least one character.
        texts = _valid_unicode(t[: max_length * 16] for t in _as_texts(texts))
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        pieces = [np.asarray(e.ids[:max_length], dtype=self.dtype) for e in encodings]
        return _pack(pieces, max_length, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "tokenizer": json.loads(self.tokenizer.to_str())}


Encoder = CharEncoder | ByteEncoder | SubwordEncoder

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "char": lambda texts=None, **kw: CharEncoder(),
    "byte": lambda texts=None, **kw: ByteEncoder(),
    "subword": lambda texts=None, vocab_size=8000, **kw: SubwordEncoder.train(texts or [], vocab_size=vocab_size),
}


def build_encoder(name: str, texts: Iterable[str] | None = None, vocab_size: int = 8000) -> Encoder:
    """Make the encoder called ``name``; ``subword`` learns its vocabulary from ``texts``."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "subword" and texts is None:
        raise ConfigError("the subword encoder needs training texts to learn its vocabulary")
    return ENCODERS[name](texts=texts, vocab_size=vocab_size)


def encoder_from_dict(d: dict[str, Any]) -> Encoder:
    """Rebuild an encoder saved with ``to_dict()``."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharEncoder(alphabet=d.get("alphabet", PAPER_ALPHABET), lowercase=d.get("lowercase", True))
    if kind == "byte":
        return ByteEncoder()
    if kind == "subword":
        from tokenizers import Tokenizer

        try:
            return SubwordEncoder(Tokenizer.from_str(json.dumps(d["tokenizer"])))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise ConfigError(f"the saved subword tokenizer cannot be read: {exc}") from None
    raise ConfigError(f"unknown encoder type {kind!r} in saved config")
