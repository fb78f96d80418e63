"""The ``vdcnn`` command: parses options, calls the library, prints results.

Installed, this folder is the ``vdcnn.cli`` package (``python -m vdcnn`` and the ``vdcnn``
script run it); the recipe options of ``train``, ``compare`` and ``info`` come from the one
table ``vdcnn.config.OPTIONS``.
"""

from __future__ import annotations

import enum
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from vdcnn.config import CHOICES, OPTIONS, OPTIONS_BY_NAME, build_config, option_type
from vdcnn.errors import ConfigError, VdcnnError

# The choices of predict, explain and export, spelled here so that parsing the command line imports
# no inference code (tests/test_cli.py checks them against the library's).
EXPORT_FORMATS = ("onnx", "torchscript")
EXPORT_PRECISIONS = ("int8",)
EXPLAIN_FORMATS = ("terminal", "jsonl", "html")
EXPLAIN_METHODS = ("integrated_gradients", "occlusion")
INPUT_FORMATS = ("auto", "lines", "csv", "tsv", "jsonl")
INPUT_FORMAT_HELP = "auto: a table by the file's extension (.csv, .tsv, .jsonl), else one text per line; or name one."
TEXT_COLUMN_HELP = "Text column of a table (default: the first named text, sentence, review, content...)."
OUTPUT_FORMATS = ("tsv", "jsonl")
LONG_TEXT_MODES = ("truncate", "windows")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Very deep convolutional networks (VDCNN) for text classification.",
)


