"""The text a training run reports (vdcnn.reports)."""

from __future__ import annotations

from vdcnn.reports import format_epoch_line, format_recall_table, recalls

REPORT = {"per_class": {"sports": {"recall": 0.75, "support": 4}, "tech": {"recall": 1 / 3, "support": 3}}}


def test_epoch_line_with_and_without_validation():
    row = {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6, "val_acc": 0.75, "val_macro_f1": 0.7,
           "samples_per_s": 123.4}
    assert format_epoch_line(row, 5, True) == ("epoch 2/5: train loss 0.5000 acc 80.00 %, val loss 0.6000 acc 75.00 % "
                                               "macro-F1 70.00 %, 123 texts/s  (best, saved)")
    row.update(val_loss=None, val_acc=None, val_macro_f1=None)
    assert "no validation" in format_epoch_line(row, 5, False)


def test_recall_table_and_values():
    lines = format_recall_table(["sports", "tech"], REPORT, None)
    assert len(lines) == 3 and "validation" in lines[0] and "75.0 % (4)" in lines[1] and "33.3 % (3)" in lines[2]
    assert recalls(REPORT) == {"sports": 0.75, "tech": 0.333333} and recalls(None) is None
