"""The shortcut x depth study: train (or collect) several runs and put them side by side.

``run_compare(base, depths, shortcuts, out_dir)`` trains one variant per depth and
shortcut setting into ``out_dir/<name>`` (``d9-plain``, ``d49-shortcut``, ...), one
after the other, with the same data, split, seed and recipe. Finished variants are
skipped and interrupted ones resumed, so running the same command again completes
an interrupted study. After every variant the comparison is rewritten:

```
OUT/
  compare.md       markdown table
  compare.csv      the same numbers, unformatted
  compare.png      training loss and validation accuracy per epoch, one line per variant
  grad_norms.png   mean gradient norm per stage and epoch (log scale)
  d9-plain/ ...    the run folders
```
``collect_runs(dirs)`` builds the same rows from existing run folders, without training.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import checkpoint as ckpt
from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .model import DEPTHS

OUTPUT_FILES = {"md": "compare.md", "csv": "compare.csv", "png": "compare.png", "grad_norms": "grad_norms.png"}

# Settings that do not change what a run learns: a run trained with other values still counts.
# Settings resolved per machine (bf16: on GPUs, off on CPUs unless asked for) never stop a resume.
_MACHINE_SETTINGS = {("train", "device"), ("train", "threads"), ("train", "bf16")}

# Row keys in table order, with their headers (terminal/markdown) and CSV names.
COLUMNS = [
    ("name", "run"),
    ("depth", "depth"),
    ("shortcut", "shortcut"),
    ("parameters", "params"),
    ("gflops", "GFLOPs"),
    ("best_val_acc", "best val acc"),
    ("test_acc", "test acc"),
    ("final_train_loss", "final train loss"),
    ("epochs", "epochs"),
    ("wall_time_s", "wall time"),
]
CSV_FIELDS = ["name", "depth", "shortcut", "parameters", "gflops", "best_val_acc", "best_epoch", "test_acc",
              "test_macro_f1", "final_train_loss", "epochs", "wall_time_s", "status", "dataset", "run_dir"]


def variant_name(depth: int, shortcut: bool) -> str:
    return f"d{depth}-{'shortcut' if shortcut else 'plain'}"


def plan_variants(base_cfg: RunConfig, depths: Sequence[int], shortcuts: Sequence[bool],
                  equal_time: bool = False) -> list[tuple[str, RunConfig]]:
    """One config per (depth, shortcut): a deep copy of ``base_cfg`` with only the model layout changed.

    Every variant trains the same epochs: a time budget (the preset's, or the one the automatic
    recipe would choose) would give deeper variants fewer. ``equal_time`` keeps it instead, to
    compare at equal training time."""
    depths = list(dict.fromkeys(depths))
    shortcuts = list(dict.fromkeys(bool(s) for s in shortcuts))
    if not depths:
        raise ConfigError("compare needs at least one depth")
    if not shortcuts:
        raise ConfigError("compare needs at least one shortcut setting")
    for d in depths:
        if isinstance(d, bool) or d not in DEPTHS:
            raise ConfigError(f"depths must be among {', '.join(map(str, DEPTHS))}, got {d!r}")
    variants = []
    for depth in depths:
        for shortcut in shortcuts:
            cfg = copy.deepcopy(base_cfg)
            cfg.model["stages"] = None
            cfg.set("model.depth", depth, source="compare")
            cfg.set("model.shortcut", shortcut, source="compare")
            if not equal_time:
                cfg.set("train.time_budget", None, source="compare")  # also keeps the recipe from choosing one
            cfg.validate()
            variants.append((variant_name(depth, shortcut), cfg))
    return variants


# --------------------------------------------------------------------------------------------
# Training the grid


def run_compare(base_cfg: RunConfig, depths: Sequence[int], shortcuts: Sequence[bool], out_dir: str | Path,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), progress: bool = True,
                max_steps: int | None = None, equal_time: bool = False) -> list[dict[str, Any]]:
    """Train every variant into ``out_dir/<name>``; returns the table rows.

    Every variant trains the same epochs, or with ``equal_time`` within the same time budget
    (``plan_variants``).

    A variant whose folder holds results is skipped, one with a saved state is resumed.
    The tables are rewritten after each variant; on Ctrl-C (``TrainingInterrupted``) or
    any other error they are written for the finished variants before the error propagates.
    A variant that diverges is reported and the study goes on. ``max_steps`` (tests)
    stops each training call after that many steps, as if interrupted.
    """
    from . import train as training  # module attribute lookup, so tests can replace train()

    out_dir = Path(out_dir)
    variants = plan_variants(base_cfg, depths, shortcuts, equal_time)
    budget = base_cfg.train.time_budget
    if equal_time:
        log(f"comparing at equal time: every variant trains within "
            f"{budget if budget else 'the automatic recipe time budget'}, so deeper variants run fewer epochs")
    else:
        log(f"comparing at equal epochs: every variant trains {'the same epochs' if base_cfg.auto else f'{base_cfg.train.epochs} epochs'}"
            + (f" (the time budget {budget} is not used; --equal-time compares at equal time)" if budget else ""))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out_dir}: {exc.strerror}") from None
    for name, cfg in variants:  # refuse a mismatched folder before spending hours on the others
        if (out_dir / name / ckpt.CONFIG_FILE).is_file():
            check_same_recipe(out_dir / name, cfg)

    diverged: set[str] = set()

    def write_tables() -> list[dict[str, Any]]:
        dirs = [out_dir / n for n, _ in variants
                if _is_finished(out_dir / n) or (n in diverged and (out_dir / n / ckpt.CONFIG_FILE).is_file())]
        rows, histories = _rows_and_histories(dirs)
        for row in rows:
            if row["name"] in diverged:
                row["status"] = "diverged"
        if rows:
            write_outputs(rows, histories, out_dir)
        return rows

    try:
        for i, (name, cfg) in enumerate(variants, 1):
            run_dir = out_dir / name
            head = f"[{i}/{len(variants)}] {name}"
            if _is_finished(run_dir):
                log(f"{head}: finished earlier, skipped")
                continue
            try:
                if (run_dir / ckpt.CONFIG_FILE).is_file() and (run_dir / ckpt.STATE_FILE).is_file():
                    log(f"{head}: resuming {run_dir}")
                    training.train(None, run_dir, resume=True, log=log, progress=progress, max_steps=max_steps)
                else:
                    if (run_dir / ckpt.CONFIG_FILE).is_file():
                        _clear_unstarted(run_dir, log)
                    log(f"{head}: training into {run_dir}")
                    training.train(cfg, run_dir, log=log, progress=progress, max_steps=max_steps)
            except training.TrainingDiverged as exc:
                log(f"{head}: diverged ({exc}); going on with the other variants")
                diverged.add(name)
            write_tables()
    except training.TrainingInterrupted as exc:
        _write_quietly(write_tables, log)
        raise training.TrainingInterrupted(
            f"{exc}; or run the same `vdcnn compare` with --out {out_dir} to resume the study") from None
    except BaseException:
        _write_quietly(write_tables, log)
        raise
    return write_tables()


def _write_quietly(write: Callable[[], Any], log: Callable[[str], None]) -> None:
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - never hide the error that stopped the study
        log(f"warning: could not write the comparison tables: {exc}")


def _is_finished(run_dir: Path) -> bool:
    try:
        return bool(ckpt.read_config(run_dir).get("results"))
    except CheckpointError:
        return False


def _clear_unstarted(run_dir: Path, log: Callable[[str], None]) -> None:
    """A run stopped before its first saved state (e.g. killed): start it afresh."""
    if (run_dir / ckpt.LOCK_FILE).exists():
        with ckpt.run_lock(run_dir):  # refuses while a live training holds it; a dead holder's lock is free
            pass
    log(f"{run_dir}: no saved training state (stopped during its first epoch); starting it again")
    for f in (ckpt.CONFIG_FILE, ckpt.METRICS_FILE, ckpt.WEIGHTS_FILE):
        (run_dir / f).unlink(missing_ok=True)


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def check_same_recipe(run_dir: Path, cfg: RunConfig) -> None:
    """An existing run folder must hold a run of ``cfg``'s recipe (machine settings aside, and under the
    automatic recipe only the settings the user gave), or reusing it would mix recipes; ConfigError if not."""
    stored = ckpt.read_config(run_dir).get("run") or {}
    wanted = _normalise(cfg.to_dict())
    for section, values in wanted.items():
        have = stored.get(section)
        if not isinstance(have, dict):
            continue
        for key, value in values.items():
            if (section, key) in _MACHINE_SETTINGS or key not in have:
                continue
            if cfg.auto and f"{section}.{key}" not in cfg.explicit:
                continue  # the automatic recipe decides it from the same data: only the user's settings must match
            if have[key] != value:
                raise ConfigError(
                    f"{run_dir} holds a run with {section}.{key}={have[key]!r}, but this compare asks for "
                    f"{value!r}; rerun with the same settings to resume, or choose another --out")


# --------------------------------------------------------------------------------------------
# Rows from run folders


def collect_runs(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Table rows for existing run folders, no training; CheckpointError for a folder that is not a run."""
    rows, _ = _rows_and_histories([Path(d) for d in run_dirs])
    return rows


