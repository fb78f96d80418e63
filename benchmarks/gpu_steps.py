"""The steps of ``benchmarks/gpu_check.py``: each takes the run's ``Check`` and returns its results.

A step raises ``Skip`` when it cannot run here (the message says why) and any other exception when
it fails; ``Check.keep`` records results so far, so a run killed midway keeps them.
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from benchmarks.gpu_report import format_table
from vdcnn import checkpoint as ckpt
from vdcnn.config import RunConfig, load_config
from vdcnn.model import ModelConfig, forward_flops
from vdcnn.runtime import bf16_supported

ROOT = Path(__file__).resolve().parent.parent
JSON_FILE, TABLE_FILE, LOG_FILE = "gpu_check.json", "gpu_check.md", "gpu_check.log"
COMPARE_FILES = ("compare.md", "compare.csv", "compare.png")
PRESET = "ag_news"  # the GPU recipe: characters, length 1024, AdamW one-cycle, dropout 0.5, label smoothing 0.1
AG_TRAIN_ROWS_OFFICIAL = 120_000
# The plain reference as measured on an H200 (issue 15), for a sanity check of this run's reference.
PUBLISHED_REFERENCE_H200 = {"train_fp32": {9: 20500, 29: 7700}, "train_bf16": {9: 20100, 29: 8700},
                            "infer_bf16": {9: 94000, 29: 45600}}

# Sizes per mode. `model` holds extra settings of the training steps (tiny widths for --smoke).
FULL = dict(max_length=1024, batch=128, model={}, threads=0, resume_rows=3000, torchrun_rows=8000,
            speed_depths=(9, 29), ref_batch_train=128, ref_batch_infer=1024, ref_steps=40, infer_texts=None,
            infer_repeat=3, our_steps=100, epoch_depth=29, epoch_rows=None, peak_n=8192, accuracy_depth=29,
            compare_depths=(9, 17, 29, 49), max_epochs=20, cli_texts=512)
SMOKE = dict(max_length=64, batch=32, model={"model.channels": [8, 16, 32, 64], "model.fc_dims": [32],
                                             "model.embedding_dim": 8},
             threads=1, resume_rows=320, torchrun_rows=200, speed_depths=(9,), ref_batch_train=4,
             ref_batch_infer=8, ref_steps=1, infer_texts=8, infer_repeat=1, our_steps=2, epoch_depth=9, epoch_rows=64,
             peak_n=256, accuracy_depth=9, compare_depths=(9,), max_epochs=1, cli_texts=32)
# Least time (s) a step needs on the GPU; a step with less left is skipped.
MIN_SECONDS = {"env": 0, "data": 5, "parity": 30, "bf16": 20, "resume": 30, "torchrun": 30, "speed": 45,
               "accuracy": 45, "compare": 30}


class Skip(Exception):
    """A step that cannot run here; the message says why."""


class TimeLimit(BaseException):
    """The run's --time-limit was reached (or the process was sent SIGTERM)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400] if text else type(exc).__name__


