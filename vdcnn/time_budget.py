"""Fitting a run into a wall-clock budget: ``--time-budget 15m``.

The budget covers everything ``train`` does: loading and encoding the data,
the linear path's regression (fitted before the first step), the training steps,
validation and checkpoints after each epoch, BatchNorm recalibration of EMA weights
and the final scoring (under the automatic recipe, autotune's search too). After a short warm-up the
loop measures its step time and the model's inference rate, and
``fit_total_steps`` picks the largest number of optimiser steps (possibly ending
inside an epoch) whose estimated cost fits; the learning-rate schedule is then
stretched over exactly those steps, so it finishes.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")

WARMUP_STEPS = 3  # steps left out of the measurement (allocator, kernel selection, caches)
SAFETY = 0.05  # fraction of the budget kept free for estimation error


def parse_duration(value: str | float | int, what: str = "train.time_budget") -> float:
    """Seconds in ``value``: a number of seconds or a string such as ``90s``, ``15m``, ``1h30m``, ``2.5h``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a duration such as 90s, 15m or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text or len({u for _, u in parts}) != len(parts):
                raise ConfigError(f"{what} must be a duration such as 90s, 15m or 1h30m, got {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h05m``, ``15m``, ``1m30s``, ``42s``."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    if m:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    return f"{s}s"


@dataclass
class TimePlan:
    """The fitted run, kept in the training state so a resumed run keeps it."""

    budget_s: float
    total_steps: int
    steps_per_epoch: int
    texts_per_s: float  # measured training throughput
    eval_texts_per_s: float  # measured inference throughput (validation, test, recalibration)
    step_s: float
    planned_at_step: int
    estimated_s: float  # the whole run as planned

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": round(self.epochs, 3)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TimePlan":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def fit_total_steps(budget_s: float, elapsed_s: float, steps_done: int, step_s: float, steps_per_epoch: int,
                    max_epochs: int, epoch_overhead_s: float, final_s: float) -> tuple[int, float]:
    """Largest total step count whose estimated run time fits ``budget_s`` (less a safety margin).

    A run of S steps costs ``elapsed_s`` (already spent, ``steps_done`` steps in) plus
    ``(S - steps_done) * step_s`` plus one ``epoch_overhead_s`` (validation, checkpoints,
    recalibration) per epoch begun plus ``final_s``. Returns ``(S, estimated seconds)``;
    S never exceeds ``max_epochs`` epochs nor falls below ``steps_done``.
    """
    usable = budget_s * (1 - SAFETY)

    def cost(steps: int) -> float:
        return (elapsed_s + max(0, steps - steps_done) * step_s
                + math.ceil(steps / steps_per_epoch) * epoch_overhead_s + final_s)

    for epochs in range(max_epochs, 0, -1):
        room = usable - elapsed_s - final_s - epochs * epoch_overhead_s
        steps = min(epochs * steps_per_epoch, steps_done + math.floor(max(0.0, room) / max(step_s, 1e-9)))
        if steps > (epochs - 1) * steps_per_epoch and steps >= max(1, steps_done):
            return steps, cost(steps)
    steps = max(1, steps_done)
    return steps, cost(steps)


@dataclass
class StepClock:
    """Times one epoch's training steps after ``WARMUP_STEPS`` untimed ones and says when enough are
    timed to plan. ``lockstep`` (several ranks): plan after a fixed number of steps, the same on every
    rank, since the plan is a collective."""

    lockstep: bool = False
    steps: int = 0
    first: float | None = None  # when the first step ended
    t0: float | None = None  # when the warm-up ended
    rows: int = 0  # rows of the timed steps (this rank's)
    last_rows: int = 0
    now: float = 0.0

    @property
    def timed(self) -> int:
        return self.steps - WARMUP_STEPS

    def tick(self, now: float, rows: int, budget_s: float, last: bool) -> bool:
        """Record a step that ended at ``now`` with ``rows`` rows; True when the plan should be made
        (enough steps timed, or ``last``: the epoch or the run ends)."""
        self.first = now if self.first is None else self.first
        self.steps += 1
        self.now, self.last_rows = now, rows
        if self.steps == WARMUP_STEPS:
            self.t0, self.rows = now, 0
            return False
        if self.t0 is not None:
            self.rows += rows
        if self.lockstep:
            long_enough = self.timed >= 20
        else:
            since = now - (self.t0 if self.t0 is not None else now)
            long_enough = self.timed >= 5 and since >= max(1.0, min(10.0, 0.02 * budget_s))
        return long_enough or last

    @property
    def step_s(self) -> float:
        if self.timed > 0 and self.t0 is not None:
            return (self.now - self.t0) / self.timed
        return (self.now - (self.first or self.now)) / max(1, self.steps)

    @property
    def rows_per_s(self) -> float:
        """This rank's training rows per second (the last batch's rows over a step, before any is timed)."""
        if self.timed > 0 and self.t0 is not None:
            return self.rows / max(self.now - self.t0, 1e-9)
        return self.last_rows / max(self.step_s, 1e-9)  # a one-step epoch has no time between steps


def plan_budget(budget_s: float, elapsed_s: float, steps_done: int, step_s: float, steps_per_epoch: int,
                max_epochs: int, texts_per_s: float, eval_texts_per_s: float, epoch_eval_rows: int,
                final_eval_rows: int, save_s: float) -> TimePlan:
    """The plan of a run measured so far: each epoch costs its steps, scoring ``epoch_eval_rows`` rows and
    three state saves; the end scores ``final_eval_rows`` rows and saves twice (``fit_total_steps``)."""
    epoch_overhead = epoch_eval_rows / eval_texts_per_s + 3 * save_s
    final = final_eval_rows / eval_texts_per_s + 2 * save_s
    total, estimate = fit_total_steps(budget_s, elapsed_s, steps_done, step_s, steps_per_epoch, max_epochs,
                                      epoch_overhead, final)
    return TimePlan(budget_s, total, steps_per_epoch, round(texts_per_s, 1), round(eval_texts_per_s, 1),
                    round(step_s, 6), steps_done, round(estimate, 1))


def describe_plan(plan: TimePlan, spec: str | float, max_epochs: int) -> str:
    """The log line of a plan: all epochs fit, or how many do and the steps the schedule is fitted to."""
    if plan.total_steps >= max_epochs * plan.steps_per_epoch:
        return (f"time budget {spec}: all {max_epochs} epoch{'s' if max_epochs != 1 else ''} "
                f"({plan.total_steps:,} steps) fit at {plan.texts_per_s:,.0f} texts/s "
                f"(about {format_duration(plan.estimated_s)} in all)")
    return (f"time budget {spec}: {plan.epochs:.1f} epochs of {plan.steps_per_epoch:,} steps at "
            f"{plan.texts_per_s:,.0f} texts/s fit; schedule fitted to {plan.total_steps:,} steps")
