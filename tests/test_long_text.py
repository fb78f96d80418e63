"""Texts longer than max_length: windows equal truncation on texts that fit, and read what truncation cuts."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vdcnn.cli.main import app
from vdcnn.encoders import ByteEncoder, CharEncoder
from vdcnn.errors import ConfigError
from vdcnn.long_text import (
    MIN_LONG_VALIDATION, average_windows, choose_on_validation, default_mode, encode_documents, long_text_stats,
    window_starts,
)
from vdcnn.predict import Classifier

SHORT = ["The striker scored a late goal.", "Oil prices rose.", "", "A new chip."]


def _long(n: int = 6) -> list[str]:
    return [("Shares fell after the bank cut its forecast. " * n).strip(),
            ("Engineers tested a quantum computer chip; the team won the final. " * n).strip()]


def test_window_starts_cover_the_text_with_half_overlap():
    assert window_starts(64, 64) == [0]
    assert window_starts(65, 64) == [0, 1]
    assert window_starts(10, 4) == [0, 2, 4, 6]
    assert window_starts(11, 4) == [0, 2, 4, 6, 7]
    starts = window_starts(1000, 64)
    assert starts[-1] + 64 == 1000 and all(b - a <= 32 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("encoder", [CharEncoder(), ByteEncoder()], ids=["char", "byte"])
def test_windows_rows_extend_the_truncated_rows(encoder):
    texts = [*SHORT, *_long()]
    ids, lengths = encoder.encode_batch(texts, 64)
    w_ids, w_lengths, owners = encode_documents(encoder, texts, 64, "windows")
    n = len(texts)
    np.testing.assert_array_equal(w_ids[:n], ids)  # each text's own row is its truncation
    np.testing.assert_array_equal(w_lengths[:n], lengths)
    assert set(owners) == {4, 5} and (w_lengths[n:] == 64).all()
    full_ids, full_length = encoder.encode_batch([texts[4]], 4096)
    full = full_ids[0, :full_length[0]]
    rows = w_ids[n:][owners == 4]
    np.testing.assert_array_equal(rows[-1], full[len(full) - 64:len(full)])  # the last window ends the text
    assert len(rows) + 1 == len(window_starts(len(full), 64))


def test_a_huge_text_is_read_up_to_a_bounded_number_of_windows():
    from vdcnn.long_text import MAX_READ

    ids, lengths, owners = encode_documents(CharEncoder(), ["ab " * 1_000_000, "short"], 32, "windows")
    assert len(owners) + 1 == len(window_starts(MAX_READ * 32, 32)) == 127 and (owners == 0).all()


def test_average_windows_keeps_single_rows_bitwise():
    logits = np.array([[0.1, 0.2], [1.0, 3.0], [0.3, 0.3], [3.0, 1.0]], dtype=np.float32)
    out = average_windows(logits, 2, np.array([1, 1]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], logits[0])
    np.testing.assert_allclose(out[1], [(1.0 + 0.3 + 3.0) / 3, (3.0 + 0.3 + 1.0) / 3], rtol=1e-6)


def test_windows_equal_truncation_bitwise_for_texts_that_fit(tiny_run):
    clf = Classifier.load(tiny_run, device="cpu")
    clf.batch_size = 3  # the long texts' windows share batches with the short texts
    texts = [_long()[0], *SHORT, _long()[1]]
    truncate = clf.predict_proba(texts, long_text="truncate")
    windows = clf.predict_proba(texts, long_text="windows")
    short = [1, 2, 3, 4]
    np.testing.assert_array_equal(windows[short], truncate[short])
    assert np.abs(windows[[0, 5]] - truncate[[0, 5]]).max() > 1e-4  # the long ones were read further
    np.testing.assert_array_equal(clf.predict_proba(SHORT, long_text="windows"),
                                  clf.predict_proba(SHORT, long_text="truncate"))
    clf.batch_size = 8  # a batch that windows could fill further than truncation does
    texts = [*SHORT, _long()[0]]
    np.testing.assert_array_equal(clf.predict_proba(texts, long_text="windows")[:4],
                                  clf.predict_proba(texts, long_text="truncate")[:4])


def test_windows_of_an_exported_bundle_match_the_run(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from vdcnn.export import export_run

    bundle = Classifier.load(export_run(tiny_run, "onnx", tmp_path / "b"))
    clf = Classifier.load(tiny_run, device="cpu")
    assert bundle.long_text == clf.long_text == "windows"  # its training texts were all cut at 64
    texts = [*SHORT, *_long()]
    np.testing.assert_allclose(bundle.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)
    np.testing.assert_array_equal(bundle.predict_proba(SHORT, long_text="windows"),
                                  bundle.predict_proba(SHORT, long_text="truncate"))


class _CountZ(torch.nn.Module):
    """A constructed model: class 'zed' scores 10 per 'z' id in the row, class 'other' a constant 1."""

    def __init__(self, z_id: int) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(num_classes=2, mask_padding=True)
        self.z_id = z_id

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hits = (ids == self.z_id).sum(1).float()
        return torch.stack([torch.ones_like(hits), 10.0 * hits], 1)


def test_windows_read_late_evidence_that_truncation_cuts():
    encoder = CharEncoder()
    z_id = int(encoder.encode_batch(["z"], 1)[0][0, 0])
    clf = Classifier(_CountZ(z_id), encoder, ["other", "zed"], max_length=32)
    late = "a " * 50 + "z"  # the evidence is the 101st character; the model reads 32
    assert clf.predict([late], long_text="truncate")[0][0][0] == "other"
    assert clf.predict([late], long_text="windows")[0][0][0] == "zed"
    # 6 windows (starts 0, 16, 32, 48, 64, 69); only the last holds the z: logits (1, 10/6).
    np.testing.assert_allclose(clf.predict_logits([late], long_text="windows"), [[1.0, 10 / 6]], rtol=1e-6)
    early = "z " + "a " * 50
    assert clf.predict([early], long_text="truncate")[0][0][0] == "zed"


class _ZAgainstQ(torch.nn.Module):
    """Class 1 ("zed") for each z, class 0 for each q: a window's vote follows what it reads."""

    def __init__(self, z_id: int, q_id: int) -> None:
        super().__init__()
        self.z_id, self.q_id = z_id, q_id

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.stack([2.0 * (ids == self.q_id).sum(1).float(), 10.0 * (ids == self.z_id).sum(1).float()], 1)