def _choices(name: str, values: tuple[str, ...]) -> Any:
    """A str Enum, so that ``--help`` lists the choices and click checks them."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Device = _choices("Device", CHOICES[("train", "device")])
OutputFormat = _choices("OutputFormat", OUTPUT_FORMATS)
InputFormat = _choices("InputFormat", INPUT_FORMATS)
ExportFormat = _choices("ExportFormat", EXPORT_FORMATS)
ExportPrecision = _choices("ExportPrecision", EXPORT_PRECISIONS)
ExplainFormat = _choices("ExplainFormat", EXPLAIN_FORMATS)
ExplainMethod = _choices("ExplainMethod", ("auto", *EXPLAIN_METHODS))
ShortcutVariants = _choices("ShortcutVariants", ("both", "on", "off"))
BATCH_HELP = "Texts per forward pass."
DEVICE_HELP = "auto (CUDA when present), cpu or cuda."
LongText = _choices("LongText", LONG_TEXT_MODES)
LONG_TEXT_HELP = ("Texts longer than the run's max length: cut them, or average the logits of overlapping windows "
                  "(default: the run's, windows when over 10 % of its training texts were cut).")
SHORTCUT_VARIANTS = {"both": [False, True], "on": [True], "off": [False]}


def err(message: str) -> None:
    typer.echo(message, err=True)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    from vdcnn.runtime import tune_malloc

    tune_malloc()  # the command owns its process: keep activation buffers in the heap (see tune_malloc)


def _option_parameter(option) -> inspect.Parameter:
    """The Typer parameter of a recipe option (``vdcnn.config.OPTIONS``)."""
    kind = option_type(option)
    if kind is bool:
        default = typer.Option(None, f"{option.flag}/--no-{option.flag[2:]}", help=option.help)
        annotation: Any = Optional[bool]
    elif kind is list:
        default, annotation = typer.Option([], option.flag, help=option.help), List[str]
    else:
        default, annotation = typer.Option(None, option.flag, help=option.help), Optional[kind]
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def recipe_options(names: Optional[set] = None, exclude: set = frozenset()) -> Callable:
    """Give ``func(..., **options)`` the recipe options (all, or ``names``), less ``exclude`` and
    those it declares itself; they arrive in ``options`` by name."""

    def decorate(func: Callable) -> Callable:
        own = inspect.signature(func, eval_str=True)
        added = [_option_parameter(o) for o in OPTIONS if (names is None or o.name in names)
                 and o.name not in exclude and o.name not in own.parameters]
        params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD] + added
        func.__signature__ = own.replace(parameters=params)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate


def _given(options: dict) -> list[str]:
    return [OPTIONS_BY_NAME[k].flag for k, v in options.items() if v not in (None, [])]


def _default_out(cfg) -> Path:
    name = Path(cfg.data.dataset).name.split(".")[0] or "run"
    depth = cfg.model.get("depth") or "custom"
    sc = "sc" if cfg.model.get("shortcut") else "plain"
    return Path("runs") / f"{name}-d{depth}-{sc}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
@recipe_options()
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML preset (path or preset name)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/NAME-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its saved state "
                                "(a worker that `torchrun --max-restarts` starts again continues by itself)."),
    set_: List[str] = typer.Option([], "--set", help="Any setting, e.g. --set train.momentum=0.8."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    profile: bool = typer.Option(False, "--profile",
                                 help="Time each phase (data, forward, backward, optimiser, validation) per epoch."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="Also fit TF-IDF + logistic regression on the same split and print both."),
    **options: Any,
) -> None:
    """Train a VDCNN on a dataset; the run folder holds everything needed to use it.

    Without --config the automatic recipe picks what the options leave open from the training data.
    """
    from vdcnn.train import train as run_training

    if resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN (the run folder to continue)")
        if config is not None or _given(options) or set_:
            raise ConfigError("--resume takes no other settings: the run folder knows its dataset and recipe")
        result = run_training(None, out, resume=True, log=err, progress=progress, profile=profile)
    else:
        cfg = build_config(config, options, set_)
        out = out or _default_out(cfg)
        result = run_training(cfg, out, log=err, progress=progress, profile=profile)
    if not result.is_main:  # under torchrun, rank 0 alone reports and fits the baseline
        return
    from vdcnn.checkpoint import read_config

    meta = read_config(result.out_dir)
    best, saved = meta.get("best") or {}, (meta.get("results") or {}).get("val_acc")
    if best.get("val_micro_f1") is not None:  # multi-label
        err(f"best validation micro-F1 {best['val_micro_f1'] * 100:.2f} % (macro-F1 {best['val_macro_f1'] * 100:.2f} %) "
            f"at epoch {result.best_epoch}; run folder: {result.out_dir}")
    elif saved is not None and abs(saved - result.best_val_accuracy) > 1e-9:  # the linear path was added
        err(f"validation accuracy {saved * 100:.2f} % (the network alone: {result.best_val_accuracy * 100:.2f} % at "
            f"epoch {result.best_epoch}); run folder: {result.out_dir}")
    else:
        err(f"best validation accuracy {result.best_val_accuracy * 100:.2f} % at epoch {result.best_epoch}; "
            f"run folder: {result.out_dir}")
    if baseline:
        from vdcnn.baseline import baseline_for_run

        err(baseline_for_run(result.out_dir)[1])


@app.command(name="baseline")
@recipe_options(names={"val_fraction", "split_seed", "limit", "seed", "text_column", "label_column", "test_split"})
def baseline_cmd(
    dataset: str = typer.Option(..., help="Registry name or a local file/folder, as for train."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON."),
    **options: Any,
) -> None:
    """TF-IDF + logistic regression on exactly the split `vdcnn train` uses: the figure to beat."""
    from vdcnn.baseline import run_baseline
    from vdcnn.fileio import write_json

    result = run_baseline(build_config(None, {**options, "dataset": dataset}))
    typer.echo(f"{result['name']} ({result['analyzer']}), fitted on {result['train_rows']:,} rows in "
               f"{result['fit_s']:.1f} s")
    multi = any(r and "micro_f1" in r for r in (result["val"], result["test"]))
    if multi:
        typer.echo(f"{'split':<12}{'rows':>7}{'micro-F1':>11}{'macro-F1':>11}   (one-vs-rest; thresholds tuned on "
                   "validation)")
    else:
        typer.echo(f"{'split':<12}{'rows':>7}{'accuracy':>11}{'macro-F1':>11}")
    for split in ("val", "test"):
        if result[split]:
            r = result[split]
            first = r["micro_f1"] if multi else r["accuracy"]
            typer.echo(f"{'validation' if split == 'val' else 'test':<12}{r['n']:>7}{first * 100:>10.2f}%"
                       f"{r['macro_f1'] * 100:>10.2f}%")
    if json_out is not None:
        write_json(json_out, result)
        err(f"scores written to {json_out}")


@app.command(name="eval")
def evaluate(
    run: Path = typer.Argument(..., help="Run folder."),
    data: Optional[str] = typer.Argument(None, help="Dataset name or path (default: the run's dataset)."),
    dataset: Optional[str] = typer.Option(None, help="Same as DATA."),
    split: Optional[str] = typer.Option(None, help="Split to score (default: the run's test split)."),
    json_out: Optional[Path] = typer.Option(None, "--json", "--report-json", help="Write the report as JSON."),
    plot: Optional[Path] = typer.Option(None, help="Also draw the confusion matrix into this PNG (eval writes nothing unless asked)."),
    text_column: List[str] = typer.Option([], help="Text column(s) of a local file."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a local file."),
    ensemble: List[Path] = typer.Option([], "--ensemble", help="Average probabilities with this run or bundle too (repeatable; same labels)."),
    batch_size: int = typer.Option(256, min=1, help=BATCH_HELP),
    device: Device = typer.Option("auto", help=DEVICE_HELP),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 inference where the CPU/GPU supports it (faster, ~1e-3 off)."),
    long_text: Optional[LongText] = typer.Option(None, "--long-text", help=LONG_TEXT_HELP),
) -> None:
    """Score a trained run (or an ensemble with --ensemble): accuracy, macro-F1, per-class table, confusion matrix,
    and the expected calibration error of the raw and the calibrated probabilities (with a reliability diagram)."""
    from vdcnn.calibration import calibration_report, format_calibration_report
    from vdcnn.data import load_split, run_label_rule
    from vdcnn.evaluate import classification_report, format_report
    from vdcnn.checkpoint import read_config
    from vdcnn.classifier import load_ensemble
    from vdcnn.fileio import write_json

    if data and dataset and data != dataset:
        raise ConfigError("give the dataset either as DATA or as --dataset, not both")
    meta = read_config(run)
    run_data = meta.get("run", {}).get("data", {})
    source = data or dataset or run_data.get("dataset")
    if not source:
        raise ConfigError("the run does not record its dataset; give DATA")
    split = split or run_data.get("test_split", "test")
    same = source == run_data.get("dataset")
    clf = load_ensemble([run, *ensemble], device=device.value, batch_size=batch_size, bf16=bf16,
                        long_text=long_text.value if long_text else None)
    ds = load_split(source, split, text_columns=text_column or (run_data.get("text_columns") if same else None),
                    label_column=label_column or (run_data.get("label_column") if same else None),
                    label_rule=run_label_rule(meta, str(Path(run) / "config.json")),
                    trained_on=run_data.get("dataset"))
    raw, probs = clf.predict_proba_raw_and_calibrated(ds.texts)
    if clf.multi_label:  # per-label thresholds; no confusion matrix
        from vdcnn import multilabel as ml

        report = ml.report(ds.labels, probs, clf.thresholds, clf.labels, clf.at_least_one)
        report["calibration"] = ml.calibration_report(clf, raw, probs, ds.labels)
        report["source"] = ds.source
        typer.echo(f"{ds.source}")
        typer.echo(ml.format_report(report))
        typer.echo(ml.format_calibration_report(report["calibration"]))
    else:
        report = classification_report(ds.labels, probs.argmax(1), clf.labels, None)
        report["source"] = ds.source
        report["calibration"] = calibration_report(clf, raw, probs, ds.labels)
        typer.echo(f"{ds.source}")
        typer.echo(format_report(report))
        typer.echo(format_calibration_report(report["calibration"]))
    if json_out is not None:
        write_json(json_out, report)
        err(f"report written to {json_out}")
    if plot is None:
        return
    if clf.multi_label:
        err("--plot: a multi-label run has no confusion matrix or reliability diagram to draw; nothing plotted")
        return
    from vdcnn.plots import plot_confusion

    what = split if same else f"{Path(str(source)).name.split('.')[0]}-{split}"
    try:
        who = Path(run).name + (f" + {len(ensemble)} more" if ensemble else "")
        plot_confusion(report, plot, title=f"{who} on {what}")
        err(f"confusion matrix plot: {plot}")
    except Exception as exc:  # noqa: BLE001 - a plot must never lose the printed result
        err(f"warning: could not write the plot {plot}: {exc}")
    from vdcnn.plots import plot_calibration_report

    reliability_path = Path(plot).parent / f"reliability-{what}.png"
    try:
        plot_calibration_report(report["calibration"], reliability_path, title=f"{who} on {what}")
        err(f"reliability diagram: {reliability_path}")
    except Exception as exc:  # noqa: BLE001 - a plot must never lose the printed result
        err(f"warning: could not write the plot {reliability_path}: {exc}")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder."),
    file: str = typer.Argument("-", help="Text file, one text per line; - for stdin."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", min=1,
                                        help="Labels per text (default 1). A multi-label run prints every label at "
                                             "or above its threshold, most probable first (at most K with --top-k; "
                                             "when no label passes, the most probable one, so no line is empty)."),
    fmt: OutputFormat = typer.Option("tsv", "--format", help="tsv (label<TAB>prob) or jsonl (all probabilities)."),
    input_format: InputFormat = typer.Option("auto", help=INPUT_FORMAT_HELP),
    text_column: Optional[str] = typer.Option(None, help=TEXT_COLUMN_HELP),
    ensemble: List[Path] = typer.Option([], "--ensemble", help="Average probabilities with this run or bundle too (repeatable; same labels)."),
    batch_size: int = typer.Option(256, min=1, help=BATCH_HELP),
    chunk_size: int = typer.Option(4096, min=1, help="Lines read at a time (bounds memory)."),
    device: Device = typer.Option("auto", help=DEVICE_HELP),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 inference where the CPU/GPU supports it (faster, ~1e-3 off)."),
    long_text: Optional[LongText] = typer.Option(None, "--long-text", help=LONG_TEXT_HELP),
) -> None:
    """Classify texts: one output line per input line, in input order.

    Input is never refused for its bytes: invalid UTF-8 becomes U+FFFD and NUL bytes spaces, and a
    warning on stderr says how many lines were affected. (Training and eval data are refused instead.)
    """
    from vdcnn.classifier import load_ensemble
    from vdcnn.data import read_texts
    from vdcnn.predict import format_predictions

    clf = load_ensemble([run, *ensemble], device=device.value, batch_size=batch_size, bf16=bf16,
                        long_text=long_text.value if long_text else None)
    if not clf.multi_label:
        top_k = min(top_k or 1, len(clf.labels))
    stats: dict = {}
    chunks = read_texts(file, input_format.value, text_column, chunk_size=chunk_size, stats=stats)
    out = sys.stdout
    for _texts, probs in clf.predict_stream(chunks):
        if clf.multi_label:
            from vdcnn.multilabel import format_predictions as format_multi

            lines = format_multi(probs, clf.labels, clf.thresholds, top_k, fmt.value, clf.at_least_one)
        else:
            lines = format_predictions(probs, clf.labels, top_k, fmt.value)
        out.write("\n".join(lines) + "\n")
        out.flush()
    # Input is never refused for its bytes (one output line per input line); say what was repaired.
    bad, nul = stats.get("invalid_utf8_lines", 0), stats.get("nul_lines", 0)
    if bad or nul:
        err(f"warning: {bad} of {stats['lines']} lines had invalid UTF-8 (replaced by U+FFFD) and {nul} had NUL "
            f"bytes (replaced by spaces)")


@app.command()
def explain(
    run: Path = typer.Argument(..., help="Run folder (or export bundle: occlusion only)."),
    file: str = typer.Argument("-", help="Text file, one text per line; - for stdin."),
    target: Optional[str] = typer.Option(None, help="Explain this label instead of the predicted one."),
    fmt: ExplainFormat = typer.Option("terminal", "--format", help="Coloured terminal text, jsonl or one html page."),
    method: ExplainMethod = typer.Option("auto", help="auto: integrated_gradients for run folders, else occlusion."),
    batch_size: int = typer.Option(256, min=1, help="Rows per forward pass (a text takes ~34)."),
    device: Device = typer.Option("auto", help=DEVICE_HELP),
    long_text: Optional[LongText] = typer.Option(None, "--long-text", help=LONG_TEXT_HELP),
    input_format: InputFormat = typer.Option("auto", help=INPUT_FORMAT_HELP),
    text_column: Optional[str] = typer.Option(None, help=TEXT_COLUMN_HELP),
) -> None:
    """Which characters or tokens drove each prediction: attributions over the text's characters."""
    from vdcnn.classifier import load_classifier
    from vdcnn.data import read_texts
    from vdcnn.explain import write_explanations

    clf = load_classifier(run, device=device.value, batch_size=batch_size,
                          long_text=long_text.value if long_text else None)
    write_explanations(clf, read_texts(file, input_format.value, text_column, chunk_size=64), sys.stdout, fmt.value,
                       target, method.value)


