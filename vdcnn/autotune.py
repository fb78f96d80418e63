"""Autotune: the automatic recipe's choices tried on validation, inside the run's time budget.

What fastText's ``-autotune-validation`` gives its users, for VDCNN. ``autotune(cfg, plan, splits,
budget_s, log, train_fn)`` runs inside the recipe's planning stage of a run under the automatic
recipe (``train`` calls it with the run's loaded splits, before anything is encoded): the candidate
recipes of ``plan.search`` (the encoder, with the paper's characters or UTF-8 bytes beside learned subwords; the
n-gram path on or off; a deeper net with shortcuts; a shallow one pooled over time) are trained one after the other on the
run's own training rows for the same time each, and scored on its validation rows after every
epoch. Optuna's successive-halving pruner stops a trial whose validation score, once it has used half
its time, is in the lower half of the trials at that point (trials are compared at equal time, not at
equal epochs); the time it leaves goes to the real run,
not to the trials after it (a trial given more time would win by it). The best trial's settings
are set on ``cfg`` (as explicit choices; the caller plans the run again with them) and the real
run gets the rest of the budget. Trials read the run's own splits (no second read of the data) and
never its test split: nothing is chosen on test.

The search runs only where nothing fixed its length: no preset, and neither ``--epochs`` nor
``--time-budget`` given; a setting the user gave is never searched. ``--no-autotune`` skips it.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import RunConfig
from .recipe import LONG_CORPUS_CHARS

if TYPE_CHECKING:
    from .data import Splits
    from .recipe import Plan

__all__ = ["SEARCH_SHARE", "Candidate", "candidates", "should_autotune", "autotune", "chance_score", "choose"]

SEARCH_SHARE = 0.35  # of the run's time budget
LARGE_ROWS = 20_000  # from here on the search takes LARGE_SHARE and its trials read a subset
LARGE_SHARE = 0.15
TRIAL_ROWS = 10_000
_MIN_TRIAL_S = 20.0
PRUNE_AT = 50  # percent of a trial's time: from here a trial in the lower half at equal time stops
OVERRUN = 1.25  # a trial starts only while the search would end within this multiple of its time


# Two stages of one block (128 and 256 channels) and max-over-time pooling: close to Kim's (2014)
# one-layer sentence CNN. On TREC-6 (15 epochs, no linear path) it peaked at 87.4 % validation
# against 84.8 % for the paper's four stages, at a third of the time per epoch; SST-2 79.5 against 79.4.
SHALLOW: dict[str, Any] = {"model.stages": [1, 1], "model.channels": [128, 256], "model.kmax": 1}


@dataclass
class Candidate:
    """One recipe to try: a name for the log and the settings it changes."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


def should_autotune(cfg: RunConfig) -> bool:
    """Whether a run searches: the automatic recipe, autotune on, and no length fixed by the user."""
    return (cfg.auto and cfg.train.autotune
            and not {"train.epochs", "train.time_budget"} & cfg.explicit)


def candidates(cfg: RunConfig, coverage: float) -> list[Candidate]:
    """The recipes worth trying on this data, less any dimension the user fixed.

    The first is the recipe's own choice (subword ids with the n-gram path), so a search that
    learns nothing still trains what the recipe would have.
    """
    fixed = cfg.explicit
    chars = "char" if coverage >= 0.9 else "byte"
    out = [Candidate("subword + n-grams", {})]
    if "encoder.name" not in fixed:
        out.append(Candidate(f"{chars} + n-grams", {"encoder.name": chars}))
    if "model.ngram_buckets" not in fixed:
        out.append(Candidate("subword, conv alone", {"model.ngram_buckets": 0}))
    if not {"model.depth", "model.stages", "model.shortcut"} & fixed:
        out.append(Candidate("subword + n-grams, depth 17, shortcuts",
                             {"model.depth": 17, "model.shortcut": True}))
    if not {"model.depth", "model.stages", "model.channels", "model.kmax"} & fixed:
        out.append(Candidate("subword + n-grams, shallow: 2 stages, max over time", SHALLOW))
    return out


