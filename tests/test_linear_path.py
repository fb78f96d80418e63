"""The linear path: a logistic regression on the model's hashed n-grams, fitted after training."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.conftest import TINY, TOPICS, real_data_dir, write_topic_csv
from vdcnn.batching import encode_texts
from vdcnn.cli.main import app
from vdcnn.encoders import build_encoder
from vdcnn.linear_path import fit_linear_path, hashed_counts, orders_for, selection_score
from vdcnn.model import VDCNN, ModelConfig
from vdcnn.ngrams import LinearNgrams, hash_ngrams, occurrences


def _topic_rows(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` realistic news sentences per topic (the conftest's), shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, phrases in enumerate(TOPICS.values()):
        for _ in range(n):
            a, b = rng.choice(len(phrases), 2, replace=False)
            rows.append((f"{phrases[a].capitalize()}, and {phrases[b]}.", label))
    order = rng.permutation(len(rows))
    return [rows[i][0] for i in order], np.array([rows[i][1] for i in order])


def test_numpy_hash_is_the_models_hash():
    """The regression is fitted on the buckets the model will look up: same hash, same real n-grams."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 500, size=(7, 12))
    lengths = np.array([12, 1, 2, 5, 3, 12, 7])
    orders = (1, 2, 3)
    counts = hashed_counts(ids, lengths, orders, 1024).toarray()
    buckets, mask = hash_ngrams(torch.from_numpy(ids), torch.from_numpy(lengths), orders, 1024)
    expected = np.zeros((7, 1024))
    for r in range(7):
        np.add.at(expected[r], buckets[r][mask[r] > 0].numpy(), 1.0)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum(1).tolist() == [sum(max(0, n - k + 1) for k in orders) for n in lengths]


def test_occurrences_count_each_bucket_among_the_real_ngrams():
    """Per position, how many real n-grams of its text share its bucket (few buckets: many collisions)."""
    rng = np.random.default_rng(3)
    ids = torch.from_numpy(rng.integers(1, 6, size=(5, 30)))
    lengths = torch.tensor([30, 1, 0, 17, 9])
    hashed, mask = hash_ngrams(ids, lengths, (1, 2, 3), 16)
    got = occurrences(hashed, mask, 16)
    for r in range(5):
        real = hashed[r][mask[r] > 0].tolist()
        for p in range(hashed.size(1)):
            want = real.count(int(hashed[r, p])) if mask[r, p] > 0 else 1
            assert got[r, p] == want, (r, p)
    assert got[0].max() > 1  # the rows do repeat buckets


def _fit(network_val_logits=None, tf="log"):
    texts, labels = _topic_rows(60, seed=1)
    # texts that repeat their n-grams, so the term frequency matters
    texts = [t + " " + t.split(",")[0] if i % 2 else t for i, t in enumerate(texts)]
    encoder = build_encoder("subword", texts, 300)
    data = encode_texts(encoder, texts, labels, 64, use_cache=False)
    train, val = np.arange(0, 120), np.arange(120, 180)
    logits = (np.zeros((len(val), 3)) if network_val_logits is None else network_val_logits(labels[val]))
    fit = fit_linear_path(data.ids[train], data.lengths[train], labels[train], data.ids[val], data.lengths[val],
                          labels[val], logits, 3, orders_for("subword"), 4096, selection_score("accuracy"), tf=tf)
    return fit, data, labels, val


@pytest.mark.parametrize("tf", ["log", "count"])
def test_fitted_path_is_added_where_it_helps_and_computes_what_the_model_computes(tf):
    """A network that knows nothing (equal logits) gains from the path on validation: it is kept,
    and ``LinearNgrams`` loaded with it gives the logits the fit reports, row for row, with either
    term frequency (``count``: runs saved before sublinear tf)."""
    fit, data, labels, val = _fit(tf=tf)
    assert fit.kept and fit.report["weight"] > 0 and fit.tf == tf
    assert fit.report["val_network"] < 0.5 < fit.report["val_linear"] == pytest.approx(fit.report["val_together"])
    counts = hashed_counts(data.ids[val], data.lengths[val], fit.orders, fit.buckets)
    assert counts.max() > 1  # n-grams repeat within texts
    module = LinearNgrams(fit.buckets, fit.orders, 3, tf)
    with torch.no_grad():
        module.weight.weight.copy_(torch.from_numpy(fit.weight))
        module.bias.copy_(torch.from_numpy(fit.bias))
        module.idf.copy_(torch.from_numpy(fit.idf).unsqueeze(1))
        got = module(torch.from_numpy(data.ids[val]), torch.from_numpy(data.lengths[val])).numpy()
    np.testing.assert_allclose(got, fit.logits(data.ids[val], data.lengths[val]), rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == labels[val]).mean() == pytest.approx(fit.report["val_linear"])


