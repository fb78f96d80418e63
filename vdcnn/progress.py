"""Progress bars for long work (rich, on stderr; silent when disabled)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class EpochProgress:
    """A bar over an epoch's steps showing running loss, throughput and ETA."""

    def __init__(self, description: str, total: int, enabled: bool = True, unit: str = "texts/s") -> None:
        self.enabled = enabled
        self.unit = unit
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} " + unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not enabled,
        )
        self._task = self._progress.add_task(description, total=total, loss=float("nan"), rate=0.0)

    def __enter__(self) -> "EpochProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def advance(self, steps: int) -> None:
        self._progress.update(self._task, advance=steps)

    def show(self, loss: float, rate: float) -> None:
        """Refresh the running loss and throughput without advancing."""
        self._progress.update(self._task, loss=loss, rate=rate)
