"""The run folder: the single artifact of a training run.

```
RUN/
  config.json        format version, model + encoder config, label names, run settings
  model.safetensors  weights (best by validation)
  last.pt            training state for --resume (tensors and plain values only)
  metrics.jsonl      one line per epoch
```
Every file is written to a temporary name and renamed into place, so a crash
or a full disk never leaves a torn file. Nothing is unpickled: weights come from
safetensors and training state from ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import __version__
from .encoders import Encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError
from .model import VDCNN, ModelConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "last.pt"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"


def _describe_os_error(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}"
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {path}: the folder is read-only or not writable"
    return f"cannot write {path}: {exc.strerror or exc}"


def _fault_sleep(path: Path) -> None:
    """Test hook: ``VDCNN_FAULT_SLEEP_IN_SAVE=[NAME:]SECONDS`` sleeps between writing the temp file and
    renaming it (for NAME only, if given), so a fault-injection test can ``kill -9`` mid-save."""
    spec = os.environ.get("VDCNN_FAULT_SLEEP_IN_SAVE")
    if spec:
        name, _, seconds = spec.rpartition(":")
        if not name or name == path.name:
            import time

            time.sleep(float(seconds))


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (same folder)."""
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. torch.save reports a full disk as RuntimeError
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"cannot write {path}: {reason} (is the disk full?)") from exc
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp (and some writers) make 0600; a plain open() would not
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _fault_sleep(path)
        os.replace(tmp, path)
        tmp = None
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
    except OSError as exc:
        raise CheckpointError(_describe_os_error(exc, path)) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line by rewriting the file atomically (metrics files are small)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text(path, old + line.rstrip("\n") + "\n")


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
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
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
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt: not valid JSON") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{path} is not a vdcnn run config")
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version!r}, newer than this vdcnn understands ({FORMAT_VERSION}); upgrade vdcnn"
        )
    for key in ("model", "encoder", "labels"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    return meta


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
    model = VDCNN(model_config)
    load_weights(run_dir / weights, model)
    model.eval()
    return model, encoder, labels, meta


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
        raise CheckpointError(_describe_os_error(exc, path)) from None
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
        path.unlink(missing_ok=True)  # removed while still held, so the run folder is left clean
        lock.release()
