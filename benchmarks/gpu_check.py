"""Every GPU check and timing of vdcnn in one call: one JSON file and one table.

    python benchmarks/gpu_check.py --out $OUT                  # a CUDA machine, about 8 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/gc       # anywhere, tiny sizes, seconds
    sh benchmarks/gpu_run.sh                                   # the GPU session: wheels + this check

Steps, in priority order; each is recorded as ok, failed, skipped or stopped (the time limit came
while it ran) with a one-line reason, and the JSON is rewritten after every step (the long ones
also as they go), so a run killed midway keeps what it did:

  env       device name, versions, GPU count
  data      AG News from $VDCNN_DATA_DIR/ag_news/ through vdcnn's loader
  parity    CUDA train -> eval -> predict (library and `vdcnn predict`); the same run predicted on
            the CPU: label agreement and largest probability difference on the test split (fp32);
            a TorchScript bundle traced on the CPU run on the device; cuDNN benchmark mode off again
  bf16      bf16 autocast training; bf16 inference against fp32 on the same weights
  resume    interrupted + resumed training ends with the weights of an uninterrupted run
            (deterministic algorithms; the gap between two uninterrupted runs is the noise floor)
  torchrun  torchrun with at least two processes: one per GPU over NCCL, or two sharing one GPU
            (or the CPU) over gloo: an all-reduce, then `vdcnn train --sync-bn` (DDP) in them
  speed     training and inference against the plain reference (benchmarks/reference.py; inference
            timed alike: the model on device-resident ids; end to end reported beside it) at
            depths 9 and 29, fraction of the bf16 peak (a bf16 matrix product timed in the same
            run), one 120,000-text epoch at depth 29
  accuracy  character VDCNN-29 (configs/ag_news.yaml at depth 29), epochs fitted to the time left
  compare   `vdcnn compare --depths 9,17,29,49 --shortcuts both`, epochs fitted to the time left

Goals are reported as measured values beside their targets (speed as ratios to the reference
measured in the same run). ``--time-limit`` (default 480 s) bounds the whole run: a step that
does not fit is skipped, and at the limit a training in progress stops at its next step.

``--smoke`` runs every step at tiny sizes on whatever device there is (depth 9, texts of 64
characters, a few hundred rows of AG News when $VDCNN_DATA_DIR has them, else a synthetic set);
without CUDA the "GPU vs CPU" comparison compares the CPU with itself.

Files in ``--out`` (flat, at most six): gpu_check.json, gpu_check.md (the table), gpu_check.log,
compare.md / compare.csv / compare.png. Run folders go to ``--work`` (default: a temporary folder).

vdcnn reads CSV files through the ``datasets`` package, which the GPU image lacks: bring its wheels
(datasets, dill, multiprocess; see benchmarks/README_gpu.md). The speed step needs no ``datasets``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Not benchmarks/ itself (Python puts a script's folder first): benchmarks/datasets.py would hide the
# `datasets` package. The repository root instead, so `benchmarks.*`, `vdcnn` and `cli` import.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
# The check never needs the hub, and deterministic cuBLAS needs its workspace set before CUDA starts.
for _name, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
                      "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import torch  # noqa: E402

from benchmarks.gpu_report import format_table  # noqa: E402
from benchmarks.gpu_steps import FULL, LOG_FILE, MIN_SECONDS, SMOKE, STEPS, Check, Skip, TimeLimit, one_line  # noqa: E402


def _raise_time_limit(signum: int, frame: Any) -> None:
    raise TimeLimit("time limit reached")



def run_steps(c: Check, skip: set[str]) -> None:
    for name, fn in STEPS:
        entry: dict[str, Any] = {"status": "running", "seconds": None, "reason": None, "results": {}}
        c.report["steps"][name] = entry
        need = 0 if c.smoke else MIN_SECONDS[name]
        if name in skip:
            entry.update(status="skipped", reason="not asked for (--skip / --only)")
        elif name != "env" and c.left() < need:
            entry.update(status="skipped", reason=f"time limit: {max(0.0, c.left()):.0f} s left, the step needs ~{need} s"
                         if need else "time limit reached")
        else:
            c.shared["current"] = name
            c.save()
            c.log(f"== {name}")
            start = time.monotonic()
            try:
                entry["results"] = fn(c)
                entry["status"] = "ok"
            except Skip as exc:
                entry.update(status="skipped", reason=str(exc))
            except TimeLimit:
                entry.update(status="stopped", reason="stopped at the time limit")
            except Exception as exc:  # noqa: BLE001 - one step's failure must not stop the others
                entry.update(status="failed", reason=one_line(exc))
                with open(c.out / LOG_FILE, "a", encoding="utf-8") as f:
                    f.write(traceback.format_exc())
            entry["seconds"] = round(time.monotonic() - start, 1)
            c.log(f"== {name}: {entry['status']} in {entry['seconds']} s: "
                  f"{entry['reason'] or entry['results'].get('summary', '')}")
            gc.collect()
            if c.device == "cuda":
                torch.cuda.empty_cache()
        c.save()



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON, the table and the log")
    parser.add_argument("--work", type=Path, help="folder for run folders (default: a temporary folder, removed)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (seconds)")
    parser.add_argument("--skip", default="", help="steps to leave out, comma-separated")
    parser.add_argument("--only", default="", help="run only these steps (env and data always run)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds for the whole run (default 480)")
    parser.add_argument("--accuracy-epochs", type=int, help="epochs of the accuracy run (default: fitted to the time)")
    parser.add_argument("--compare-epochs", type=int, help="epochs of each compare variant (default: fitted)")
    args = parser.parse_args(argv)
    names = [n for n, _ in STEPS]
    for option in ("skip", "only"):
        chosen = [s.strip() for s in getattr(args, option).split(",") if s.strip()]
        unknown = [s for s in chosen if s not in names]
        if unknown:
            parser.error(f"--{option}: unknown step {unknown[0]!r}; steps are {', '.join(names)}")
        setattr(args, option, set(chosen))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        print("error: no CUDA device here; the full check needs a GPU (use --smoke for the tiny CPU run)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / LOG_FILE).write_text("", encoding="utf-8")
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="gpu_check-")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VDCNN_CACHE", str(work / "encode-cache"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    size = SMOKE if args.smoke else FULL
    if size["threads"]:
        torch.set_num_threads(size["threads"])
    c = Check(args.out, work, args.smoke, device, time.monotonic() + args.time_limit, size)
    c.report = {"schema": 1, "smoke": args.smoke, "command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                time.gmtime()), "time_limit_s": args.time_limit, "device": None, "steps": {}, "goals": [],
                "_t0": time.monotonic()}
    skip = args.skip | ({n for n, _ in STEPS} - args.only - {"env", "data"} if args.only else set())
    c.shared.update(compare_planned="compare" not in skip, accuracy_epochs=args.accuracy_epochs,
                    compare_epochs=args.compare_epochs)
    old_handler = signal.signal(signal.SIGTERM, _raise_time_limit)
    timer = threading.Timer(max(0.0, args.time_limit), os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    try:
        timer.start()
        run_steps(c, skip)
    except TimeLimit:
        for name, _ in STEPS:
            entry = c.report["steps"].setdefault(name, {"status": None, "seconds": None, "results": {}})
            if entry["status"] == "running":
                entry.update(status="stopped", reason="stopped at the time limit")
            elif entry["status"] is None:
                entry.update(status="skipped", reason="time limit reached")
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late time-limit signal must not break the last save
        c.save()
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    signal.signal(signal.SIGTERM, old_handler)
    print(format_table(c.report))
    failed = [n for n, e in c.report["steps"].items() if e["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
