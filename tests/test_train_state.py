"""The training state object (what last.pt holds) and the run lock."""

from __future__ import annotations

import math
import os

import pytest
import torch

from vdcnn.checkpoint import LOCK_FILE, run_lock
from vdcnn.errors import CheckpointError
from vdcnn.train_state import EpochMeter, TrainingState, fresh_epoch_sums


def test_state_round_trips_through_a_saved_file(tmp_path):
    state = TrainingState(epoch=2, step_in_epoch=3, global_step=17, best_score=0.75, best_epoch=2, stale_epochs=0,
                          elapsed_s=12.5, epoch_sums=fresh_epoch_sums(4), time_plan={"total_steps": 40},
                          rng={"cpu": [torch.get_rng_state()]}, model={"w": torch.ones(2)},
                          optimizer={"state": {}}, scheduler={"last_epoch": 17})
    torch.save(state.to_dict(), tmp_path / "last.pt")
    back = TrainingState.from_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    assert back.global_step == 17 and back.time_plan == {"total_steps": 40} and back.ema is None
    assert torch.equal(back.model["w"], torch.ones(2)) and torch.equal(back.rng["cpu"][0], state.rng["cpu"][0])


def test_states_of_the_previous_layout_still_load():
    old = {"model": {"w": torch.ones(1)}, "optimizer": {"state": {}}, "scheduler": {"last_epoch": 3}, "epoch": 1,
           "step_in_epoch": 0, "global_step": 3, "best_acc": 0.5, "best_epoch": 1, "stale_epochs": 0,
           "torch_rng": torch.get_rng_state()}
    state = TrainingState.from_dict(old)
    assert state.best_score == 0.5 and len(state.rng["cpu"]) == 1 and state.time_plan is None
    assert math.isinf(TrainingState().best_score)
    with pytest.raises(KeyError):
        TrainingState.from_dict({"epoch": 1})


def test_epoch_meter_sums_on_the_device_and_flags_a_nan():
    meter, sums = EpochMeter(2, torch.device("cpu")), fresh_epoch_sums(2)
    y = torch.tensor([0, 1, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    meter.add(torch.tensor(0.5), logits, y)
    meter.add_grad_norms(torch.tensor([1.0, 2.0]))
    assert meter.flush(sums) is False
    assert (sums["loss"], sums["correct"], sums["seen"], sums["grad"], sums["grad_n"]) == (1.5, 2, 3, [1.0, 2.0], 1)
    meter.add(torch.tensor(float("nan")), logits, y)
    assert meter.flush(sums) is True and sums["seen"] == 3, "a NaN window is reported, not summed"


def test_a_second_lock_on_the_same_folder_fails_naming_the_holder(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(CheckpointError, match=f"in use by another training \\(pid {os.getpid()}\\)"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released: it can be taken again
        pass


def test_the_lock_file_stays_so_two_trainings_never_hold_it_at_once(tmp_path):
    """flock + unlink race: a second training that opened the lock file while the first held it
    gets that file's lock as the first lets go; had the first unlinked the file, a third would
    create a new one and lock it too, two trainings writing one folder. The file stays (as
    filelock leaves it), so the third finds the second holding it."""
    import fcntl

    with run_lock(tmp_path):
        second = open(tmp_path / LOCK_FILE, "a")  # opened while the first holds the lock
    fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ... and taken as it is released
    try:
        with pytest.raises(CheckpointError, match="in use by another training"):
            with run_lock(tmp_path):
                pass
    finally:
        second.close()


def test_a_loaded_run_holds_exactly_its_saved_weights_and_other_threads_still_initialise(tmp_path):
    """``load_run`` builds the model without random initialisation (every weight is loaded next): the
    loaded tensors are the saved ones, the initialisers are restored afterwards, and a model built in
    another thread meanwhile is initialised as always."""
    import threading

    from vdcnn.checkpoint import _no_initialisation, load_run, make_meta, save_weights
    from vdcnn.encoders import CharEncoder
    from vdcnn.model import VDCNN, ModelConfig

    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=9, vocab_size=CharEncoder().vocab_size, num_classes=3))
    save_weights(tmp_path / "model.safetensors", model)
    (tmp_path / "config.json").write_text(__import__("json").dumps(make_meta(model.config, CharEncoder(), ["a", "b", "c"], run={})))
    originals = {name: getattr(torch.nn.init, name) for name in ("normal_", "uniform_", "kaiming_uniform_")}
    loaded, *_ = load_run(tmp_path)
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    assert all(getattr(torch.nn.init, name) is fn for name, fn in originals.items())
    elsewhere = {}
    with _no_initialisation():
        untouched = torch.zeros(64)
        assert torch.nn.init.normal_(untouched) is untouched and not untouched.any()
        thread = threading.Thread(target=lambda: elsewhere.setdefault("w", torch.nn.init.normal_(torch.zeros(64))))
        thread.start()
        thread.join()
    assert elsewhere["w"].any()
