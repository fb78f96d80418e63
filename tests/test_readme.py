"""Every `vdcnn` command of the README's tour runs as written (on a small slice of the data)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vdcnn.cli.main import app
from tests.conftest import TINY, real_data_dir

ROOT = Path(__file__).resolve().parent.parent
# Appended to every `vdcnn train` of the tour: a tiny model on a few hundred rows.
SMALL = ["--epochs", "1", "--limit", "300", "--max-length", "64", "--no-progress", *TINY]


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = text.split("## Tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", tour, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines()
            if line.startswith(("vdcnn ", "cat "))]


def test_the_tour_has_every_verb():
    verbs = {shlex.split(c.split("|")[-1])[1] for c in tour_commands()}
    assert {"train", "eval", "predict", "info", "export"} <= verbs


def test_every_tour_command_runs(runner, tmp_path, monkeypatch):
    real_data_dir()
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    sample = (ROOT / "data/samples/predict.txt").read_text(encoding="utf-8")
    outputs = {}
    for command in tour_commands():
        stdin = None
        if "|" in command:
            source, command = (part.strip() for part in command.split("|", 1))
            stdin = (ROOT / shlex.split(source)[1]).read_text(encoding="utf-8")
        args = [a.replace("runs/", f"{runs}/", 1) if a.startswith("runs/") else a for a in shlex.split(command)[1:]]
        if args[0] == "train":
            args += SMALL
        result = runner.invoke(app, args, input=stdin)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs[command] = result.stdout
        if args[0] == "predict":
            assert len(result.stdout.splitlines()) == len(sample.splitlines()), command
    assert (runs / "quick" / "report.json").is_file() and (runs / "quick" / "model.safetensors").is_file()
    labels = {"World", "Sports", "Business", "Sci/Tech"}
    tsv = [c for c in outputs if c.startswith("vdcnn predict runs/quick data")]
    assert {line.split("\t")[0] for line in outputs[tsv[0]].splitlines()} <= labels

    from vdcnn.predict import Classifier  # the README's library example

    top = Classifier.load(runs / "quick").predict(["Stocks rallied after the central bank held rates."], top_k=2)
    assert len(top[0]) == 2 and top[0][0][0] in labels and top[0][0][1] >= top[0][1][1]


@pytest.mark.slow
def test_quick_start_preset_reaches_80_percent(runner, tmp_path):
    """The README's main job as written: the preset on all 63,743 rows, then eval on the full test split."""
    real_data_dir()
    out = tmp_path / "quick"
    assert runner.invoke(app, ["train", "--config", str(ROOT / "configs/ag_news_quick.yaml"), "--out", str(out),
                               "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["eval", str(out), "--json", str(tmp_path / "r.json")])
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 7600 and report["accuracy"] >= 0.80
    assert all(name in result.stdout for name in ("World", "Sports", "Business", "Sci/Tech"))