def test_validation_keeps_windows_only_where_they_beat_truncation():
    """Evidence late in the text: windows stay the default. Evidence at the start and later windows
    pulling the other way (20 Newsgroups' headers): validation turns the default to truncation.
    Too few long validation texts: the share rule's choice stands."""
    encoder = CharEncoder()
    z_id, q_id = (int(encoder.encode_batch([c], 1)[0][0, 0]) for c in "zq")
    model = _ZAgainstQ(z_id, q_id)

    def run_rows(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return model(torch.as_tensor(ids.astype(np.int64)), torch.as_tensor(lengths)).numpy()

    entry = long_text_stats(np.array([32] * 50), 32)
    assert entry["default"] == "windows"
    n = MIN_LONG_VALIDATION + 5
    labels = np.ones(n, dtype=np.int64)
    late = ["a " * 50 + "z"] * n
    kept = choose_on_validation(entry, encoder, late, labels, run_rows)
    assert kept["default"] == "windows" and kept["validation"]["windows_accuracy"] == 1.0
    assert kept["validation"]["truncate_accuracy"] == 0.0
    early = ["z " + "a " * 16 + "q " * 60] * n  # the first window says zed; the later ones read q
    turned = choose_on_validation(entry, encoder, early, labels, run_rows)
    assert turned["default"] == "truncate" and turned["validation"]["decided_by"] == "validation"
    few = choose_on_validation(entry, encoder, early[:3] + ["short"] * 40, np.ones(43, dtype=np.int64), run_rows)
    assert few["default"] == "windows" and "share rule" in few["validation"]["decided_by"]


def test_default_mode_follows_the_share_of_training_texts_cut():
    assert long_text_stats(np.array([64] * 11 + [10] * 89), 64)["default"] == "windows"
    assert long_text_stats(np.array([64] * 10 + [10] * 90), 64)["default"] == "truncate"
    assert long_text_stats(np.array([], dtype=int), 64)["train_share_cut"] == 0.0
    assert default_mode({}) == "truncate" and default_mode({"long_text": {"default": "windows"}}) == "windows"


def test_bad_long_text_values_are_one_line_errors(tiny_run, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="long_text must be one of truncate, windows, got 'sliding'"):
        Classifier.load(tiny_run, long_text="sliding")
    clf = Classifier.load(tiny_run)
    with pytest.raises(ConfigError, match="long_text must be one of"):
        clf.predict_proba(SHORT, long_text="mean")
    from vdcnn.cli.main import main

    for command in ("predict", "eval", "explain"):
        monkeypatch.setattr(sys, "argv", ["vdcnn", command, str(tiny_run), "--long-text", "sliding"])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "'sliding' is not one of" in err, err


def test_cli_long_text_option_on_predict_eval_and_explain(tiny_run, tmp_path):
    runner = CliRunner()
    path = tmp_path / "in.txt"
    texts = [*SHORT[:2], *_long()]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = {mode: runner.invoke(app, ["predict", str(tiny_run), str(path), "--format", "jsonl", "--long-text", mode])
           for mode in ("truncate", "windows")}
    assert all(r.exit_code == 0 for r in out.values()), {m: r.output for m, r in out.items()}
    rows = {m: [json.loads(x)["probabilities"] for x in r.stdout.splitlines()] for m, r in out.items()}
    clf = Classifier.load(tiny_run)
    for mode in rows:
        expected = clf.predict_proba(texts, long_text=mode)
        np.testing.assert_allclose([[row[name] for name in clf.labels] for row in rows[mode]], expected, atol=1e-6)
    assert rows["truncate"][:2] == rows["windows"][:2] and rows["truncate"][2:] != rows["windows"][2:]
    default = runner.invoke(app, ["predict", str(tiny_run), str(path), "--format", "jsonl"])
    assert default.stdout == out["windows"].stdout  # the tiny run's own default

    csv = tmp_path / "long.csv"
    csv.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in
                                            zip(_long(), ["business", "tech"])), encoding="utf-8")
    for mode in ("truncate", "windows"):
        result = runner.invoke(app, ["eval", str(tiny_run), str(csv), "--long-text", mode,
                                     "--json", str(tmp_path / f"{mode}.json"), "--plot", str(tmp_path / "c.png")])
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "windows.json").read_text())["n"] == 2

    explained = {mode: runner.invoke(app, ["explain", str(tiny_run), str(path), "--format", "jsonl",
                                           "--long-text", mode]) for mode in ("truncate", "windows")}
    objs = {m: [json.loads(x) for x in r.stdout.splitlines()] for m, r in explained.items()}
    assert objs["truncate"][:2] == objs["windows"][:2]  # texts that fit: the very same explanation
    for t, w, text in zip(objs["truncate"][2:], objs["windows"][2:], texts[2:]):
        assert t["truncated_at"] == 64 and w["truncated_at"] is None
        assert w["attributions"][-1]["end"] == len(text)
        assert any(a["score"] != 0 for a in w["attributions"] if a["start"] >= 64)  # read past the cut
        assert w["probability"] == pytest.approx(max(rows["windows"][texts.index(text)].values()), abs=1e-5)


def test_training_checks_the_windows_default_on_validation(tmp_path):
    """A run whose training texts were mostly cut records the validation comparison in config.json,
    and its default follows it."""
    from tests.conftest import TINY, write_topic_csv

    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=60)
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(tmp_path / "run"),
                                      "--max-length", "16", "--epochs", "1", "--val-fraction", "0.2", "--no-progress",
                                      "--no-baseline", *TINY])
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "run" / "config.json").read_text())["long_text"]
    assert entry["train_share_cut"] > 0.1
    v = entry["validation"]
    assert v["decided_by"] == "validation" and v["long_texts"] >= MIN_LONG_VALIDATION
    assert entry["default"] == ("windows" if v["windows_accuracy"] >= v["truncate_accuracy"] else "truncate")
    assert "long texts on validation" in result.output