def collect_histories(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics of each row's run, keyed by row name."""
    return {row["name"]: ckpt.read_metrics(row["run_dir"]) for row in rows}


def _rows_and_histories(run_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    metas = [ckpt.read_config(d) for d in run_dirs]  # raises for a folder that is not a run
    names = _unique_names(run_dirs)
    rows, histories = [], {}
    for name, run_dir, meta in zip(names, run_dirs, metas):
        history = ckpt.read_metrics(run_dir)
        rows.append(run_row(run_dir, meta, history, name))
        histories[name] = history
    return rows, histories


def _unique_names(run_dirs: Sequence[Path]) -> list[str]:
    names = [d.resolve().name for d in run_dirs]
    if len(set(names)) < len(names):  # runs/a/d9-plain and runs/b/d9-plain: add the parent
        names = [f"{d.resolve().parent.name}/{d.resolve().name}" for d in run_dirs]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def conv_depth(model: dict[str, Any]) -> int | None:
    """Depth as the paper counts it (conv layers), from a saved model config."""
    stages = model.get("stages")
    if stages:
        return 1 + 2 * sum(int(b) for b in stages)
    depth = model.get("depth")
    return int(depth) if depth is not None else None


def run_row(run_dir: str | Path, meta: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
            name: str | None = None) -> dict[str, Any]:
    """One table row; an unfinished run gets what its metrics and best checkpoint tell."""
    run_dir = Path(run_dir)
    meta = meta if meta is not None else ckpt.read_config(run_dir)
    history = history if history is not None else ckpt.read_metrics(run_dir)
    model = meta.get("model") or {}
    res = meta.get("results") or {}
    best = meta.get("best") or {}
    flops = meta.get("flops")
    return {
        "name": name or run_dir.name,
        "depth": conv_depth(model),
        "shortcut": bool(model.get("shortcut")),
        "parameters": meta.get("parameters"),
        "gflops": flops / 1e9 if isinstance(flops, (int, float)) else None,
        "best_val_acc": res.get("best_val_acc") if res else best.get("val_acc"),
        "best_epoch": res.get("best_epoch") if res else best.get("epoch"),
        "test_acc": res.get("test_acc"),
        "test_macro_f1": res.get("test_macro_f1"),
        "final_train_loss": res.get("final_train_loss") if res else (history[-1].get("train_loss") if history else None),
        "epochs": res.get("epochs_run") if res else len(history),
        "wall_time_s": res.get("wall_time_s"),
        "status": "finished" if res else "unfinished",
        "dataset": (meta.get("run") or {}).get("data", {}).get("dataset"),
        "run_dir": str(run_dir),
    }


# --------------------------------------------------------------------------------------------
# Tables


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "shortcut":
        return "on" if value else "off"
    if key == "parameters":
        return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"
    if key == "gflops":
        return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"
    if key in ("best_val_acc", "test_acc"):
        return f"{value * 100:.2f} %"
    if key == "final_train_loss":
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if key == "wall_time_s":
        return _fmt_time(value)
    return str(value)


def _cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [h for _, h in COLUMNS]
    body = []
    for row in rows:
        cells = [_fmt(k, row.get(k)) for k, _ in COLUMNS]
        if row.get("status", "finished") != "finished":
            cells[0] += f" ({row['status']})"
        body.append(cells)
    return header, body


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table for the terminal."""
    header, body = _cells(rows)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    left = {0}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    header, body = _cells(rows)
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(r) + " |" for r in (header, align, *body)]
    datasets = sorted({str(r["dataset"]) for r in rows if r.get("dataset")})
    intro = ["# Shortcut x depth comparison", ""]
    if datasets:
        intro += [f"Dataset: {', '.join(datasets)}. Depth counts convolutional layers; accuracies are on the "
                  "validation split (best epoch) and the test split (best checkpoint).", ""]
    return "\n".join(intro + lines) + "\n"


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def write_outputs(rows: Sequence[dict[str, Any]], histories: dict[str, list[dict[str, Any]]] | None,
                  out_dir: str | Path) -> dict[str, Path]:
    """Write compare.md, compare.csv, compare.png and grad_norms.png (each atomically); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histories = histories if histories is not None else collect_histories(rows)
    paths = {k: out_dir / v for k, v in OUTPUT_FILES.items()}
    ckpt.write_text(paths["md"], format_markdown(rows))
    ckpt.write_text(paths["csv"], format_csv(rows))
    from .plots import plot_curves, plot_grad_norms

    plot_curves(rows, histories, paths["png"])
    plot_grad_norms(rows, histories, paths["grad_norms"])
    return paths