def test_term_frequency_is_chosen_on_validation_where_ngrams_repeat():
    """Texts that repeat their n-grams: both term frequencies are scored at the chosen penalty and the
    better one is kept (ties: sublinear); texts that never repeat one read the same either way: one fit."""
    fit, *_ = _fit(tf=None)
    tried = fit.report["tf_tried"]
    assert set(tried) == {"log", "count"} and fit.tf == fit.report["tf"]
    assert tried[fit.tf] == max(tried.values()) and (fit.tf == "log" or tried["count"] > tried["log"])
    assert fit.report["val_linear"] == pytest.approx(tried[fit.tf])
    ids = np.arange(1, 1 + 40 * 6).reshape(40, 6)  # every id once: no n-gram repeats anywhere
    labels = np.arange(40) % 2
    once = fit_linear_path(ids[:30], np.full(30, 6), labels[:30], ids[30:], np.full(10, 6), labels[30:],
                           np.zeros((10, 2)), 2, (1, 2), 4096, selection_score("accuracy"))
    assert list(once.report["tf_tried"]) == ["log"]


def test_path_is_left_out_when_the_network_is_already_right():
    """A network already right on every validation text cannot be beaten there: weight 0, nothing added."""
    fit, *_ = _fit(lambda y: np.eye(3)[y] * 20.0)
    assert not fit.kept and fit.report["weight"] == 0.0 and fit.report["val_network"] == 1.0


def test_a_model_without_the_path_has_no_linear_weights():
    config = ModelConfig(vocab_size=50, num_classes=3, channels=(8, 16, 32, 64), fc_dims=(16,), embedding_dim=8)
    assert VDCNN(config).linear is None
    with_path = ModelConfig(**{**config.to_dict(), "linear_buckets": 256})
    model = VDCNN(with_path).eval()
    ids = torch.randint(1, 50, (4, 20))
    # zero weights, zero bias: the path adds nothing until it is fitted
    assert torch.equal(model(ids), model._network(ids, model._real_lengths(ids, None)))


