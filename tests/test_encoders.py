"""Encoders: vectorised ids, lengths, odd inputs, save/load round trip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdcnn.encoders import PAPER_ALPHABET, ByteEncoder, CharEncoder, SubwordEncoder, build_encoder, encoder_from_dict
from vdcnn.errors import ConfigError

ODD_TEXTS = [
    "",
    "Hello, World!",
    "Zürich café – naïve façade",
    "東京の株価が上昇 📈🚀",
    "lone surrogate \ud800 here",
    "tabs\tand\nnewlines\r\x00nul\x07bell",
    " ".join(f"token{i}" for i in range(1000)),
]

CORPUS = [
    "Stocks rally as the central bank holds interest rates steady.",
    "The home side scored twice in the final ten minutes to win the cup.",
    "A new chip promises faster phones and longer battery life.",
    "Rebels and government forces agreed to a ceasefire after talks.",
] * 20


def all_encoders():
    return [CharEncoder(), ByteEncoder(), SubwordEncoder.train(CORPUS + ODD_TEXTS, vocab_size=400)]


def test_char_encoder_maps_the_paper_alphabet():
    enc = CharEncoder()
    assert enc.vocab_size == len(PAPER_ALPHABET) + 2 == 71
    ids, lengths = enc.encode_batch(["Abc 1!", "é"], 8)
    assert ids.dtype == np.uint8
    assert lengths.tolist() == [6, 1]
    expected = [PAPER_ALPHABET.index(c) + 2 for c in "abc 1!"]
    assert ids[0, :6].tolist() == expected and ids[0, 6:].tolist() == [0, 0]
    assert ids[1, 0] == 1  # unknown


def test_byte_encoder_is_utf8():
    ids, lengths = ByteEncoder().encode_batch(["é", "ab"], 4)
    assert ids[0, :2].tolist() == [0xC3 + 1, 0xA9 + 1]
    assert lengths.tolist() == [2, 2]


@pytest.mark.parametrize("enc", all_encoders(), ids=lambda e: e.name)
def test_odd_texts_encode_to_fixed_width(enc):
    ids, lengths = enc.encode_batch(ODD_TEXTS, 64)
    assert ids.shape == (len(ODD_TEXTS), 64)
    assert lengths[0] == 0 and (ids[0] == enc.pad_id).all()
    assert (lengths <= 64).all() and lengths[-1] == 64
    assert ids.max() < enc.vocab_size and ids.min() >= 0
    # Positions past each length are padding, positions before it are not.
    for row, n in zip(ids, lengths):
        assert (row[n:] == 0).all()
        assert (row[:n] != 0).all()


@pytest.mark.parametrize("enc", all_encoders(), ids=lambda e: e.name)
def test_save_load_round_trip_gives_identical_ids(enc):
    restored = encoder_from_dict(json.loads(json.dumps(enc.to_dict())))
    a = enc.encode_batch(ODD_TEXTS + CORPUS[:4], 128)
    b = restored.encode_batch(ODD_TEXTS + CORPUS[:4], 128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert restored.vocab_size == enc.vocab_size


def test_subword_learns_shorter_sequences_than_chars():
    enc = SubwordEncoder.train(CORPUS, vocab_size=400)
    _, sub = enc.encode_batch(CORPUS, 256)
    _, char = CharEncoder().encode_batch(CORPUS, 256)
    assert sub.mean() < char.mean() / 2


def test_bad_encoder_settings():
    with pytest.raises(ConfigError):
        build_encoder("wordpiece")
    with pytest.raises(ConfigError):
        CharEncoder().encode_batch(["a"], 0)
    with pytest.raises(ConfigError):
        encoder_from_dict({"type": "nope"})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=8), st.integers(1, 200))
def test_any_unicode_never_fails_and_keeps_width(texts, max_length):
    for enc in (CharEncoder(), ByteEncoder()):
        ids, lengths = enc.encode_batch(texts, max_length)
        assert ids.shape == (len(texts), max_length)
        assert (lengths <= max_length).all()


def _ag_news_test_texts():
    root = os.environ.get("VDCNN_DATA_DIR")
    if not root or not os.path.exists(os.path.join(root, "ag_news", "test.csv.gz")):
        pytest.skip("VDCNN_DATA_DIR with ag_news/test.csv.gz is not available")
    from vdcnn.data import load_split

    return load_split("ag_news", "test").texts


@pytest.mark.parametrize("name", ["char", "byte"])
def test_encoding_ag_news_test_split(name):
    texts = _ag_news_test_texts()
    ids, lengths = build_encoder(name).encode_batch(texts, 1024)
    assert ids.shape == (7600, 1024)
    assert 200 < lengths.mean() < 260  # AG News averages about 235 characters
    assert lengths.max() <= 1024 and lengths.min() > 0


def test_encoding_cache_key_changes_with_the_encoder_implementation(tmp_path, monkeypatch):
    """A cached encoding never outlives the encoder code that made it (ENCODING_VERSION is in the key)."""
    import numpy as np

    from vdcnn import batching
    from vdcnn.encoders import CharEncoder

    monkeypatch.setenv("VDCNN_CACHE", str(tmp_path))
    texts, labels = ["the striker scored", "shares fell"], np.array([0, 1])
    first = batching.encode_texts(CharEncoder(), texts, labels, 32)
    batching.encode_texts(CharEncoder(), texts, labels, 32)
    assert len(list(tmp_path.glob("*.npz"))) == 1  # same code, same key: read from the cache
    monkeypatch.setattr(batching, "ENCODING_VERSION", batching.ENCODING_VERSION + 1)
    again = batching.encode_texts(CharEncoder(), texts, labels, 32)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and np.array_equal(first.ids, again.ids)