def autotune(cfg: RunConfig, plan: "Plan", splits: "Splits", budget_s: float, log: Callable[[str], None],
             train_fn: Callable[..., Any]) -> dict[str, Any]:
    """Search ``plan.search`` on ``splits``, set the winner's settings on ``cfg`` and return a
    summary for ``config.json``.

    ``train_fn`` is ``vdcnn.train.train`` (passed in: this module must not import the loop).
    ``budget_s`` is the whole run's; the search takes ``SEARCH_SHARE`` of it, or ``LARGE_SHARE``
    from ``LARGE_ROWS`` training rows on, where the trials read a stratified ``TRIAL_ROWS``
    subset of the training rows (the real run, not the search, is what a large dataset's time
    should go to). Every trial is scored on the run's whole validation split.
    """
    import optuna

    from .data import with_train_subset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    rows, val_rows = len(splits.train), len(splits.val)
    # Long documents count as large too: a trial of a few seconds cannot read them (20 Newsgroups: 11k
    # posts, one epoch over 2 minutes), and the time goes to the linear path and the network instead.
    large = rows >= LARGE_ROWS or sum(map(len, splits.train.texts)) >= LONG_CORPUS_CHARS
    share = LARGE_SHARE if large else SEARCH_SHARE
    search_s = share * budget_s
    options = plan.search
    if len(options) < 2:
        return {"trials": [], "chosen": options[0].name if options else None, "search_s": 0.0}
    trial_splits = with_train_subset(splits, TRIAL_ROWS if large else None, cfg.train.seed)
    select = {"macro_f1": "val_macro_f1", "micro_f1": "val_micro_f1"}.get(plan.config.train.select_by, "val_acc")
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNE_AT, reduction_factor=2)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for i in range(len(options)):
        study.enqueue_trial({"candidate": i})  # every candidate once, in order: the recipe's own first
    log(f"autotune: {len(options)} candidate recipes on the validation split within {search_s:.0f} s "
        f"({share:.0%} of the {budget_s:.0f} s budget"
        + (f"; trials read {TRIAL_ROWS:,} of the {rows:,} training rows" if large else "")
        + "; --no-autotune skips it)")
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="vdcnn-autotune-"))
    try:
        for i, option in enumerate(options):
            trial_s = search_s / len(options)  # equal time: a trial given more would win by it
            if trial_s < _MIN_TRIAL_S:
                log(f"  {option.name}: skipped ({trial_s:.0f} s a trial is too short to learn anything)")
                continue
            spent = time.perf_counter() - started
            if spent + trial_s > search_s * OVERRUN:
                # a trial cannot stop before one epoch (and its encoding): on long documents one
                # trial can take several shares, and the real run would be left no time at all
                log(f"  {option.name}: skipped (the search has taken {spent:.0f} s of its {search_s:.0f} s: "
                    f"a trial needs more than its share on this data)")
                continue
            trial = study.ask()
            trial.suggest_categorical("candidate", list(range(len(options))))
            trial_cfg = _trial_config(cfg, option, trial_s)
            scores: list[float] = []
            steps: list[int] = []
            stopped: list[bool] = []

            def report(row: dict[str, Any]) -> bool:
                value = row.get(select, row.get("val_acc"))
                value = float(value) if value is not None else -float(row["train_loss"])
                scores.append(value)
                steps.append(max(_time_step(time.perf_counter() - begun, trial_s), steps[-1] + 1 if steps else 1))
                trial.report(value, steps[-1])
                stopped[:] = [trial.should_prune()]
                return stopped[0]

            begun = time.perf_counter()
            try:
                train_fn(trial_cfg, workdir / f"trial{i}", progress=False, log=lambda s: None, on_epoch=report,
                         data=trial_splits)
            except Exception as exc:  # a candidate that cannot train here (e.g. diverges) loses, the search goes on
                log(f"  {option.name}: failed ({type(exc).__name__}: {str(exc)[:120]})")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            best = max(scores) if scores else float("-inf")
            pruned = bool(stopped and stopped[0])
            study.tell(trial, best)
            rows.append({"candidate": option.name, "settings": option.settings, "best_val": best,
                         "epochs": len(scores), "seconds": round(time.perf_counter() - begun, 1), "pruned": pruned})
            log(f"  {option.name}: best validation {select.replace('val_', '')} {best * 100:.2f} % after "
                f"{len(scores)} epoch(s), {time.perf_counter() - begun:.0f} s" + (" (pruned)" if pruned else ""))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not rows:
        return {"trials": [], "chosen": options[0].name, "search_s": round(time.perf_counter() - started, 1)}
    winner, why = choose(rows, options[0].name, val_rows, chance_score(splits.val.labels, select))
    for key, value in winner["settings"].items():
        cfg.set(key, value, source="autotune")
    spent = time.perf_counter() - started
    log(f"autotune chose: {winner['candidate']} (validation {winner['best_val'] * 100:.2f} %{why}); "
        f"search took {spent:.0f} s, the run gets the remaining {max(0.0, budget_s - spent):.0f} s")
    return {"trials": rows, "chosen": winner["candidate"], "settings": winner["settings"],
            "search_s": round(spent, 1), "select_by": select}