def test_training_fits_the_path_into_the_saved_model_and_exports_it(tmp_path, runner):
    """`vdcnn train --linear-path`: config.json records the choice, the run folder loads with the path,
    and the ONNX and TorchScript bundles give the run's probabilities."""
    pytest.importorskip("onnxruntime")
    from tests.test_export import assert_parity
    from vdcnn.export import export_run
    from vdcnn.predict import Classifier

    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=40)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--max-length", "64", "--epochs",
                                 "1", "--batch-size", "16", "--lr", "0.0001", "--linear-path", "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    assert "linear path (logistic regression" in result.output
    meta = json.loads((out / "config.json").read_text())
    report = meta["linear_path"]
    assert {"C", "weight", "val_network", "val_linear", "val_together"} <= set(report)
    clf = Classifier.load(out, device="cpu")
    assert (clf.model.linear is not None) == (report["weight"] > 0) == (meta["model"]["linear_buckets"] > 0)
    # The closing lines give the saved model's validation accuracy (path included), not the network's epoch.
    saved = meta["results"]["val_acc"]
    assert abs(saved - (report["val_together"] if report["weight"] > 0 else report["val_network"])) < 0.05
    assert f"vdcnn {saved * 100:.2f} % vs TF-IDF+LR" in result.output
    if clf.model.linear is None:
        pytest.skip("the one-epoch network was already as good on validation: nothing to export")
    texts = ["The striker scored a late goal, and fans cheered.", "Shares fell after the bank cut its forecast."]
    expected = clf.predict_proba(texts)
    for fmt in ("onnx", "torchscript"):
        got = Classifier.load(export_run(out, fmt), device="cpu").predict_proba(texts)
        assert_parity(got, expected, allowed_fraction=0.0, what=fmt)
    # int8: the convolutions are quantized, the path's hashing, counting and lookups stay as they are
    int8 = Classifier.load(export_run(out, "onnx", tmp_path / "int8", quantize="int8"), device="cpu")
    assert int8.predict_proba(texts).argmax(1).tolist() == expected.argmax(1).tolist()


def test_linear_path_is_off_for_the_paper_recipes_and_on_for_the_automatic_one():
    from vdcnn.config import build_config
    from vdcnn.recipe import apply_recipe

    assert build_config("vdcnn9").train.linear_path is False
    cfg = build_config(None)
    texts, labels = _topic_rows(20, seed=2)
    apply_recipe(cfg, texts, labels, 3)
    assert cfg.train.linear_path is True


def test_real_trec_questions_gain_from_the_path():
    """On real TREC-6 questions, a regression on the encoder's id n-grams alone reaches what
    TF-IDF + LR reaches on words (both fitted on the same 4,000 training questions)."""
    root = real_data_dir()
    rows = list(csv.DictReader((root / "trec6" / "train.csv").open(encoding="utf-8")))
    text_key = next(k for k in rows[0] if k.lower() in ("text", "question", "sentence"))
    label_key = next(k for k in rows[0] if k != text_key)
    names = sorted({r[label_key] for r in rows})
    texts = [r[text_key] for r in rows]
    labels = np.array([names.index(r[label_key]) for r in rows])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    train, val = order[:4000], order[4000:4800]
    encoder = build_encoder("subword", [texts[i] for i in train], 2000)
    data = encode_texts(encoder, texts, labels, 64, use_cache=False)
    fit = fit_linear_path(data.ids[train], data.lengths[train], labels[train], data.ids[val], data.lengths[val],
                          labels[val], np.zeros((len(val), len(names))), len(names), orders_for("subword"), 2 ** 16,
                          selection_score("accuracy"))
    from vdcnn.baseline import fit_baseline

    baseline = fit_baseline([texts[i] for i in train], labels[train], len(names))
    tfidf = float((baseline.predict_proba([texts[i] for i in val]).argmax(1) == labels[val]).mean())
    assert fit.kept and fit.report["val_linear"] >= tfidf - 0.02, (fit.report, tfidf)


def test_multi_label_path_is_one_sigmoid_per_label():
    """Texts about one or two topics, labels as 0/1 columns: the path fits independent sigmoids,
    is kept over a network that knows nothing, and scores by micro-F1 at tuned thresholds."""
    rng = np.random.default_rng(3)
    topics = list(TOPICS.values())
    texts, labels = [], []
    for _ in range(240):
        chosen = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        texts.append(", and ".join(topics[t][int(rng.integers(5))] for t in chosen) + ".")
        row = np.zeros(3, dtype=np.int64)
        row[chosen] = 1
        labels.append(row)
    y = np.array(labels)
    encoder = build_encoder("subword", texts, 300)
    data = encode_texts(encoder, texts, np.zeros(len(texts), dtype=np.int64), 64, use_cache=False)
    train, val = np.arange(160), np.arange(160, 240)
    fit = fit_linear_path(data.ids[train], data.lengths[train], y[train], data.ids[val], data.lengths[val], y[val],
                          np.zeros((80, 3)), 3, orders_for("subword"), 4096, selection_score("accuracy", True))
    assert fit.kept and fit.report["val_linear"] > 0.9 > fit.report["val_network"]
    probs = 1 / (1 + np.exp(-fit.logits(data.ids[val], data.lengths[val])))
    # independent sigmoids: a two-topic text gets both labels above one half, not probabilities summing to one
    two = y[val].sum(1) == 2
    assert ((probs > 0.5) == y[val].astype(bool))[two].mean() > 0.8


@pytest.mark.parametrize("direction", ["up", "down"])
def test_penalty_search_goes_past_the_grid_while_an_end_wins(direction):
    """A validation score that keeps rising with the fit's confidence (large C) takes the search past
    the grid's top, to ``PENALTY_RANGE``'s end; one that keeps falling takes it down to its start;
    the chosen C is the end reached, and the report lists every C tried in order."""
    from vdcnn.linear_path import PENALTIES, PENALTY_RANGE

    texts, labels = _topic_rows(40, seed=2)
    encoder = build_encoder("subword", texts, 300)
    data = encode_texts(encoder, texts, labels, 48, use_cache=False)
    train, val = np.arange(0, 80), np.arange(80, 120)

    def confidence(_y, z):  # mean top-class margin: grows with C on separable data
        z = np.sort(np.asarray(z), 1)
        margin = float(np.mean(z[:, -1] - z[:, -2]))
        return margin if direction == "up" else -margin

    fit = fit_linear_path(data.ids[train], data.lengths[train], labels[train], data.ids[val], data.lengths[val],
                          labels[val], np.zeros((len(val), 3)), 3, orders_for("subword"), 4096, confidence)
    tried = [r["C"] for r in fit.report["tried"]]
    assert tried == sorted(tried) and set(PENALTIES) <= set(tried)
    end = PENALTY_RANGE[1] if direction == "up" else PENALTY_RANGE[0]
    assert fit.report["C"] == end and end in tried
    assert (max(tried) == PENALTIES[-1]) if direction == "down" else (min(tried) == PENALTIES[0])


def test_blend_weight_is_the_validation_nll_minimum_and_a_noise_path_is_left_out():
    """Single-label: the weight minimises the NLL of network + weight * path at its own temperature,
    and the path is added only if that beats the network's NLL; a path of pure noise never is.
    Multi-label keeps the selection score."""
    from vdcnn.calibration import calibrated_nll
    from vdcnn.linear_path import BLEND_WEIGHTS, _blend_weight

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    network, path, noise = (rng.normal(size=(600, 3)) for _ in range(3))
    network[np.arange(600), y] += 1.0
    path[np.arange(600), y] += 2.0  # a better, independent view: the sum is more likely than either
    score = selection_score("accuracy")
    blends = {w: score(y, network + w * path) for w in BLEND_WEIGHTS}
    weight, kept, losses = _blend_weight(blends, score(y, network), network, path, y, np.arange(3))
    expected = {w: calibrated_nll(network + w * path, y) for w in BLEND_WEIGHTS}
    assert kept and weight == min(expected, key=expected.get)
    assert losses[weight] == pytest.approx(expected[weight])
    assert losses[0.0] == pytest.approx(calibrated_nll(network, y)) and losses[weight] < losses[0.0]
    assert 0.5 < weight < 16  # neither end: the network still counts

    noise_blends = {w: score(y, network + w * noise) for w in BLEND_WEIGHTS}
    _, kept, losses = _blend_weight(noise_blends, score(y, network), network, noise, y, np.arange(3))
    assert not kept and min(losses[w] for w in BLEND_WEIGHTS) > losses[0.0]

    multi = (rng.random((600, 3)) < 0.3).astype(np.int64)
    weight, kept, losses = _blend_weight({0.25: 0.4, 1.0: 0.6, 4.0: 0.5}, 0.5, network, path, multi, np.arange(3))
    assert (weight, kept, losses) == (1.0, True, {})


@pytest.mark.parametrize("multi", [False, True])
def test_row_space_fit_is_the_feature_space_fit(multi):
    """The penalty search's fits in the row space (fewer texts than buckets) give the weights, logits
    and labels of the same regression solved over the buckets, warm starts included, for softmax and
    one-sigmoid-per-label fits alike; texts that repeat each other exactly still factor."""
    import scipy.sparse as sp

    from vdcnn.linear_path import _features, _in_row_space, _regression, inverse_frequencies, row_factor, term_frequencies

    texts, labels = _topic_rows(50, seed=5)
    texts += texts[:20]  # exact duplicates, as real corpora have (SMS Spam: hundreds)
    labels = np.concatenate([labels, labels[:20]])
    encoder = build_encoder("subword", texts, 300)
    data = encode_texts(encoder, texts, labels, 64, use_cache=False)
    counts = hashed_counts(data.ids, data.lengths, orders_for("subword"), 4096)
    idf, used = inverse_frequencies(counts)
    x = _features(term_frequencies(counts, "log"), idf, "log")[:, used].tocsr()
    xt = x.T.tocsr()
    y = np.eye(3, dtype=np.int64)[labels] if multi else labels
    assert _in_row_space(sp.csr_matrix((1822, 261931)), 20)  # 20 Newsgroups' search: the row space
    assert not _in_row_space(sp.csr_matrix((4906, 70612)), 6)  # TREC-6's questions: a pass over L would cost more
    assert not _in_row_space(sp.csr_matrix((9000, 10 ** 7)), 20)  # too many rows for a dense factor
    factor = row_factor(x)
    assert x.shape[0] < x.shape[1] and np.allclose(factor @ factor.T, (x @ x.T).toarray(), atol=1e-5)
    rows = space = None
    for C in (4.0, 64.0):  # the second warm-started from the first, as along the penalty path
        rows = _regression(x, xt, y, C, rows, factor=factor)
        space = _regression(x, xt, y, C, space)
        assert rows.rows is not None and space.rows is None
        np.testing.assert_allclose(rows.coef, space.coef, atol=2e-3)
        z_rows, z_space = np.asarray(x @ rows.coef) + rows.bias, np.asarray(x @ space.coef) + space.bias
        np.testing.assert_allclose(z_rows, z_space, atol=1e-2)
        assert np.array_equal(z_rows.argmax(1), z_space.argmax(1))
