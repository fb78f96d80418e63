"""benchmarks/gpu_check.py at smoke sizes on the CPU: every step runs, its checks hold, and the
report (JSON + table) records skipped steps and the time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STEPS = ["env", "data", "parity", "bf16", "resume", "torchrun", "speed", "accuracy", "compare"]


def _run(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "VDCNN_CACHE": str(tmp / "cache")}
    out = tmp / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(tmp / "work"), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else None
    return proc, report


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    tmp = tmp_path_factory.mktemp("gpu_check")
    proc, report = _run(tmp, "--smoke")
    return proc, report, tmp / "out"


def test_smoke_runs_every_step_and_writes_the_report(smoke):
    proc, report, out = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(report["steps"]) == STEPS
    assert {n: e["status"] for n, e in report["steps"].items()} == {n: "ok" for n in STEPS}, report["steps"]
    assert report["smoke"] is True and report["device"]
    assert {p.name for p in out.iterdir()} == {"gpu_check.json", "gpu_check.md", "gpu_check.log", "compare.md",
                                               "compare.csv", "compare.png"}
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout
    for name in STEPS:
        assert f"| {name} | ok |" in table
    assert "| goal | measured | target | met |" in table and "d9 train fp32 (samples/s)" in table


def test_smoke_checks_hold(smoke):
    _, report, _ = smoke
    steps = {n: e["results"] for n, e in report["steps"].items()}
    test_rows = steps["data"]["test_rows"]
    # Without CUDA the "GPU" side is the CPU itself: the same probabilities, to the bit.
    same = steps["parity"]["gpu_vs_cpu"]
    assert same["texts"] == same["labels_agree"] == test_rows and same["max_prob_diff"] == 0.0
    bundle = steps["parity"]["torchscript_on_device"]  # the exported bundle runs where the check runs
    assert bundle["texts"] == bundle["labels_agree"] > 0 and steps["parity"]["cudnn_benchmark_after_training"] is False
    cli = steps["parity"]["cli_predict"]
    assert cli["texts"] == cli["lines"] == cli["labels_agree"] > 0
    assert steps["parity"]["eval_test_acc"] == pytest.approx(steps["parity"]["train_test_acc"], abs=0.02)
    # Deterministic CPU training: interrupted + resumed ends exactly where an uninterrupted run does.
    resume = steps["resume"]
    assert resume["max_weight_diff_two_uninterrupted"] == 0.0 and resume["max_weight_diff_resumed"] == 0.0
    assert resume["steps_per_epoch"] < resume["interrupted_at_step"] < 2 * resume["steps_per_epoch"]
    assert resume["state_rng_keys"]
    run = steps["torchrun"]
    # Two processes even where one device exists, so DDP and synced BatchNorm run.
    assert run["backend"] == "gloo" and run["all_reduce"]["sum"] == run["all_reduce"]["expected"] == 3.0
    assert run["processes"] == 2 and run["ddp"] and run["sync_bn"]
    assert 0.0 <= run["test_acc"] <= 1.0
    if steps["bf16"]["bf16_active"]:
        bf16 = steps["bf16"]["inference_bf16_vs_fp32"]
        assert bf16["texts"] == test_rows and 0.0 < bf16["max_prob_diff"] < 0.05
    speed = steps["speed"]
    row = speed["depths"]["9"]
    assert all(v > 0 for v in [*row["vdcnn"].values(), *row["reference"].values()])
    # The ratio times both sides alike (model on device ids); end to end is reported apart.
    assert row["infer_end_to_end_vs_reference"] > 0 and any(k.endswith("_end_to_end") for k in row["vdcnn"])
    assert speed["epoch"]["texts"] == 64 and speed["epoch"]["seconds_per_120k"] > 0
    assert steps["accuracy"]["depth"] == 9 and 0.0 <= steps["accuracy"]["test_acc"] <= 1.0
    assert [v["name"] for v in steps["compare"]["variants"]] == ["d9-plain", "d9-shortcut"]
    goals = {g["goal"]: g for g in report["goals"]}
    assert goals["GPU and CPU predict the same label for every test text (fp32)"]["met"] is True
    assert goals["resume on cpu ends with the weights of an uninterrupted run"]["met"] is True
    assert {"training d9 (bf16) vs reference fp32", "training d9 (fp32) vs reference fp32"} & set(goals)


def test_skipped_steps_are_recorded_with_their_reason(tmp_path):
    proc, report = _run(tmp_path, "--smoke", "--only", "speed", "--skip", "speed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["steps"]["env"]["status"] == report["steps"]["data"]["status"] == "ok"
    for name in STEPS[2:]:
        assert report["steps"][name]["status"] == "skipped"
        assert "not asked for" in report["steps"][name]["reason"]


def test_the_time_limit_skips_what_does_not_fit_and_still_writes_the_report(tmp_path):
    proc, report = _run(tmp_path, "--smoke", "--time-limit", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(report["steps"]) == STEPS
    for name in STEPS[1:]:
        assert report["steps"][name]["status"] in ("skipped", "stopped")
        assert "time limit" in report["steps"][name]["reason"]
    assert (tmp_path / "out" / "gpu_check.md").is_file()


def test_bad_step_name_and_full_run_without_gpu_are_refused(tmp_path):
    proc, report = _run(tmp_path, "--smoke", "--skip", "nosuch")
    assert proc.returncode == 2 and "unknown step 'nosuch'" in proc.stderr and report is None
    if not torch.cuda.is_available():
        proc, report = _run(tmp_path)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr and report is None


def test_torchrun_step_runs_two_processes_on_one_device():
    from benchmarks.gpu_steps import torchrun_layout

    assert torchrun_layout("cuda", 4)[:2] == (4, "nccl")
    assert torchrun_layout("cuda", 1)[:2] == (2, "gloo")  # NCCL refuses two ranks on one GPU
    assert torchrun_layout("cpu", 0)[:2] == (2, "gloo")
