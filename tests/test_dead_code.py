"""Code that did nothing is gone; what was saved with it still loads."""

from __future__ import annotations

import dataclasses

from vdcnn import layers
from vdcnn.config import RunConfig, TrainSettings
from vdcnn.progress import EpochProgress


def test_unused_pieces_are_gone():
    assert not hasattr(layers, "Identity2")
    assert not hasattr(EpochProgress, "update")
    assert "num_workers" not in {f.name for f in dataclasses.fields(TrainSettings)}  # no DataLoader reads it


def test_a_run_saved_with_num_workers_still_loads():
    saved = RunConfig().to_dict()
    saved["train"]["num_workers"] = 0  # what config.json of earlier runs holds
    assert RunConfig.from_dict(saved).to_dict()["train"] == RunConfig().to_dict()["train"]
