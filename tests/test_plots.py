"""One module draws every plot; metrics and the study code import no plotting."""

from __future__ import annotations

import inspect

import vdcnn.compare
import vdcnn.evaluate
from vdcnn.plots import plot_confusion


def test_plots_live_in_one_module():
    assert "matplotlib" not in inspect.getsource(vdcnn.evaluate)
    assert "matplotlib" not in inspect.getsource(vdcnn.compare)


def test_confusion_matrix_png(tmp_path):
    report = {"labels": ["a", "b"], "confusion_matrix": [[3, 1], [0, 4]], "accuracy": 0.875}
    plot_confusion(report, tmp_path / "cm.png", title="tiny")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