@app.command()
@recipe_options(names={"depth", "stages", "shortcut", "shortcut_kind", "downsample", "encoder", "vocab_size"})
def info(
    target: Optional[str] = typer.Argument(None, help="Run folder or YAML config."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML preset (path or preset name)."),
    max_length: Optional[int] = typer.Option(None, help="Length for the FLOPs count."),
    num_classes: int = typer.Option(4, help="Classes (when not a run)."),
    **options: Any,
) -> None:
    """Layout per stage, parameter count and forward FLOPs per text."""
    from vdcnn.checkpoint import read_config
    from vdcnn.classifier import run_max_length
    from vdcnn.encoders import encoder_from_dict
    from vdcnn.model import ModelConfig, count_parameters, describe, forward_flops, VDCNN

    extra = ""
    if target is not None and Path(target).is_dir():
        meta = read_config(target)
        model_cfg = ModelConfig.from_dict(meta["model"])
        length = max_length or run_max_length(meta)
        enc = encoder_from_dict(meta["encoder"])
        extra = f"encoder: {enc.name} (vocab {enc.vocab_size}); labels: {', '.join(meta['labels'])}"
        res = meta.get("results") or meta.get("best")
        if res:
            extra += "\nresults: " + ", ".join(f"{k} {_result_value(k, v)}" for k, v in res.items() if v is not None)
    else:
        cfg = build_config(config or (Path(target) if target else None), {**options, "max_length": max_length})
        vocab = 257 if cfg.encoder.name == "byte" else (cfg.encoder.vocab_size if cfg.encoder.name == "subword" else 71)
        model_cfg = cfg.model_config(vocab, num_classes)
        length = cfg.encoder.max_length
        extra = f"encoder: {cfg.encoder.name} (vocab {vocab}{' when trained' if cfg.encoder.name == 'subword' else ''})"
    model = VDCNN(model_cfg)
    rows = describe(model_cfg, length)
    typer.echo(
        f"VDCNN depth {model_cfg.conv_layers}: stages {list(model_cfg.blocks)}, channels {list(model_cfg.channels)}, "
        f"shortcut {'on (' + model_cfg.shortcut_kind + ')' if model_cfg.shortcut else 'off'}, "
        f"downsample {model_cfg.downsample}, padding {'masked' if model_cfg.mask_padding else 'unmasked (paper)'}"
    )
    typer.echo(f"{'part':<22}{'blocks':>7}{'channels':>10}{'length':>8}{'parameters':>14}")
    for r in rows:
        typer.echo(f"{r['stage']:<22}{r['blocks']:>7}{r['channels']:>10}{r['length']:>8}{r['params']:>14,}")
    typer.echo(f"parameters: {count_parameters(model):,} ({count_parameters(model) / 1e6:.2f} M)")
    typer.echo(f"forward FLOPs per text at length {length}: {forward_flops(model_cfg, length) / 1e9:.3f} G")
    if extra:
        typer.echo(extra)


def _parse_depths(text: str) -> List[int]:

    try:
        depths = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--depths expects comma-separated integers such as 9,49, got {text!r}") from None
    if not depths:
        raise ConfigError("--depths is empty")
    return depths


@app.command()
@recipe_options(exclude={"depth", "stages", "shortcut"})
def compare(
    runs: Optional[List[Path]] = typer.Argument(None, metavar="RUN",
                                                help="Finished run folders to tabulate (no training)."),
    depths: Optional[str] = typer.Option(None, help="Depths to train, comma-separated (default 9,17,29,49)."),
    shortcuts: Optional[ShortcutVariants] = typer.Option(None, "--shortcuts", case_sensitive=False,
                                                         help="Shortcut variants to train: both (default), on or "
                                                              "off. (train's --shortcut/--no-shortcut is one model's "
                                                              "switch.)"),
    shortcut_old: Optional[ShortcutVariants] = typer.Option(None, "--shortcut", case_sensitive=False, hidden=True,
                                                            help="Deprecated spelling of --shortcuts."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Study folder: one run folder per variant plus the tables "
                                            "(default: runs/compare-DATASET; with RUN folders, their parent)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML preset (path or preset name)."),
    set_: List[str] = typer.Option([], "--set", help="Any setting, e.g. --set train.momentum=0.8."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    equal_time: bool = typer.Option(False, "--equal-time",
                                    help="Compare at equal training time: every variant gets the time budget "
                                         "(--time-budget, the preset's or the automatic recipe's), so deeper "
                                         "variants run fewer epochs. Default: the same epochs for every variant."),
    **options: Any,
) -> None:
    """Shortcut x depth study: train one run per depth and shortcut setting (same data, seed and recipe),
    then tabulate and plot them. Run the same command again to resume an interrupted study.
    With RUN folders, tabulates those runs instead (no training). Takes every recipe option of `train`.
    """
    from vdcnn.compare import OUTPUT_FILES, collect_histories, collect_runs, format_table, run_compare, write_outputs

    if shortcut_old is not None:
        err("warning: `vdcnn compare --shortcut` is deprecated (in train it is an on/off switch); use --shortcuts")
        if shortcuts is not None and shortcuts != shortcut_old:
            raise ConfigError("give the shortcut variants once, as --shortcuts")
        shortcuts = shortcuts or shortcut_old
    if runs:
        if (config is not None or _given(options) or set_ or depths is not None or shortcuts is not None
                or equal_time):
            raise ConfigError("with RUN folders, compare tabulates them as they are; training options "
                              "(--depths, --shortcuts, --config, recipe flags) do not apply")
        rows = collect_runs(runs)
        parents = {Path(r).resolve().parent for r in runs}
        out = out or (parents.pop() if len(parents) == 1 else Path("."))
        paths = write_outputs(rows, collect_histories(rows), out)
    else:
        variants = SHORTCUT_VARIANTS[shortcuts.value if shortcuts else "both"]
        base = build_config(config, options, set_)
        out = out or Path("runs") / f"compare-{Path(base.data.dataset).name.split('.')[0] or 'data'}"
        rows = run_compare(base, _parse_depths(depths or "9,17,29,49"), variants, out, log=err, progress=progress,
                           equal_time=equal_time)
        paths = {k: out / v for k, v in OUTPUT_FILES.items()}
    typer.echo(format_table(rows))
    typer.echo("")
    for path in paths.values():
        typer.echo(f"wrote {path}")


@app.command(name="export")
def export_model(
    run: Path = typer.Argument(..., help="Run folder."),
    to: Optional[ExportFormat] = typer.Option(None, "--to", "-t", help="Bundle kind: onnx (default) or torchscript."),
    fmt: Optional[ExportFormat] = typer.Option(None, "--format", "-f", hidden=True,
                                               help="Deprecated spelling of --to."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Bundle folder (default: RUN/export-KIND, RUN/export-onnx-int8 with "
                                            "--quantize int8)."),
    quantize: Optional[ExportPrecision] = typer.Option(
        None, "--quantize", help="int8: ONNX Runtime static quantization (ONNX only), calibrated on training texts "
                                 "of the run's dataset."),
    calibration: Optional[str] = typer.Option(None, "--calibration",
                                              help="With --quantize: calibrate on this text file (one text per line) "
                                                   "instead of the run's training texts."),
    calibration_rows: int = typer.Option(512, "--calibration-rows", min=1,
                                         help="With --quantize: how many texts calibrate the int8 ranges."),
) -> None:
    """Export a run for deployment (BatchNorm folded); `vdcnn predict BUNDLE` uses it."""
    from vdcnn.export import export_run

    if fmt is not None:
        err("warning: `vdcnn export --format` is deprecated (in predict and explain --format is the output "
            "format); use --to")
        if to is not None and to != fmt:
            raise ConfigError("give the bundle kind once, as --to")
    kind = to or fmt
    if quantize is None and calibration is not None:
        raise ConfigError("--calibration is for --quantize int8")
    texts = None
    if calibration is not None:
        from vdcnn.data import read_lines

        texts = [t for chunk in read_lines(calibration) for t in chunk if t.strip()][:calibration_rows]
        if not texts:
            raise ConfigError(f"{calibration}: no texts to calibrate on")
    bundle = export_run(run, kind.value if kind else "onnx", out, quantize=quantize.value if quantize else None,
                        calibration_texts=texts, calibration_rows=calibration_rows)
    typer.echo(str(bundle))
    for path in sorted(p for p in bundle.iterdir() if p.is_file() and not p.name.startswith(".")):
        typer.echo(f"  {path.name:<12} {path.stat().st_size / 1e6:10.3f} MB")
    if quantize is not None:
        import json

        q = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))["quantization"]
        typer.echo(f"int8: the fp32 label kept on {q['calibration_label_agreement'] * 100:.2f} % of the "
                   f"{q['calibration']['rows']} calibration texts")


def _result_value(key: str, value: object) -> str:
    """Accuracies and F1 as percentages, losses to 4 decimals, the rest as is."""
    if isinstance(value, float) and key.endswith(("_acc", "_f1")):
        return f"{value * 100:.2f} %"
    if isinstance(value, float) and "loss" in key:
        return f"{value:.4f}"
    return str(value)


def _is_click_error(exc: BaseException) -> bool:
    """A command-line error (click's ClickException), whichever click raised it: typer vendors its own
    copy, whose classes are not the ``click`` package's, and this module imports neither privately."""
    return any(c.__name__ == "ClickException" for c in type(exc).__mro__)


def _exit_on_click_error(exc: Any) -> None:
    """Bare ``vdcnn`` / ``vdcnn train``: the help text; a bad option or argument: one line, not a usage box."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err(f"error: {exc.format_message()}{hint}")
    sys.exit(exc.exit_code)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""

    debug = "--debug" in sys.argv[1:]

    def _terminate(signum, frame):  # SIGTERM before training starts: stop like Ctrl-C (training saves first)
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False, prog_name="vdcnn")
        sys.exit(code if isinstance(code, int) else 0)
    except SystemExit:
        raise
    except typer.Abort:
        err("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if _is_click_error(exc):
            _exit_on_click_error(exc)
        if debug:
            raise
        from vdcnn.train import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            err(str(exc))
            sys.exit(130)
        if isinstance(exc, VdcnnError):
            err(f"error: {exc}")
            sys.exit(2)
        if isinstance(exc, MemoryError):
            err("error: out of memory; lower --batch-size or --max-length")
            sys.exit(1)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err(f"error: {type(exc).__name__}: {text} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