@dataclass
class Check:
    """The run's settings, its report (written after every step) and what steps hand to each other."""

    out: Path
    work: Path
    smoke: bool
    device: str
    deadline: float
    size: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_error: str = "the data step did not run"
    shared: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, file=sys.stderr, flush=True)
        with open(self.out / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def goal(self, name: str, value: float | None, target: str, met: bool | None, step: str) -> None:
        goals = [g for g in self.report["goals"] if g["goal"] != name]
        self.report["goals"] = goals + [{"goal": name, "value": value, "target": target, "met": met, "step": step}]

    def save(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.report["_t0"], 1)
        ckpt.write_json(self.out / JSON_FILE, {k: v for k, v in self.report.items() if not k.startswith("_")})
        ckpt.write_text(self.out / TABLE_FILE, format_table(self.report))

    def keep(self, results: dict[str, Any]) -> None:
        """Record the running step's results so far (a kill keeps them)."""
        self.report["steps"][self.shared["current"]]["results"] = results
        self.save()

    def need_data(self) -> str:
        if self.dataset is None:
            raise Skip(f"no data ({self.data_error})")
        return self.dataset

    def recipe(self, depth: int, **settings: Any) -> RunConfig:
        """The GPU preset at ``depth`` on this run's data, device and sizes; ``settings`` override."""
        cfg = load_config(PRESET)
        values = {"data.dataset": self.need_data(), "model.depth": depth, "encoder.max_length": self.size["max_length"],
                  "train.device": self.device, "train.batch_size": self.size["batch"], "train.epochs": 1,
                  "train.threads": self.size["threads"], **self.size["model"], **settings}
        for key, value in values.items():
            cfg.set(key, value, source="gpu_check")
        cfg.validate()
        return cfg

    def train(self, cfg: RunConfig, name: str, **kwargs: Any):
        from vdcnn.train import train

        run = self.work / name
        if run.exists() and not kwargs.get("resume"):
            shutil.rmtree(run)
        return train(cfg, run, log=self.log, progress=False, **kwargs)

    def test_split(self, label_names: list[str] | None = None):
        from vdcnn.data import load_split

        return load_split(self.need_data(), "test", label_names=label_names)


# --------------------------------------------------------------------------------------------
# Data


def _read_charcnn_csv(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else open(
            path, encoding="utf-8", newline="") as f:
        return [row for row in csv.reader(f) if row]


def _ag_news_dir() -> Path | None:
    root = os.environ.get("VDCNN_DATA_DIR")
    folder = Path(root) / "ag_news" if root else None
    return folder if folder and (folder / "train.csv.gz").is_file() and (folder / "test.csv.gz").is_file() else None


def write_smoke_dataset(folder: Path, train_rows: int = 400, test_rows: int = 200) -> str:
    """A tiny dataset folder: rows spread over AG News when $VDCNN_DATA_DIR has it, else synthetic topics."""
    folder.mkdir(parents=True, exist_ok=True)
    ag = _ag_news_dir()
    if ag is not None:
        for split, n in (("train", train_rows), ("test", test_rows)):
            rows = _read_charcnn_csv(ag / f"{split}.csv.gz")
            with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
                csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows[:: max(1, len(rows) // n)][:n])
        if (ag / "classes.txt").is_file():
            shutil.copy(ag / "classes.txt", folder / "classes.txt")
        return f"rows spread over {ag}"
    topics = {"world": "minister election border treaty protest embassy parliament refugees",
              "sports": "striker goal championship coach final tennis season playoff",
              "business": "shares profit forecast merger oil prices investors bank",
              "scitech": "software processor battery startup database quantum chip security"}
    rng = random.Random(0)
    for split, n in (("train", train_rows), ("test", test_rows)):
        with open(folder / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            for i in range(n):
                label = list(topics)[i % len(topics)]
                words = rng.sample(topics[label].split(), 4) + rng.sample("the a of on after before new".split(), 3)
                rng.shuffle(words)
                out.writerow([" ".join(words).capitalize() + ".", label])
    return "synthetic rows of 4 topics (no $VDCNN_DATA_DIR/ag_news)"


def bench_texts(c: Check, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels for timings: vdcnn's loader, or the raw AG News CSV when `datasets` is missing."""
    try:
        from vdcnn.data import load_split

        ds = load_split(c.need_data(), split)
        return ds.texts, ds.labels
    except (ImportError, Skip):
        ag = _ag_news_dir()
        if ag is None:
            raise
        rows = _read_charcnn_csv(ag / f"{split}.csv.gz")
        return [" ".join(r[1:]) for r in rows], np.array([int(r[0]) - 1 for r in rows])


# --------------------------------------------------------------------------------------------
# Steps


def step_env(c: Check) -> dict[str, Any]:
    from importlib import metadata

    from benchmarks.speed import machine

    versions = {}
    for name in ("torch", "datasets", "pyarrow", "fsspec", "huggingface_hub", "tokenizers", "typer",
                 "scikit-learn", "dill", "multiprocess"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    res: dict[str, Any] = {"device": c.device, "name": machine(), "python": sys.version.split()[0],
                           "versions": versions, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if c.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        res.update(gpus=torch.cuda.device_count(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, bf16=bf16_supported("cuda"),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        res.update(gpus=0, bf16=bf16_supported("cpu"))
    c.report["device"] = res["name"]
    res["summary"] = (f"{res['name']}, {res['gpus']} GPU(s), torch {versions['torch']}"
                      f"{', CUDA ' + str(res.get('cuda')) if c.device == 'cuda' else ''}, datasets {versions['datasets']}")
    return res


def step_data(c: Check) -> dict[str, Any]:
    if c.smoke:
        note = write_smoke_dataset(c.work / "data")
        dataset = str(c.work / "data")
    else:
        if _ag_news_dir() is None:
            c.data_error = "AG News not found: set VDCNN_DATA_DIR to a folder holding ag_news/ (benchmarks/README_gpu.md)"
            raise Skip(c.data_error)
        dataset, note = "ag_news", f"from {_ag_news_dir()}"
    from vdcnn.data import load_split

    try:
        train = load_split(dataset, "train")
        test = load_split(dataset, "test", label_names=train.label_names)
    except ImportError as exc:
        c.data_error = f"{one_line(exc)}: bring the `datasets` wheels (benchmarks/README_gpu.md)"
        raise RuntimeError(c.data_error) from None
    except Exception as exc:
        c.data_error = f"the data step failed: {one_line(exc)}"
        raise
    c.dataset = dataset
    return {"dataset": dataset, "source": note, "train_rows": len(train), "test_rows": len(test),
            "classes": train.label_names, "summary": f"{len(train)} train / {len(test)} test rows, {note}"}


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def agreement(p: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    """Label agreement of two probability matrices and their largest difference."""
    a, b = p.argmax(1), q.argmax(1)
    top2 = np.sort(p, axis=1)[:, -2:]
    differ = np.flatnonzero(a != b)
    return {"texts": len(a), "labels_agree": int((a == b).sum()), "max_prob_diff": float(np.abs(p - q).max()),
            "disagreeing_top2_gaps": [float(top2[i, 1] - top2[i, 0]) for i in differ[:10]]}


def predict_cli(c: Check, run: Path, texts: list[str]) -> list[str]:
    """Labels from `vdcnn predict RUN FILE` in a fresh process, as a user runs it."""
    path = c.work / "predict.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    proc = run_child(c, [sys.executable, "-m", "vdcnn", "predict", str(run), str(path), "--device", c.device,
                         "--long-text", "truncate"], 300)
    if proc.returncode != 0:
        raise RuntimeError(f"vdcnn predict exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return [line.split("\t")[0] for line in proc.stdout.splitlines()]


def step_parity(c: Check) -> dict[str, Any]:
    from vdcnn.evaluate import classification_report
    from vdcnn.predict import Classifier

    result = c.train(c.recipe(9, **{"train.bf16": False}), "parity")
    run = c.work / "parity"
    # Training scores the test split truncated; at max length 64 most AG News texts are cut, so the
    # run's default reads them as windows: compare truncation with truncation.
    gpu = Classifier.load(run, device=c.device, long_text="truncate")
    test = c.test_split(gpu.labels)
    p_gpu = gpu.predict_proba(test.texts)
    report = classification_report(test.labels, p_gpu.argmax(1), gpu.labels)
    cpu = Classifier.load(run, device="cpu", long_text="truncate")
    p_cpu = cpu.predict_proba(test.texts)
    same = agreement(p_gpu, p_cpu)
    c.shared["parity_acc"] = report["accuracy"]
    res: dict[str, Any] = {"train_test_acc": result.test["accuracy"] if result.test else None,
                           "eval_test_acc": report["accuracy"], "gpu_vs_cpu": same}
    if c.device == "cuda" and same["labels_agree"] < same["texts"]:
        with tf32(False):  # cuDNN convolutions run in TF32 by default: the likely cause of differences
            res["gpu_vs_cpu_without_tf32"] = agreement(gpu.predict_proba(test.texts), p_cpu)
    c.goal("GPU and CPU predict the same label for every test text (fp32)", same["labels_agree"],
           f"= {same['texts']}", same["labels_agree"] == same["texts"], "parity")
    # The CLI in a fresh process against the library on the same texts (so the same batches).
    texts = [" ".join(t.split()) for t in test.texts[: c.size["cli_texts"]]]  # one line each
    cli = predict_cli(c, run, texts)
    p_lib = gpu.predict_proba(texts)
    lib = [gpu.labels[i] for i in p_lib.argmax(1)]
    top2 = np.sort(p_lib, axis=1)[:, -2:]
    differ = [i for i, (a, b) in enumerate(zip(cli, lib)) if a != b]
    res["cli_predict"] = {"texts": len(lib), "lines": len(cli), "labels_agree": len(lib) - len(differ)}
    if len(cli) != len(lib) or any(top2[i, 1] - top2[i, 0] > 1e-4 for i in differ):
        raise RuntimeError(f"`vdcnn predict` on {c.device} gave {len(cli)} lines and {len(differ)} labels other than "
                           f"the library's for {len(lib)} texts")
    # A TorchScript bundle (traced on the CPU) run on this device: no device baked into the trace.
    from vdcnn.classifier import load_classifier
    from vdcnn.export import export_run

    bundle = load_classifier(export_run(run, "torchscript", c.work / "parity-torchscript"), device=c.device,
                             long_text="truncate")
    res["torchscript_on_device"] = agreement(bundle.predict_proba(texts), p_lib)
    if any(gap > 1e-3 for gap in res["torchscript_on_device"]["disagreeing_top2_gaps"]):  # not a near-tie
        raise RuntimeError(f"the TorchScript bundle on {c.device} disagrees with the run: {res['torchscript_on_device']}")
    res["cudnn_benchmark_after_training"] = torch.backends.cudnn.benchmark  # training scopes it: False here
    if torch.backends.cudnn.benchmark:
        raise RuntimeError("cuDNN benchmark mode outlived the training that set it")
    res["summary"] = (f"test acc {report['accuracy'] * 100:.2f} % (1 epoch d9 fp32); GPU vs CPU: "
                      f"{same['labels_agree']}/{same['texts']} labels agree, max prob diff {same['max_prob_diff']:.1e}; "
                      f"`vdcnn predict` agrees on {len(lib) - len(differ)}/{len(lib)}; TorchScript bundle on "
                      f"{c.device}: {res['torchscript_on_device']['labels_agree']}/{len(texts)}")
    return res


def step_bf16(c: Check) -> dict[str, Any]:
    from vdcnn.predict import Classifier

    active = bf16_supported(c.device)
    result = c.train(c.recipe(9, **{"train.bf16": True}), "bf16")
    loss = result.history[-1]["train_loss"] if result.history else float("nan")
    if not math.isfinite(loss):
        raise RuntimeError(f"bf16 training loss is {loss}")
    res: dict[str, Any] = {"bf16_active": active, "train_loss": loss,
                           "test_acc_bf16_training": result.test["accuracy"] if result.test else None,
                           "test_acc_fp32_training": c.shared.get("parity_acc")}
    if c.device == "cuda" and not active:
        raise RuntimeError("this GPU reports no bf16 support")
    if not active:
        res["summary"] = f"no native bf16 on this {c.device}: trained in fp32 (loss {loss:.3f}); bf16 inference skipped"
        return res
    run = c.work / "bf16"
    fp = Classifier.load(run, device=c.device)
    bf = Classifier.load(run, device=c.device, bf16=True)
    test = c.test_split(fp.labels)
    p_fp, p_bf = fp.predict_proba(test.texts), bf.predict_proba(test.texts)
    res["inference_bf16_vs_fp32"] = agreement(p_fp, p_bf)
    res["test_acc_fp32_inference"] = float((p_fp.argmax(1) == test.labels).mean())
    res["test_acc_bf16_inference"] = float((p_bf.argmax(1) == test.labels).mean())
    same = res["inference_bf16_vs_fp32"]
    res["summary"] = (f"bf16 training loss {loss:.3f}, test acc {res['test_acc_bf16_training'] * 100:.2f} %; "
                      f"bf16 vs fp32 inference: {same['labels_agree']}/{same['texts']} labels, "
                      f"max prob diff {same['max_prob_diff']:.1e}")
    return res


@contextmanager
def deterministic() -> Iterator[list[str]]:
    """Deterministic algorithms where torch has them; yields the ops it warned about."""
    old = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    seen: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield seen
        seen.extend(sorted({str(w.message).split(".")[0][:160] for w in caught
                            if "deterministic" in str(w.message)}))
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.benchmark = old[1]


def _max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = (ckpt.load_state(p / ckpt.STATE_FILE)["model"] for p in (a, b))
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())


def step_resume(c: Check) -> dict[str, Any]:
    from vdcnn.train import TrainingInterrupted

    rows = c.size["resume_rows"]
    cfg = c.recipe(9, **{"data.limit": rows, "train.epochs": 2, "model.dropout": 0.5, "train.augment_noise": 0.02})
    per_epoch = math.ceil(round(rows * (1 - cfg.data.val_fraction)) / cfg.train.batch_size)
    stop_at = per_epoch + per_epoch // 2  # the middle of the second epoch
    with deterministic() as nondeterministic:
        c.train(copy.deepcopy(cfg), "resume-a")
        c.train(copy.deepcopy(cfg), "resume-a2")
        try:
            c.train(copy.deepcopy(cfg), "resume-b", max_steps=stop_at)
            raise RuntimeError(f"training was not interrupted at step {stop_at}")
        except TrainingInterrupted:
            pass
        state = ckpt.load_state(c.work / "resume-b" / ckpt.STATE_FILE)
        c.train(None, "resume-b", resume=True)
    noise = _max_weight_diff(c.work / "resume-a", c.work / "resume-a2")
    diff = _max_weight_diff(c.work / "resume-a", c.work / "resume-b")
    res = {"rows": rows, "steps_per_epoch": per_epoch, "interrupted_at_step": stop_at,
           "max_weight_diff_resumed": diff, "max_weight_diff_two_uninterrupted": noise,
           "state_rng_keys": sorted(f"{k}.{sub}" if isinstance(v, dict) else k for k, v in state.items()
                                    if "rng" in k.lower() for sub in (v if isinstance(v, dict) else [None])),
           "nondeterministic_ops": nondeterministic}
    met = diff <= 10 * noise  # exact (0) when the two uninterrupted runs are; else within their noise
    c.goal(f"resume on {c.device} ends with the weights of an uninterrupted run", diff,
           f"<= 10 x {noise:.1e} (two uninterrupted runs)", met, "resume")
    res["summary"] = (f"interrupted at step {stop_at}, resumed: max weight diff {diff:.1e} "
                      f"(two uninterrupted runs: {noise:.1e}); RNG in state: {', '.join(res['state_rng_keys']) or 'none'}")
    if not met:
        cuda_rng = any("cuda" in k.lower() for k in res["state_rng_keys"])
        hint = "; last.pt holds no CUDA RNG state (dropout masks differ after a resume)" if (
            c.device == "cuda" and not cuda_rng) else ""
        raise RuntimeError(res["summary"] + hint)
    return res


TORCHRUN_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
backend = sys.argv[1]
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
device = "cuda" if backend == "nccl" else "cpu"
if device == "cuda":
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
dist.init_process_group(backend)
total = torch.tensor([rank + 1.0], device=device)
dist.all_reduce(total)
if rank == 0:
    print("COLLECTIVE " + json.dumps({"backend": dist.get_backend(), "world": world, "sum": total.item(),
                                      "expected": world * (world + 1) / 2}), flush=True)
sys.argv = ["vdcnn", *sys.argv[2:]]
from vdcnn.cli.main import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
if dist.is_initialized():
    dist.destroy_process_group()
sys.exit(code)
"""


def child_env(c: Check) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if c.smoke:
        env["OMP_NUM_THREADS"] = "1"
    return env


def run_child(c: Check, cmd: list[str], limit: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, which is killed whole on a timeout or the time limit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(c),
                            cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(30.0, min(limit, c.left())))
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_layout(device: str, gpus: int) -> tuple[int, str, str]:
    """(processes, backend, how) of the torchrun step: always at least two processes, so that DDP's
    gradient all-reduce and synced BatchNorm run; one GPU is shared by two processes over gloo
    (NCCL refuses two ranks on one device)."""
    if device == "cuda" and gpus > 1:
        return gpus, "nccl", f"{gpus} processes, one per GPU, NCCL"
    if device == "cuda":
        return 2, "gloo", "2 processes sharing the one GPU, gloo (CUDA tensors)"
    return 2, "gloo", "2 CPU processes, gloo"


def step_torchrun(c: Check) -> dict[str, Any]:
    nproc, backend, how = torchrun_layout(c.device, torch.cuda.device_count() if c.device == "cuda" else 0)
    script = c.work / "torchrun_check.py"
    script.write_text(TORCHRUN_SCRIPT, encoding="utf-8")
    run = c.work / "torchrun"
    shutil.rmtree(run, ignore_errors=True)
    tiny = [a for k, v in c.size["model"].items() for a in ("--set", f"{k}={json.dumps(v)}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(script), backend,
           "train", "--config", PRESET, "--dataset", c.need_data(), "--out", str(run), "--depth", "9",
           "--epochs", "1", "--limit", str(c.size["torchrun_rows"]),
           "--max-length", str(c.size["max_length"]), "--batch-size", str(c.size["batch"]), "--device", c.device,
           "--threads", str(c.size["threads"]), "--sync-bn", "--no-progress", *tiny]
    c.log("torchrun: " + " ".join(cmd))
    proc = run_child(c, cmd, 400)
    with open(c.out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(proc.stdout[-4000:] + proc.stderr[-6000:])
    collective = next((json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
                       if line.startswith("COLLECTIVE ")), None)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    if collective is None or collective["sum"] != collective["expected"]:
        raise RuntimeError(f"all-reduce over {nproc} process(es) gave {collective}")
    results = ckpt.read_config(run).get("results") or {}
    ddp = f"{nproc} processes (DDP)" in proc.stderr
    if not ddp:
        raise RuntimeError(f"`vdcnn train` under torchrun did not report {nproc} processes (DDP)")
    return {"processes": nproc, "backend": collective["backend"], "layout": how, "all_reduce": collective, "ddp": ddp,
            "sync_bn": True, "test_acc": results.get("test_acc"),
            "summary": f"{how}: all-reduce ok; `vdcnn train --sync-bn` under torchrun (DDP): "
                       f"test acc {(results.get('test_acc') or 0) * 100:.2f} %"}


def _spread(items: list, n: int | None) -> list:
    return items if not n else items[:: max(1, len(items) // n)][:n]


def step_speed(c: Check) -> dict[str, Any]:
    from benchmarks import gpu_timing as gt

    s, dev = c.size, c.device
    bf16 = bf16_supported(dev)
    test_texts, test_labels = bench_texts(c, "test")
    train_texts, train_labels = bench_texts(c, "train")
    infer = gt.encode(_spread(test_texts, s["infer_texts"]), _spread(list(test_labels), s["infer_texts"]))
    infer_texts = _spread(test_texts, s["infer_texts"])
    n_epoch = s["epoch_rows"] or len(train_texts)
    train = gt.encode(train_texts[:n_epoch], train_labels[:n_epoch])
    peak = gt.matmul_peak(dev, s["peak_n"])
    res: dict[str, Any] = {"bf16": bf16, "matmul_peak_tflops": peak / 1e12, "train_batch": s["ref_batch_train"],
                           "infer_batch": s["ref_batch_infer"], "inference_texts": len(infer_texts), "depths": {}}
    c.keep(res)
    batch, precisions = s["ref_batch_train"], ([True] if bf16 else []) + [False]
    for depth in s["speed_depths"]:
        ref, ours = {}, {}
        for use_bf16 in precisions:
            p = "bf16" if use_bf16 else "fp32"
            ref[f"train_{p}"] = gt.reference_training(depth, train, dev, batch, s["ref_steps"], use_bf16)
            ref[f"infer_{p}"] = gt.reference_inference(depth, infer, dev, s["ref_batch_infer"], use_bf16,
                                                       s["infer_repeat"])
            timing = gt.vdcnn_training(depth, train, dev, batch, use_bf16, steps=s["our_steps"])
            ours[f"train_{p}"] = timing["samples_per_s"]
            ours[f"train_{p}_tflops"] = timing["flops_per_s"] / 1e12
            # The ratio compares like with like (model alone, ids on the device); end to end apart.
            ours[f"infer_{p}"] = gt.vdcnn_model_inference(depth, infer, dev, s["ref_batch_infer"], use_bf16,
                                                          s["infer_repeat"])
            ours[f"infer_{p}_end_to_end"] = gt.vdcnn_inference(depth, infer_texts, dev, s["ref_batch_infer"],
                                                               use_bf16, s["infer_repeat"])
        best = "bf16" if bf16 else "fp32"
        row = {"reference": ref, "vdcnn": ours,
               "train_vs_reference_fp32": ours[f"train_{best}"] / ref["train_fp32"],
               "infer_vs_reference": ours[f"infer_{best}"] / ref[f"infer_{best}"],
               "infer_end_to_end_vs_reference": ours[f"infer_{best}_end_to_end"] / ref[f"infer_{best}"],
               "fraction_of_peak": ours[f"train_{best}_tflops"] * 1e12 / peak,
               "reference_fraction_of_peak": 3 * ref[f"train_{best}"] * gt.reference_flops_per_sample(depth) / peak}
        if dev == "cuda":
            row["reference_vs_published_h200"] = {k: ref[k] / PUBLISHED_REFERENCE_H200[k][depth]
                                                  for k in ("train_fp32", "train_bf16", "infer_bf16")
                                                  if k in ref and depth in PUBLISHED_REFERENCE_H200[k]}
        res["depths"][str(depth)] = row
        c.shared[f"train_rate_d{depth}"] = ours[f"train_{best}"]
        c.goal(f"training d{depth} ({best}) vs reference fp32", row["train_vs_reference_fp32"], ">= 4x",
               row["train_vs_reference_fp32"] >= 4, "speed")
        c.goal(f"inference d{depth} ({best}) vs reference {best}", row["infer_vs_reference"], ">= 4x",
               row["infer_vs_reference"] >= 4, "speed")
        c.log(f"speed d{depth}: {json.dumps(row)}")
        c.keep(res)
    depth = s["epoch_depth"]
    epoch = gt.vdcnn_training(depth, train, dev, batch, bf16)
    scaled = epoch["seconds"] * AG_TRAIN_ROWS_OFFICIAL / epoch["samples"]
    res["epoch"] = {"depth": depth, "texts": epoch["samples"], "seconds": epoch["seconds"],
                    "samples_per_s": epoch["samples_per_s"], "seconds_per_120k": scaled,
                    "fraction_of_peak": epoch["flops_per_s"] / peak}
    c.goal(f"one 120,000-text epoch at depth {depth} ({'bf16' if bf16 else 'fp32'})", scaled, "< 5 s", scaled < 5, "speed")
    parts = [f"d{d}: train {r['train_vs_reference_fp32']:.2f}x ref fp32, infer {r['infer_vs_reference']:.2f}x "
             f"(end to end {r['infer_end_to_end_vs_reference']:.2f}x), "
             f"{r['fraction_of_peak'] * 100:.1f} % of peak" for d, r in res["depths"].items()]
    res["summary"] = "; ".join(parts) + f"; 120k-text epoch at d{depth}: {scaled:.1f} s"
    return res


def _epoch_seconds(c: Check, depth: int, rows: float) -> float:
    """Estimated wall time of one training epoch (validation and checkpoint included) at ``depth``."""
    known = {int(k.rsplit("d", 1)[1]): v for k, v in c.shared.items() if k.startswith("train_rate_d")}
    cost = lambda d: forward_flops(ModelConfig(depth=d), 256)  # noqa: E731 - typical trimmed batch length
    if depth in known:
        rate = known[depth]
    elif known:
        d0 = max(known)
        rate = known[d0] * cost(d0) / cost(depth)
    else:
        rate = (300 if c.smoke else 4000) * cost(29) / cost(depth)
    return rows / rate * 1.3 + (0.2 if c.smoke else 2.0)


def _train_rows(c: Check) -> float:
    rows = c.report["steps"].get("data", {}).get("results", {}).get("train_rows", 63_743)
    return rows * 0.9  # the preset carves 10 % for validation


def step_accuracy(c: Check) -> dict[str, Any]:
    from vdcnn.predict import Classifier
    from vdcnn.train import TrainingInterrupted

    depth, dataset = c.size["accuracy_depth"], c.need_data()
    epoch_s = _epoch_seconds(c, depth, _train_rows(c))
    share = 0.55 if c.shared.get("compare_planned") else 0.95
    epochs = c.shared.get("accuracy_epochs") or min(c.size["max_epochs"], int((c.left() - 15) * share // epoch_s))
    if epochs < 1:
        raise Skip(f"one epoch at depth {depth} takes about {epoch_s:.0f} s; {c.left():.0f} s left")
    res: dict[str, Any] = {"depth": depth, "epochs_planned": epochs, "estimated_epoch_s": epoch_s, "partial": False}
    c.keep(res)
    run = c.work / "accuracy"
    try:
        result = c.train(c.recipe(depth, **{"train.epochs": epochs}), "accuracy")
        acc, res["best_epoch"], res["epochs_run"] = result.test["accuracy"], result.best_epoch, result.epochs_run
        res["best_val_acc"], res["wall_time_s"] = result.best_val_accuracy, result.wall_time_s
    except (TrainingInterrupted, TimeLimit) as exc:
        if not (run / ckpt.WEIGHTS_FILE).is_file():
            raise RuntimeError(f"stopped before the first epoch ended ({one_line(exc)})") from None
        clf = Classifier.load(run, device=c.device)
        test = c.test_split(clf.labels)
        acc = float((clf.predict_proba(test.texts).argmax(1) == test.labels).mean())
        res.update(partial=True, best=ckpt.read_config(run).get("best"), stopped=one_line(exc))
    history = [{k: r.get(k) for k in ("epoch", "train_loss", "val_acc", "time_s", "samples_per_s")}
               for r in ckpt.read_metrics(run)]
    rates = [r["samples_per_s"] for r in history if r.get("samples_per_s")]
    res.update(test_acc=acc, dataset=dataset, history=history,  # the trainer's own epoch, validation included
               trainer_seconds_per_120k=AG_TRAIN_ROWS_OFFICIAL / float(np.mean(rates)) if rates else None)
    c.goal(f"character VDCNN-{depth} test accuracy on the AG News rows", acc, ">= 92 %", acc >= 0.92, "accuracy")
    per_120k = f", {res['trainer_seconds_per_120k']:.1f} s per 120k texts in train()" if rates else ""
    res["summary"] = (f"VDCNN-{depth}, {len(history)} of {epochs} epochs{per_120k}: test acc {acc * 100:.2f} %"
                      f"{' (stopped at the time limit; best epoch so far)' if res['partial'] else ''}")
    return res


def _finished_runs(study: Path) -> list[Path]:
    return [d for d in sorted(study.iterdir()) if (d / ckpt.CONFIG_FILE).is_file()
            and ckpt.read_config(d).get("results")] if study.is_dir() else []


def step_compare(c: Check) -> dict[str, Any]:
    from vdcnn.compare import collect_runs, run_compare
    from vdcnn.train import TrainingInterrupted

    depths = list(c.size["compare_depths"])
    rows = _train_rows(c)
    all_epoch_s = sum(2 * _epoch_seconds(c, d, rows) for d in depths)  # plain and shortcut
    budget = c.left() - 15
    epochs = c.shared.get("compare_epochs") or min(c.size["max_epochs"], int(budget // all_epoch_s))
    settings: dict[str, Any] = {"train.epochs": max(1, epochs)}
    if epochs < 1:  # not even one epoch of every variant: fewer rows, same grid
        limit = int(rows / 0.9 * budget / all_epoch_s)
        if limit < 2000:
            raise Skip(f"one epoch of the {2 * len(depths)} variants takes about {all_epoch_s:.0f} s; {c.left():.0f} s left")
        settings["data.limit"] = limit
    study = c.work / "compare"
    shutil.rmtree(study, ignore_errors=True)
    res: dict[str, Any] = {"depths": depths, "epochs": settings["train.epochs"], "limit": settings.get("data.limit"),
                           "estimated_s_per_epoch_of_all": all_epoch_s, "partial": False}
    c.keep(res)

    def copy_tables() -> None:
        for name in COMPARE_FILES:
            if (study / name).is_file():
                shutil.copy(study / name, c.out / name)

    def log(line: str) -> None:
        c.log(line)
        if line.startswith("["):  # a variant starts: the tables of the finished ones are written
            copy_tables()

    try:
        table = run_compare(c.recipe(9, **settings), depths, [False, True], study, log=log, progress=False)
    except (TrainingInterrupted, TimeLimit) as exc:
        table = collect_runs(_finished_runs(study))
        res.update(partial=True, stopped=one_line(exc))
    copy_tables()
    keys = ("name", "depth", "shortcut", "best_val_acc", "test_acc", "final_train_loss", "epochs", "wall_time_s", "status")
    res["variants"] = [{k: r.get(k) for k in keys} for r in table]
    cells = [f"{r['name']} {r['test_acc'] * 100:.1f} %" for r in table if r.get("test_acc") is not None]
    res["summary"] = (f"{len(table)} of {2 * len(depths)} variants, {res['epochs']} epoch(s)"
                      f"{', ' + str(res['limit']) + ' rows' if res['limit'] else ''}: {', '.join(cells) or 'none finished'}"
                      f"{' (stopped at the time limit)' if res['partial'] else ''}")
    return res


# --------------------------------------------------------------------------------------------
# Runner and table



STEPS: list[tuple[str, Callable[[Check], dict[str, Any]]]] = [
    ("env", step_env), ("data", step_data), ("parity", step_parity), ("bf16", step_bf16), ("resume", step_resume),
    ("torchrun", step_torchrun), ("speed", step_speed), ("accuracy", step_accuracy), ("compare", step_compare)]


