"""Explanations: completeness of integrated gradients, character spans for every encoder,
the JSON schema, HTML escaping, the pass budget, and bundles (occlusion)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vdcnn.cli.main import app
from tests.conftest import TOPICS
from vdcnn.encoders import ByteEncoder, CharEncoder, SubwordEncoder
from vdcnn.explain import render_html, spans_from_tokens, token_offsets
from vdcnn.model import VDCNN, ModelConfig
from vdcnn.predict import Classifier

PHRASES = [p for ps in TOPICS.values() for p in ps]
# Multi-byte UTF-8, a character whose lower case is two characters (İ), a ligature NFKC
# expands (ﬁ), an emoji outside the BMP, and punctuation.
TRICKY = ["The striker scored a late goal.", "İstanbul café: 日本語 ﬁnal 🙂 <b>&</b>", "", "z",
          "Shares fell after the bank cut its forecast. " * 4]
MAX_LENGTH = 64


def _encoder(name: str):
    if name == "char":
        return CharEncoder()
    if name == "byte":
        return ByteEncoder()
    return SubwordEncoder.train(PHRASES * 5 + TRICKY, vocab_size=300)


def _random_classifier(encoder_name: str, seed: int = 0, head_scale: float = 3.0) -> Classifier:
    """Random weights with a head scaled up so probabilities are far from uniform (a
    near-linear regime would make completeness trivially true)."""
    torch.manual_seed(seed)
    encoder = _encoder(encoder_name)
    config = ModelConfig(vocab_size=encoder.vocab_size, num_classes=3, depth=9, channels=(8, 16, 32, 64),
                         fc_dims=(32,), embedding_dim=8)
    model = VDCNN(config)
    with torch.no_grad():
        model.embedding.weight[1:].normal_(0, 1.0)
        model.head[-1].weight.normal_(0, head_scale / 32 ** 0.5)
    return Classifier(model, encoder, ["sports", "tech", "business"], MAX_LENGTH, batch_size=64)


def _check_tiling(spans, text: str) -> None:
    assert all(s.end > s.start for s in spans)
    assert [s.start for s in spans] == [0] + [s.end for s in spans[:-1]] if text else spans == []
    assert (spans[-1].end if spans else 0) == len(text)


ENCODERS = ["char", "byte", "subword"]


@pytest.mark.parametrize("encoder_name", ENCODERS)
def test_integrated_gradients_add_up_to_the_probability_change(encoder_name):
    clf = _random_classifier(encoder_name)
    texts = PHRASES[:6] + TRICKY[:2]
    explanations = clf.explain(texts)
    moved = 0
    for e in explanations:
        change = e.target_probability - e.baseline_probability
        total = sum(s.score for s in e.spans)
        moved += abs(change) > 0.05
        # 32-step midpoint rule on a piecewise-linear net: measured error < 1 % of the change here.
        assert abs(total - change) <= 0.02 * abs(change) + 2e-3, (e.text, total, change)
    assert moved >= len(texts) // 2  # the check has teeth: most texts move the probability


def test_completeness_on_a_trained_run(tiny_run):
    """A trained net's gradient jumps more along the path: the 32-point midpoint rule then
    misses by up to ~0.05 of probability (measured: mean 0.015, max 0.047 on these texts),
    still small next to the changes it splits up (mean ~0.25)."""
    clf = Classifier.load(tiny_run)
    errors, changes = [], []
    for e in clf.explain(PHRASES + ["The team won the final, and oil prices rose."]):
        changes.append(abs(e.target_probability - e.baseline_probability))
        errors.append(abs(sum(s.score for s in e.spans) - (e.target_probability - e.baseline_probability)))
    assert max(errors) <= 0.06, errors
    assert np.mean(errors) <= 0.15 * np.mean(changes), (np.mean(errors), np.mean(changes))


@pytest.mark.parametrize("encoder_name", ENCODERS)
def test_spans_tile_the_text_and_sum_the_id_scores(encoder_name):
    encoder = _encoder(encoder_name)
    for text in TRICKY:
        offsets, truncated = token_offsets(encoder, text, MAX_LENGTH)
        _, lengths = encoder.encode_batch([text], MAX_LENGTH)
        assert len(offsets) == lengths[0]  # one offset per id the model reads
        scores = np.arange(1.0, len(offsets) + 1)
        spans, truncated_at = spans_from_tokens(offsets, scores, len(text), truncated)
        _check_tiling(spans, text)
        assert sum(s.score for s in spans) == pytest.approx(scores.sum())
        assert (truncated_at is not None) == (len(text) > MAX_LENGTH)
        if truncated_at is not None:
            assert spans[-1].start == truncated_at and spans[-1].score == 0.0


@pytest.mark.parametrize("encoder_name", ["char", "byte"])
def test_char_and_byte_ids_map_to_their_own_characters(encoder_name):
    encoder = _encoder(encoder_name)
    text = TRICKY[1]
    ids, lengths = encoder.encode_batch([text], MAX_LENGTH)
    offsets, _ = token_offsets(encoder, text, MAX_LENGTH)
    for i, ch in enumerate(text):
        own = [ids[0, j] for j, (a, _) in enumerate(offsets) if a == i]
        alone, n = encoder.encode_batch([ch], 8)
        assert own == list(alone[0, :n[0]]), (ch, own)


def test_subword_spans_hold_the_text_of_their_tokens():
    encoder = _encoder("subword")
    text = TRICKY[1] + " " + PHRASES[0]
    ids, _ = encoder.encode_batch([text], MAX_LENGTH)
    offsets, _ = token_offsets(encoder, text, MAX_LENGTH)
    spans, _ = spans_from_tokens(offsets, np.zeros(len(offsets)), len(text))
    normalize = encoder.tokenizer.normalizer.normalize_str
    for span in spans:
        members = [int(ids[0, j]) for j, (a, b) in enumerate(offsets) if span.start <= a < span.end]
        decoded = encoder.tokenizer.decode(members)
        assert decoded.strip() == normalize(text[span.start:span.end]).strip(), (span, decoded)


@pytest.mark.parametrize("encoder_name", ENCODERS)
def test_only_the_characters_whose_embedding_differs_from_padding_get_a_score(encoder_name):
    """Every embedding but one id's is set to the padding vector, so integrated gradients must
    give zero to all ids but that one: the scored spans must be exactly where it occurs."""
    clf = _random_classifier(encoder_name, seed=1)
    text = "İİ the goal é 日 then the goal é once"
    if encoder_name == "char":
        needle, chosen = "g", clf.encoder.encode_batch(["g"], 4)[0][0, 0]
    elif encoder_name == "byte":
        needle, chosen = "é", clf.encoder.encode_batch(["é"], 4)[0][0, 1]  # the second byte of é
    else:
        needle, chosen = " goal", clf.encoder.tokenizer.encode(" goal", add_special_tokens=False).ids[-1]
    with torch.no_grad():
        weight = clf.model.embedding.weight
        kept = weight[chosen].clone()
        weight.zero_()
        weight[chosen] = kept
    (e,) = clf.explain([text])
    scored = [(s.start, s.end) for s in e.spans if abs(s.score) > 1e-9]
    starts = [i for i in range(len(text)) if text.startswith(needle, i)]
    assert len(scored) == len(starts) == 2
    for (a, b), start in zip(scored, starts):
        assert start <= a < b <= start + len(needle) + (1 if encoder_name == "subword" else 0)
        assert text[a:b].strip() and text[a:b] in needle


def test_a_text_costs_at_most_50_forward_rows(tiny_run):
    clf = Classifier.load(tiny_run)
    rows = []
    handle = clf.model.embedding.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    try:
        clf.explain(PHRASES[:5], method="integrated_gradients")
        ig_rows = sum(rows)
        rows.clear()
        clf.explain(PHRASES[:5], method="occlusion")
        occlusion_rows = sum(rows)
    finally:
        handle.remove()
    assert ig_rows <= 50 * 5 and occlusion_rows <= 50 * 5, (ig_rows, occlusion_rows)


def test_target_explains_the_chosen_label(tiny_run):
    clf = Classifier.load(tiny_run)
    text = PHRASES[0]
    probs = clf.predict_proba([text])[0]
    other = clf.labels[int(np.argmin(probs))]
    (e,) = clf.explain([text], target=other)
    assert e.label == clf.labels[int(np.argmax(probs))] and e.target == other
    assert e.target_probability == pytest.approx(probs[clf.labels.index(other)], abs=1e-5)
    assert e.probability == pytest.approx(probs.max(), abs=1e-5)


def test_cli_jsonl_schema(tiny_run, tmp_path):
    lines = [PHRASES[0], "", "Oil prices rose; 日本 ☃", "x" * 200]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The tiny run's training texts were all cut at 64 ids, so it reads long texts whole by default:
    # truncation is asked for here, to see the unread part reported.
    result = CliRunner().invoke(app, ["explain", str(tiny_run), str(path), "--format", "jsonl",
                                      "--long-text", "truncate"])
    assert result.exit_code == 0, result.output
    objs = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(objs) == len(lines)
    labels = Classifier.load(tiny_run).labels
    for obj, text in zip(objs, lines):
        assert obj["label"] in labels and 0.0 < obj["probability"] <= 1.0
        spans = obj["attributions"]
        assert all(set(s) == {"start", "end", "score"} for s in spans)
        assert all(isinstance(s["start"], int) and isinstance(s["end"], int) for s in spans)
        assert all(isinstance(s["score"], float) for s in spans)
        assert [s["start"] for s in spans] == ([0] + [s["end"] for s in spans[:-1]] if text else [])
        assert (spans[-1]["end"] if spans else 0) == len(text)
    assert objs[3]["truncated_at"] == 64 and objs[0]["truncated_at"] is None


def test_cli_stdin_terminal_and_bad_target(tiny_run):
    runner = CliRunner()
    result = runner.invoke(app, ["explain", str(tiny_run), "-"], input=PHRASES[3] + "\n")
    assert result.exit_code == 0, result.output
    assert PHRASES[3] in result.stdout and "integrated gradients" in result.stdout
    proc = subprocess.run([sys.executable, "-m", "vdcnn", "explain", str(tiny_run), "-", "--target", "weather"],
                          input="a text\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:") and "weather" in proc.stderr


def test_html_escapes_the_text(tiny_run, tmp_path):
    nasty = '<script>alert("x")</script> & <b>bold</b> "quoted"'
    path = tmp_path / "in.txt"
    path.write_text(nasty + "\n" + PHRASES[1] + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["explain", str(tiny_run), str(path), "--format", "html"])
    assert result.exit_code == 0, result.output
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "<b>" not in page
    shown = re.findall(r'<div class="text">(.*?)</div>', page)
    assert html.unescape(re.sub(r"</?span[^>]*>", "", shown[0])) == nasty
    assert page.count('class="vdcnn-explain"') == 2
    fragment = Classifier.load(tiny_run).explain([nasty])[0]._repr_html_()
    assert "<script>" not in fragment and "<!DOCTYPE" not in fragment
    assert render_html([]).count("vdcnn-explain\"") == 0


def test_bundles_are_explained_by_occlusion_like_the_run(tiny_run, tmp_path):
    from vdcnn.errors import ConfigError
    from vdcnn.export import export_run

    bundle = export_run(tiny_run, "torchscript", tmp_path / "bundle")
    texts = PHRASES[5:8]
    from_bundle = Classifier.load(bundle).explain(texts)
    from_run = Classifier.load(tiny_run).explain(texts, method="occlusion")
    for a, b in zip(from_bundle, from_run):
        assert a.method == "occlusion" and a.label == b.label
        np.testing.assert_allclose([s.score for s in a.spans], [s.score for s in b.spans], atol=1e-4)
    with pytest.raises(ConfigError, match="gradients"):
        Classifier.load(bundle).explain(texts, method="integrated_gradients")
