"""Presets and settings: every preset loads and builds; bad keys and types are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdcnn.config import build_config, load_config, preset_names
from vdcnn.errors import ConfigError
from vdcnn.model import VDCNN

SOURCE_PRESETS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))


def test_the_package_ships_every_preset_of_configs():
    assert preset_names() == [p.stem for p in SOURCE_PRESETS] and len(SOURCE_PRESETS) >= 10


@pytest.mark.parametrize("path", SOURCE_PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_builds(path):
    cfg = load_config(path)
    model = VDCNN(cfg.model_config(vocab_size=71, num_classes=4))
    assert sum(p.numel() for p in model.parameters()) > 1e6
    assert load_config(path.stem).to_dict() == cfg.to_dict()  # by name as well as by path


def test_paper_presets_follow_the_paper():
    for depth in (9, 17, 29, 49):
        cfg = load_config(f"vdcnn{depth}")
        assert cfg.model["depth"] == depth
        assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.batch_size) == ("sgd", 0.01, 0.9, 128)
        assert cfg.encoder.max_length == 1024 and cfg.encoder.name == "char"


def test_flags_override_the_preset():
    cfg = build_config(Path("configs/vdcnn29.yaml"), {"depth": 9, "lr": 0.5, "shortcut": True}, ["train.momentum=0.8"])
    assert cfg.model["depth"] == 9 and cfg.model["shortcut"] is True
    assert cfg.train.lr == 0.5 and cfg.train.momentum == 0.8


@pytest.mark.parametrize("text,word", [
    ("train: {lrr: 0.1}", "train.lrr"),
    ("train: {epochs: ten}", "train.epochs"),
    ("model: {depth: 7}", "depth"),
    ("model: {vocab_size: 10}", "model.vocab_size"),
    ("optimiser: {lr: 1}", "optimiser"),
    ("encoder: {max_length: 0}", "encoder.max_length"),
    ("train: {optimizer: rmsprop}", "train.optimizer"),
])
def test_bad_config_names_the_key(tmp_path, text, word):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
        load_config(path)


def test_options_keep_their_behaviour():
    cfg = build_config("vdcnn29", {"stages": "2,2,2,2", "shortcut": False, "text_column": ["title", "body"],
                                   "optimizer": "adamw", "time_budget": "15m"})
    assert cfg.model["stages"] == (2, 2, 2, 2) and cfg.model["depth"] is None  # --stages voids the preset's depth
    assert cfg.model["shortcut"] is False and cfg.data.text_columns == ["title", "body"]
    assert (cfg.train.optimizer, cfg.train.time_budget) == ("adamw", "15m")
    assert not cfg.auto and {"model.stages", "data.text_columns"} <= cfg.explicit
    cfg = build_config(None, {"depth": 17, "dataset": "data.csv"})
    assert cfg.auto and cfg.model["depth"] == 17 and "model.stages" not in cfg.explicit  # no preset: automatic recipe


@pytest.mark.parametrize("options,word", [({"optimizer": "rmsprop"}, "--optimizer"), ({"depth": "nine"}, "--depth"),
                                          ({"class_weights": "heavy"}, "--class-weights"), ({"turbo": 1}, "turbo")])
def test_bad_options_name_the_flag(options, word):
    with pytest.raises(ConfigError, match=word):
        build_config(None, options)
