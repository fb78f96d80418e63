"""The run folder: the single artifact of a training run.

```
RUN/
  config.json        format version, model + encoder config, label names, run settings
  model.safetensors  weights (best by validation)
  last.pt            training state for --resume (tensors and plain values only)
  metrics.jsonl      one line per epoch
  .lock              the training's OS file lock (left in place; free once no training holds it)
```
Every file is written to a temporary name and renamed into place (``vdcnn.fileio``),
so a crash or a full disk never leaves a torn file. Nothing is unpickled: weights come
from safetensors and training state from ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .encoders import Encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write, describe_os_error, first_line
from .fileio import append_line, write_json, write_text  # noqa: F401 - the run folder's writers, also by these names
from .fileio import read_versioned_json
from .model import VDCNN, ModelConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "last.pt"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (empty when absent); torn or foreign lines are skipped."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: str | Path) -> dict[str, Any]:
    """Training state; refuses anything that is not plain tensors and values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state to resume from: {path} is missing")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it better
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure here is a bad file
        reason = first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds objects other than tensors and plain values (refused: loading could run code)"
        raise CheckpointError(f"cannot load training state {path}: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a vdcnn training state")
    return state


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked for format version."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"run folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (expected a folder holding {CONFIG_FILE})")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder: {CONFIG_FILE} is missing")
    return read_versioned_json(path, "run config", "format version", FORMAT_VERSION, ("model", "encoder", "labels"))


def make_meta(model_config: ModelConfig, encoder: Encoder, labels: list[str], run: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "vdcnn_version": __version__,
        "model": model_config.to_dict(),
        "encoder": encoder.to_dict(),
        "labels": list(labels),
        "run": run or {},
        **extra,
    }


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Load safetensors weights into ``model``; any mismatch is an error, never a partial load."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file missing: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({str(exc).splitlines()[0][:120]})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(
            f"{path} does not match config.json: {len(missing)} missing and {len(unexpected)} unexpected tensors ({what})"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path} does not match config.json: {key} has shape {tuple(tensor.shape)}, "
                f"config expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors, strict=True)


def load_run(run_dir: str | Path, weights: str = WEIGHTS_FILE) -> tuple[VDCNN, Encoder, list[str], dict[str, Any]]:
    """Rebuild ``(model, encoder, labels, meta)`` from a run folder; the model is in eval mode."""
    run_dir = Path(run_dir)
    meta = read_config(run_dir)
    try:
        model_config = ModelConfig.from_dict(meta["model"])
        encoder = encoder_from_dict(meta["encoder"])
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    labels = meta["labels"]
    if not isinstance(labels, list) or len(labels) != model_config.num_classes:
        n = len(labels) if isinstance(labels, list) else "no list of"
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: {n} label names for {model_config.num_classes} classes")
    if encoder.vocab_size != model_config.vocab_size:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: encoder vocabulary ({encoder.vocab_size}) does not match the model's "
            f"({model_config.vocab_size})"
        )
    with _no_initialisation():  # every weight is loaded next, strictly
        model = VDCNN(model_config)
    load_weights(run_dir / weights, model)
    model.eval()
    return model, encoder, labels, meta


_INITIALISERS = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                 "trunc_normal_", "orthogonal_")


@contextmanager
def _no_initialisation() -> Iterator[None]:
    """Build modules without drawing random initial weights (0.1 s at depth 9, a tenth of `vdcnn predict`'s
    start-up beside importing torch): ``torch.nn.init``'s random initialisers leave tensors as they are.
    (The meta device would skip them too, but its first use imports ``torch._dynamo``: 1.3 s.)"""
    import threading

    owner = threading.get_ident()
    saved = {name: getattr(torch.nn.init, name) for name in _INITIALISERS}

    def skipped(original: Any) -> Any:
        # Only in this thread: a model built meanwhile in another one is initialised as always.
        return lambda tensor, *args, **kwargs: (tensor if threading.get_ident() == owner
                                                else original(tensor, *args, **kwargs))
    try:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, skipped(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``RUN/.lock`` (an OS file lock, released by the OS if the process dies) while training;
    a second training into the same folder fails at once naming the holder's pid."""
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK_FILE
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = f" (pid {int(path.read_text().strip())})"
        except (OSError, ValueError):
            holder = ""
        raise CheckpointError(f"{run_dir} is in use by another training{holder}; choose another --out") from None
    except OSError as exc:
        raise CheckpointError(describe_os_error(exc, path)) from None
    try:
        try:
            path.write_text(str(os.getpid()))  # for the message above; the lock is the flock, not this
        except OSError:
            pass
        # Temp files of a writer killed mid-save (kill -9, power loss) are garbage now that we hold the lock.
        for stale in Path(run_dir).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        # The file stays (as filelock leaves it): unlinking a held lock file lets a process that opened
        # it before the unlink and one that creates it afresh both take "the" lock.
        lock.release()
