"""--time-budget: the run is fitted into the budget and its learning-rate schedule finishes."""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch

from tests.conftest import write_topic_csv
from tests.test_train import _tiny_cfg
from vdcnn import train as train_mod
from vdcnn.config import load_config
from vdcnn.errors import ConfigError
from vdcnn.time_budget import fit_total_steps, parse_duration
from vdcnn.train import TrainingInterrupted, train

STEP_DELAY_S = 0.05  # slows every step so the budget, not the data size, decides the plan


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2.5h", 9000),
                                          ("20", 20), (45, 45), ("1m 30s", 90)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("junk", ["soon", "15x", "m15", "1h1h", "-5m", "0", "", "15 minutes"])
def test_junk_durations_are_one_line_config_errors(junk):
    with pytest.raises(ConfigError) as err:
        parse_duration(junk)
    assert "train.time_budget" in str(err.value) and "\n" not in str(err.value)
    cfg = load_config(None)
    with pytest.raises(ConfigError):
        cfg.set("train.time_budget", junk)
        cfg.validate()


def test_cli_rejects_a_junk_budget_in_one_line(topic_csv, tmp_path, monkeypatch, capsys):
    from vdcnn.cli.main import main

    monkeypatch.setattr(sys, "argv", ["vdcnn", "train", "--dataset", str(topic_csv), "--out", str(tmp_path / "r"),
                                      "--time-budget", "soon", "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: train.time_budget must be a duration such as 90s, 15m or 1h30m, got 'soon'"]
    assert not (tmp_path / "r").exists()


def test_fit_total_steps_respects_the_budget_and_the_epoch_bound():
    # 10 s budget, 1 s spent, 0.1 s a step, 20 steps an epoch, 0.5 s validation an epoch, 1 s final scoring.
    steps, estimate = fit_total_steps(10, 1.0, 5, 0.1, 20, 100, 0.5, 1.0)
    assert estimate <= 10 * 0.95 and 20 < steps < 100
    assert fit_total_steps(10, 1.0, 5, 0.1, 20, 100, 0.5, 1.0 + 0.1 * 20)[0] < steps  # costlier end: fewer steps
    assert fit_total_steps(1000, 1.0, 5, 0.1, 20, 3, 0.5, 1.0)[0] == 60  # epochs is the upper bound
    assert fit_total_steps(2, 1.9, 5, 0.1, 20, 3, 0.5, 1.0)[0] == 5  # nothing more fits: stop where it is


def _slowed(monkeypatch):
    real = train_mod._train_step

    def slow_step(*args, **kwargs):
        time.sleep(STEP_DELAY_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_step", slow_step)


def test_budget_run_ends_on_time_with_a_finished_schedule(tmp_path, monkeypatch):
    _slowed(monkeypatch)
    topic_csv = write_topic_csv(tmp_path / "topics.csv", rows_per_class=100)  # 17 steps an epoch
    budget = 20.0
    cfg = _tiny_cfg(topic_csv, epochs=200, schedule="cosine", time_budget="20s")
    lines: list[str] = []
    begun = time.perf_counter()
    result = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    wall = time.perf_counter() - begun
    assert wall <= budget * 1.3, f"took {wall:.1f} s for a {budget:.0f} s budget"
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    plan = meta["time_plan"]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["time_plan"] == plan
    assert state["global_step"] == plan["total_steps"] == meta["results"]["steps_run"]
    assert 1 <= result.epochs_run < 200 and result.epochs_run == -(-plan["total_steps"] // plan["steps_per_epoch"])
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] < 1e-6 * cfg.train.lr, "the cosine schedule reached its end"
    assert [line for line in lines if line.startswith("time budget 20s: ")][0].endswith(
        f"schedule fitted to {plan['total_steps']:,} steps")


def test_resume_keeps_the_time_plan(topic_csv, tmp_path, monkeypatch):
    fits = []

    def fixed_fit(*args):  # the plan itself is tested above; here it must be the same whatever the load
        fits.append(args)
        return 20, 10.0

    import vdcnn.time_budget

    monkeypatch.setattr(vdcnn.time_budget, "fit_total_steps", fixed_fit)  # the planner lives there
    cfg = _tiny_cfg(topic_csv, epochs=200, schedule="onecycle", time_budget="1h")
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(cfg, out, progress=False, log=lambda s: None, max_steps=10)  # planned at the end of epoch 1
    plan = torch.load(out / "last.pt", weights_only=True)["time_plan"]
    assert (plan["planned_at_step"], plan["total_steps"], len(fits)) == (7, 20, 1)
    lines: list[str] = []
    train(None, out, resume=True, progress=False, log=lines.append)
    assert len(fits) == 1 and not any(line.startswith("time budget") for line in lines), "no second plan"
    assert any("time plan kept: 20 steps" in line for line in lines)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["time_plan"] == plan and state["global_step"] == 20
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["steps"] == 6
    assert rows[-1]["lr"] < 1e-6 * cfg.train.lr


def test_the_plan_is_made_by_time_budget_from_measured_steps():
    """Planning lives in vdcnn.time_budget (train only times steps and applies the plan)."""
    from vdcnn.time_budget import WARMUP_STEPS, StepClock, describe_plan, plan_budget

    clock = StepClock()
    now = 0.0
    for step in range(WARMUP_STEPS + 5):
        now += 0.5
        ready = clock.tick(now, 32, budget_s=50, last=False)
        assert ready is (step == WARMUP_STEPS + 4)  # 5 steps and a second timed after the warm-up
    assert clock.step_s == pytest.approx(0.5) and clock.rows_per_s == pytest.approx(64)
    plan = plan_budget(600, elapsed_s=10, steps_done=8, step_s=0.5, steps_per_epoch=100, max_epochs=50,
                       texts_per_s=64, eval_texts_per_s=1000, epoch_eval_rows=500, final_eval_rows=1000, save_s=0.1)
    assert 8 <= plan.total_steps < 50 * 100 and plan.estimated_s <= 600
    assert describe_plan(plan, "10m", 50).startswith(f"time budget 10m: {plan.epochs:.1f} epochs of 100 steps")
    lockstep = StepClock(lockstep=True)
    assert [lockstep.tick(float(i), 8, 600, False) for i in range(WARMUP_STEPS + 20)][-1] is True
