"""Speed of vdcnn against the plain reference, measured in the same run.

    python benchmarks/speed.py [--depths 9,29] [--n 2048] [--train-steps 8] [--skip-train]
                               [--whole-process] [--run-d9 RUN] [--run-d29 RUN]

Prints one table: figure, reference, ratio, machine. With ``--whole-process`` a second table times
whole commands, wall clock, start-up included: ``vdcnn predict RUN FILE`` (fp32, ``--bf16``, and
the run's int8 bundle) against ``python benchmarks/reference.py predict FILE`` on the 7,600 AG News
test texts, with each one's accuracy; and ``vdcnn train`` (4,000 rows, 1 epoch, validation and test
scoring) against ``reference.py train`` doing the same. The model is the reference's (char
encoder, length 1024, the paper's layout): ``--run-dN`` gives trained weights of that model (its
config's max_length is set to 1024 in a copy, so both sides read the same characters); without,
random weights (accuracy then near 25 %, speed the same). Texts are real AG News test
rows from $VDCNN_DATA_DIR (both sides get the same texts). Inference: the
reference pads every text to 1024 and runs batches of 256; vdcnn goes through
``Classifier.predict_proba`` (encoding included, length-bucketed batches, folded
BatchNorm, inference mode); int8 is the same model's ``vdcnn export --quantize int8`` bundle run
by ONNX Runtime. Training: samples/s over the same number of steps,
batch 64 on CPU (128 on GPU), reference at fixed length 1024 in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.reference import PlainVDCNN  # noqa: E402
from vdcnn.batching import Encoded, batch_order, iterate_ids, make_batch  # noqa: E402
from vdcnn.data import load_split  # noqa: E402
from vdcnn.encoders import CharEncoder  # noqa: E402
from vdcnn.model import VDCNN, ModelConfig, fold_batchnorm  # noqa: E402
from vdcnn.predict import Classifier  # noqa: E402
from vdcnn.runtime import bf16_supported, tune_malloc  # noqa: E402


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def inference_reference(depth: int, texts: list[str], device: str) -> float:
    torch.manual_seed(0)
    ref = PlainVDCNN(depth).to(device).eval()
    ids, _ = CharEncoder().encode_batch(texts, 1024)
    ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
    batch = 1024 if device == "cuda" else 256

    def run_ref():
        with torch.no_grad():
            for i in range(0, len(ids_t), batch):
                ref(ids_t[i:i + batch])

    return len(texts) / timed(run_ref)


def inference_ours(depth: int, texts: list[str], device: str, bf16: bool = False) -> float:
    torch.manual_seed(0)
    model = fold_batchnorm(VDCNN(ModelConfig(depth=depth)).eval())
    batch = 1024 if device == "cuda" else 256
    clf = Classifier(model, CharEncoder(), ["a", "b", "c", "d"], 1024, device, batch, bf16=bf16)
    return len(texts) / timed(lambda: clf.predict_proba(texts))


def inference_int8(depth: int, texts: list[str]) -> float:
    """Texts/s of the int8 ONNX bundle of the same model (BatchNorm statistics of real texts),
    through ``OnnxClassifier.predict_proba`` like the fp32 rows."""
    from vdcnn.classifier import load_bundle
    from vdcnn.export import export_run

    with tempfile.TemporaryDirectory(prefix="vdcnn-speed-int8-") as tmp:
        run = predict_run(depth, None, Path(tmp) / "run")
        calibration = load_split("ag_news", "train").texts[:512]
        clf = load_bundle(export_run(run, "onnx", Path(tmp) / "int8", quantize="int8",
                                     calibration_texts=calibration))
        return len(texts) / timed(lambda: clf.predict_proba(texts))


def _train_data(texts: list[str], device: str, steps: int):
    batch = 128 if device == "cuda" else 64
    ids, lengths = CharEncoder().encode_batch(texts, 1024)
    labels = np.random.default_rng(0).integers(0, 4, len(texts))
    data = Encoded(ids, lengths, labels)
    order = batch_order(lengths, batch, np.random.default_rng(0), bucket=True)[:steps]
    return data, order, sum(len(i) for i in order)


def training_reference(depth: int, texts: list[str], device: str, steps: int) -> float:
    data, order, seen = _train_data(texts, device, steps)
    torch.manual_seed(0)
    ref = PlainVDCNN(depth).to(device).train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    ref_batches = [make_batch(data, idx, trim=False, device=device) for idx in order]

    def run_ref():
        for x, _, y in ref_batches:
            loss = F.cross_entropy(ref(x), y)
            opt_ref.zero_grad()
            loss.backward()
            opt_ref.step()

    return seen / timed(run_ref)


def training_ours(depth: int, texts: list[str], device: str, steps: int, bf16: bool) -> float:
    data, order, seen = _train_data(texts, device, steps)
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=depth)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)  # as vdcnn.train does

    def run_ours():
        for idx in order:
            x, n, y = make_batch(data, idx, trim=True, device=device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x, n).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return seen / timed(run_ours)


# --- whole process -------------------------------------------------------------------------------

REFERENCE = _HERE / "reference.py"
TRAIN_ROWS = 4000


def _vdcnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "vdcnn", *args]


def wall(cmd: list[str], stdout_path: Path | None = None) -> float:
    """Seconds ``cmd`` takes as a process of its own; its stdout to ``stdout_path``."""
    start = time.perf_counter()
    with open(stdout_path or os.devnull, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, cwd=_HERE.parent)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def predict_run(depth: int, trained: Path | None, folder: Path) -> Path:
    """A run folder of the reference's model at ``depth``: ``trained``'s weights, or random ones."""
    from vdcnn.checkpoint import make_meta, save_weights

    folder.mkdir(parents=True)
    if trained is not None:
        meta = json.loads((trained / "config.json").read_text())
        if meta["model"].get("depth") != depth or meta["encoder"].get("type") != "char":
            sys.exit(f"{trained}: not a depth-{depth} char run")
        shutil.copy(trained / "model.safetensors", folder / "model.safetensors")
    else:
        from vdcnn.model import recalibrate_batchnorm

        torch.manual_seed(0)
        model = VDCNN(ModelConfig(depth=depth, vocab_size=CharEncoder().vocab_size, num_classes=4))
        # BatchNorm statistics of real texts, as a trained model has: without them activations of an
        # untrained deep net drift so far that int8 calibration finds empty ranges.
        ids, lengths = CharEncoder().encode_batch(load_split("ag_news", "train").texts[:1024], 1024)
        recalibrate_batchnorm(model, [(x, n) for _, x, n in iterate_ids(ids, lengths, 128)])
        save_weights(folder / "model.safetensors", model)
        meta = make_meta(model.config, CharEncoder(), ["World", "Sports", "Business", "Sci/Tech"], run={})
    meta.setdefault("run", {}).setdefault("encoder", {})["max_length"] = 1024  # the reference's job
    meta.pop("long_text", None)  # cut at 1024, as the reference does
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def whole_process(depths: list[int], trained: dict[int, Path | None], train: bool, n: int,
                  train_rows: int = TRAIN_ROWS) -> list[tuple]:
    """Rows (figure, vdcnn s, reference s, vdcnn accuracy, reference accuracy) of whole commands."""
    from vdcnn.export import export_run

    data = os.environ["VDCNN_DATA_DIR"]
    test = load_split("ag_news", "test")
    step = max(1, len(test.texts) // n)
    test_texts, labels = test.texts[::step][:n], np.asarray(test.labels)[::step][:n]
    calibration = load_split("ag_news", "train").texts[:512]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdcnn-speed-") as tmp:
        tmp_path = Path(tmp)
        texts_file = tmp_path / "test.txt"
        texts_file.write_text("".join(" ".join(t.split()) + "\n" for t in test_texts), encoding="utf-8")

        def accuracy_of(path: Path, names: list[str] | None) -> float:
            lines = path.read_text(encoding="utf-8").splitlines()
            got = [names.index(x.split("\t")[0]) if names else int(x) for x in lines]
            return float((np.asarray(got) == labels).mean())

        for depth in depths:
            run = predict_run(depth, trained.get(depth), tmp_path / f"run-d{depth}")
            names = json.loads((run / "config.json").read_text())["labels"]
            export_run(run, "onnx", tmp_path / f"int8-d{depth}", quantize="int8", calibration_texts=calibration)
            out = tmp_path / "out.txt"
            ref_s = wall([sys.executable, str(REFERENCE), "predict", str(texts_file), "--depth", str(depth)], out)
            ref_acc = accuracy_of(out, None)
            variants = [("fp32", [str(run)]), ("bf16", [str(run), "--bf16"]),
                        ("int8", [str(tmp_path / f"int8-d{depth}")])]
            for name, target in variants:
                if name == "bf16" and not bf16_supported("cpu"):
                    continue
                seconds = wall(_vdcnn("predict", target[0], str(texts_file), *target[1:]), out)
                rows.append((f"predict d{depth} {name}, {len(labels):,} texts (s)", seconds, ref_s, accuracy_of(out, names),
                             ref_acc))
                print(f"  {rows[-1]}", file=sys.stderr)
        if train:
            train_csv = Path(data) / "ag_news" / "train.csv.gz"
            test_csv = Path(data) / "ag_news" / "test.csv.gz"
            ref_s = wall([sys.executable, str(REFERENCE), "train", str(train_csv), "--test", str(test_csv),
                          "--limit", str(train_rows), "--depth", "9"])
            ours = _vdcnn("train", "--config", "vdcnn9", "--dataset", "ag_news", "--limit", str(train_rows),
                          "--epochs", "1", "--batch-size", "64", "--set", "train.time_budget=null",
                          "--no-progress", "--no-baseline", "--out", str(tmp_path / "train-run"))
            rows.append((f"train d9 fp32, {train_rows:,} rows 1 epoch + val + test (s)", wall(ours), ref_s,
                         None, None))
    return rows


def print_whole_process(rows: list[tuple], where: str) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'whole process':<{width}}  {'vdcnn':>7}  {'reference':>9}  {'ratio':>6}  {'accuracy':>8}  "
          f"{'ref. acc.':>9}  machine")
    for name, ours, ref, acc, ref_acc in rows:
        a = "-" if acc is None else f"{acc * 100:.2f}"
        b = "-" if ref_acc is None else f"{ref_acc * 100:.2f}"
        print(f"{name:<{width}}  {ours:>7.1f}  {ref:>9.1f}  {ref / ours:>5.2f}x  {a:>8}  {b:>9}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="9,29")
    parser.add_argument("--n", type=int, default=2048, help="AG News test texts used (spread over the split)")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--whole-process", action="store_true", help="also time whole commands (see above)")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="rows of the whole-process training job")
    parser.add_argument("--skip-in-process", action="store_true", help="only the whole-process table")
    parser.add_argument("--skip-predict", action="store_true", help="whole process: the training row only")
    parser.add_argument("--run-d9", type=Path, default=None, help="trained depth-9 char run for --whole-process")
    parser.add_argument("--run-d29", type=Path, default=None, help="trained depth-29 char run for --whole-process")
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    all_texts = load_split("ag_news", "test").texts
    step = max(1, len(all_texts) // args.n)
    texts = all_texts[::step][: args.n]
    depths = [int(d) for d in args.depths.split(",")]
    if args.skip_in_process:
        print_whole_process(whole_process([] if args.skip_predict else depths, {9: args.run_d9, 29: args.run_d29}, not args.skip_train,
                                          args.n, args.train_rows), machine())
        return
    # The reference first, with the default allocator; then vdcnn, which tunes it.
    refs = {}
    for depth in depths:
        refs[("inference", depth)] = inference_reference(depth, texts, device)
        if not args.skip_train:
            refs[("training", depth)] = training_reference(depth, texts, device, args.train_steps)
    tune_malloc()
    bf16 = bf16_supported(device)
    rows = []
    for depth in depths:
        rows.append((f"{device} inference d{depth} fp32, texts/s", inference_ours(depth, texts, device),
                     refs[("inference", depth)]))
        if bf16:
            rows.append((f"{device} inference d{depth} bf16, texts/s", inference_ours(depth, texts, device, True),
                         refs[("inference", depth)]))
        if device == "cpu":
            rows.append((f"{device} inference d{depth} int8, texts/s", inference_int8(depth, texts),
                         refs[("inference", depth)]))
        if not args.skip_train:
            rows.append((f"{device} training d{depth} {'bf16' if device == 'cuda' else 'fp32'}, samples/s",
                         training_ours(depth, texts, device, args.train_steps, device == "cuda"),
                         refs[("training", depth)]))
            if bf16 and device == "cpu":
                rows.append((f"{device} training d{depth} bf16, samples/s",
                             training_ours(depth, texts, device, args.train_steps, True), refs[("training", depth)]))
        for row in rows[-5:]:
            print(f"  {row[0]}: {row[1]:.0f} vs {row[2]:.0f}", file=sys.stderr)
    where = machine()
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'vdcnn':>9}  {'reference':>9}  {'ratio':>6}  machine")
    for name, ours, ref in rows:
        print(f"{name:<{width}}  {ours:>9.0f}  {ref:>9.0f}  {ours / ref:>5.2f}x  {where}")
    if args.whole_process:
        print_whole_process(whole_process(depths, {9: args.run_d9, 29: args.run_d29}, not args.skip_train,
                                          args.n, args.train_rows), where)


if __name__ == "__main__":
    main()
