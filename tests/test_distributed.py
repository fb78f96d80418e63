"""Data-parallel training under torchrun (gloo on CPU) matches one process, resume included."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.conftest import TINY

RECIPE = ["--max-length", "48", "--epochs", "2", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.01",
          "--device", "cpu", "--threads", "1", "--sync-bn", "--no-bf16", "--no-progress", *TINY]

# fp32: the comparison is exact only without bf16 autocast (on by default where the CPU has it).
# The same recipe through the library, stopped after 5 optimiser steps as if interrupted.
INTERRUPTED = """
import sys
from vdcnn.config import build_config
from vdcnn.train import TrainingInterrupted, train

dataset, out, tiny = sys.argv[1], sys.argv[2], sys.argv[3:]
overrides = dict(dataset=dataset, max_length=48, epochs=2, batch_size=16, optimizer="sgd", lr=0.01,
                 device="cpu", threads=1, sync_bn=True, bf16=False)
cfg = build_config(tiny[1], overrides, [v for v in tiny[2:] if v != "--set"])  # tiny: --config NAME --set ...
try:
    train(cfg, out, progress=False, max_steps=5)
except TrainingInterrupted:
    pass
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], nproc: int, module: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    target = ["-m", "vdcnn", *args] if module else args
    if nproc == 1:
        cmd = [sys.executable, *target]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), *target]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_two_processes_interrupted_and_resumed_match_one_process(topic_csv, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run(["train", "--dataset", str(topic_csv), "--out", str(one), *RECIPE], 1)
    assert single.returncode == 0, single.stderr

    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(INTERRUPTED))
    first = _run([str(script), str(topic_csv), str(two), *TINY], 2, module=False)
    assert first.returncode == 0, first.stderr
    state = torch.load(two / "last.pt", weights_only=True)
    assert (state["epoch"], state["global_step"]) == (0, 5)

    resumed = _run(["train", "--resume", "--out", str(two)], 2)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 processes (DDP)" in resumed.stderr and "resuming at epoch 1, step 5" in resumed.stderr

    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-5, f"largest weight difference {worst}"


def test_a_last_batch_smaller_than_the_world_size_trains(topic_csv, tmp_path):
    """108 training rows in batches of 107: the last batch has one row, fewer than the two ranks.
    It is left out on both ranks alike (a rank with no rows would average its loss over nothing)."""
    out = tmp_path / "two"
    recipe = [a if a != "16" else "107" for a in RECIPE]  # --batch-size 107
    result = _run(["train", "--dataset", str(topic_csv), "--out", str(out), *recipe], 2)
    assert result.returncode == 0, result.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["global_step"] == 2  # two epochs of one full batch each
    assert len(state["rng"]["cpu"]) == 2, "every rank's RNG state is saved"
    assert all(torch.isfinite(v).all() for v in _weights(out).values() if v.is_floating_point())


def test_early_stop_is_decided_once_for_all_ranks(topic_csv, tmp_path):
    """Without synced BatchNorm each rank's statistics (so its validation score) differ; the best
    epoch and the early stop are rank 0's decisions on every rank, so no rank waits forever."""
    out = tmp_path / "two"
    recipe = [a for a in RECIPE if a != "--sync-bn"]
    recipe[recipe.index("--epochs") + 1] = "12"
    recipe[recipe.index("--lr") + 1] = "1e-12"
    result = _run(["train", "--dataset", str(topic_csv), "--out", str(out), *recipe,
                   "--set", "train.early_stop=1", "--set", "train.schedule=constant"], 2)
    assert result.returncode == 0, result.stderr
    assert "early stop" in result.stderr
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(lines) < 12


def _node(args: list[str], cwd: Path, node_rank: int, port: int, restarts: int = 0,
          extra_env: dict | None = None) -> subprocess.Popen:
    """One "machine" of a two-node torchrun job on 127.0.0.1 (static rendezvous), in its own folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd()), **(extra_env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
           "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
           "--max-restarts", str(restarts), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_machines_share_no_folder(topic_csv, tmp_path):
    """Two torchrun "machines", each in its own working folder with its own copy of the data: only
    rank 0 writes the run folder, fits the baseline and prints; the other gets settings, label rule
    and vocabulary from rank 0 and leaves its folder untouched."""
    homes = [tmp_path / "machine0", tmp_path / "machine1"]
    for home in homes:
        home.mkdir()
        (home / "data.csv").write_bytes(topic_csv.read_bytes())
    port = _free_port()
    args = ["-m", "vdcnn", "train", "--dataset", "data.csv", "--out", "run", "--encoder", "subword",
            "--vocab-size", "300", *RECIPE]
    nodes = [_node(args, home, rank, port) for rank, home in enumerate(homes)]
    try:
        outputs = [n.communicate(timeout=150) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr
    assert sorted(p.name for p in homes[1].iterdir()) == ["data.csv"], "rank 1 wrote into its folder"
    run = homes[0] / "run"
    assert {"config.json", "model.safetensors", "last.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert "baseline" in json.loads((run / "config.json").read_text())["results"]
    assert outputs[0][1].count("best validation accuracy") == 1
    assert "best validation accuracy" not in outputs[1][1] and "TF-IDF" not in outputs[1][1]

    # Rank 0 refuses (the folder holds a run): rank 1, which cannot see it, gets the same error, no hang.
    again = _free_port()
    nodes = [_node(args, home, rank, again) for rank, home in enumerate(homes)]
    try:
        outputs = [n.communicate(timeout=120) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode != 0 and "already holds a run" in stderr, stderr


DIE_ONCE = """
import os, sys
import vdcnn.train as train

real = train._train_step
def dying(run, *args):
    # Rank 1 dies (as a killed process would) in the second epoch of the first attempt.
    if (os.environ["RANK"] == "1" and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            and run.state.epoch == 1 and run.state.step_in_epoch == 2):
        os._exit(9)
    return real(run, *args)
train._train_step = dying

from vdcnn.cli.main import main
sys.argv = ["vdcnn", *sys.argv[1:]]
main()
"""


def test_a_killed_rank_is_restarted_and_the_run_resumes(topic_csv, tmp_path):
    """Under `torchrun --max-restarts 1` a rank that dies takes the job down and torchrun starts the
    same command again: `vdcnn train` then continues from the last saved state, without a new flag."""
    script = tmp_path / "die_once.py"
    script.write_text(textwrap.dedent(DIE_ONCE))
    out = tmp_path / "run"
    recipe = list(RECIPE)
    recipe[recipe.index("--epochs") + 1] = "3"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "--max-restarts", "1", str(script), "train", "--dataset",
           str(topic_csv), "--out", str(out), "--no-baseline", *recipe]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=200)
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 2, step 0" in result.stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3


def test_ranks_draw_different_random_masks():
    """Dropout, drop-path and augmentation noise differ between ranks (nanoGPT's seed + rank); a single
    process keeps the seeds it always had."""
    from vdcnn.distributed import DistContext, rank_seed
    from vdcnn.train import augment_seed

    single, rank0, rank1 = DistContext(), DistContext(0, 2), DistContext(1, 2)
    assert rank_seed(7, single) == rank_seed(7, rank0) == 7 != rank_seed(7, rank1)
    assert augment_seed(7, 1, 3, single) == hash((7, 1, 3)) & 0x7FFFFFFF
    assert augment_seed(7, 1, 3, rank0) != augment_seed(7, 1, 3, rank1)
