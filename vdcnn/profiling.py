"""Where the time goes: wall time per phase of a loop (data, forward, backward, optimiser)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates wall time per named phase; a disabled timer costs nothing.

    On a GPU, kernels run asynchronously, so an enabled timer synchronises the
    device at each phase boundary (profiling itself then slows training a little).
    """

    def __init__(self, enabled: bool = False, device: torch.device | str = "cpu") -> None:
        self.enabled = enabled
        self.sync = enabled and torch.device(device).type == "cuda"
        self.totals: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def reset(self) -> dict[str, float]:
        """The totals so far in seconds (to the microsecond, so a short phase never reads 0), then zero them."""
        totals = {k: round(v, 6) for k, v in self.totals.items()}
        self.totals = {}
        return totals


def format_phases(totals: dict[str, float]) -> str:
    """``data 1.2 s (4 %), forward 10.3 s (38 %), ...`` in the order the phases ran."""
    whole = sum(totals.values()) or 1.0
    return ", ".join(f"{name} {secs:.{1 if secs >= 1 else 2}f} s ({100 * secs / whole:.0f} %)"
                     for name, secs in totals.items())