def _time_step(elapsed_s: float, trial_s: float) -> int:
    """The pruner's step for a score reported after ``elapsed_s`` of a ``trial_s`` trial: the percent of
    its time used. Trials get equal time, so they are compared at equal time, not at equal epochs: a
    net three times faster per epoch (the shallow candidate) would otherwise be judged after a third
    of the time the others had, and pruned at its first epoch (TREC-6: 55.6 % after one epoch, 7 s;
    86.4 % after eight, in the same 21 s as the others)."""
    return max(1, int(100 * elapsed_s / max(trial_s, 1e-9)))


def chance_score(labels: Any, select: str) -> float:
    """The best validation score a model that read nothing would get: the majority class (accuracy),
    the better of guessing uniformly or always the largest class (macro-F1), every label on every
    text (multi-label micro- or macro-F1)."""
    import numpy as np

    labels = np.asarray(labels)
    if not len(labels):
        return 0.0
    if labels.ndim == 2:  # multi-label: predicting every label gives each the F1 2p / (1 + p)
        density = labels.mean(0) if select == "val_macro_f1" else np.array([labels.mean()])
        return float(np.mean(2 * density / (1 + density)))
    shares = np.bincount(labels.astype(np.int64)) / len(labels)
    shares = shares[shares > 0]
    if select != "val_macro_f1":
        return float(shares.max())
    k = len(shares)
    uniform = float(np.mean(2 * shares / k / (shares + 1 / k)))  # per class: precision p, recall 1/k
    majority = 2 * float(shares.max()) / (1 + float(shares.max())) / k
    return max(uniform, majority)


def choose(rows: list[dict[str, Any]], default: str, val_rows: int, chance: float = 0.0) -> tuple[dict[str, Any], str]:
    """The trial to train: the best on validation, but the recipe's own (``default``) unless another
    has left ``chance`` (by two standard errors of a score of 0.5, the widest) and beats the recipe's
    own by more than two standard errors of its score. Trials too short to learn (long documents;
    one epoch of 10k rows of a deep net on a large dataset) sit at chance, where the order of their
    scores is noise: on TNEWS (chance 6.3 % macro-F1) a trial at 6.1 % once won by 4.5 points over
    the recipe's own at 1.6 %."""
    best = max(rows, key=lambda r: r["best_val"])
    own = next((r for r in rows if r["candidate"] == default), None)
    if own is None or best is own:
        return best, ""
    learned = chance + 1 / math.sqrt(max(val_rows, 1))
    if best["best_val"] < learned:
        return own, (f"; kept: no trial left chance ({chance * 100:.1f} %; the best reached "
                     f"{best['best_val'] * 100:.1f} %, a trial counts from {learned * 100:.1f} %)")
    p = min(max(own["best_val"], 0.0), 1.0)
    margin = 2 * math.sqrt(max(p * (1 - p), 1e-4) / max(val_rows, 1))
    if best["best_val"] - own["best_val"] > margin:
        return best, f"; {(best['best_val'] - own['best_val']) * 100:.1f} points over the recipe's own"
    return own, (f"; kept: no candidate beat it by more than two standard errors ({margin * 100:.1f} points "
                 f"on {val_rows:,} validation texts)")


def _trial_config(cfg: RunConfig, option: Candidate, seconds: float) -> RunConfig:
    """The run's config with the candidate's settings and a budget of ``seconds``; no autotune inside."""
    trial = copy.deepcopy(cfg)
    for key, value in option.settings.items():
        trial.set(key, value, source="autotune")
    trial.set("train.autotune", False, source="autotune")
    trial.set("train.linear_path", False, source="autotune")  # trials compare networks; the run fits the path once
    trial.set("train.calibrate", False, source="autotune")  # and calibrates its own model once
    trial.set("train.time_budget", round(seconds, 1), source="autotune")
    return trial
