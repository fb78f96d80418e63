"""The n-gram path, the length-aware layout, the EMA schedule and autotune (issue: beat the simple models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vdcnn.config import build_config
from vdcnn.errors import ConfigError
from vdcnn.model import VDCNN, ModelConfig, describe
from vdcnn.ngrams import NgramBag, hash_ngrams
from vdcnn.optim import make_optimizer
from vdcnn.recipe import choose_downsamples, choose_ngram_buckets, fit_to_lengths
from vdcnn.train import EmaSchedule
from tests.variants import CORPUS, make_encoder


def _ids(texts: list[str], encoder_name: str = "subword", length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = make_encoder(encoder_name).encode_batch(texts, length)
    return torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()


def test_hash_counts_only_ngrams_inside_the_text():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 1])
    buckets, mask = hash_ngrams(ids, lengths, (1, 2, 3), 1000)
    assert buckets.shape == mask.shape == (2, 18)
    assert mask[0].sum() == 4 + 3 + 2 and mask[1].sum() == 1
    assert int(buckets.min()) >= 0 and int(buckets.max()) < 1000


def test_same_ngram_same_bucket_anywhere_and_orders_apart():
    a = torch.tensor([[3, 4, 5, 3, 4]])
    buckets, _ = hash_ngrams(a, torch.tensor([5]), (2,), 1 << 20)
    assert buckets[0, 0] == buckets[0, 3]  # the bigram (3, 4) at positions 0 and 3
    assert buckets[0, 0] != buckets[0, 1]
    both, mask = hash_ngrams(torch.tensor([[3, 4]]), torch.tensor([2]), (1, 2), 1 << 20)
    real = both[0][mask[0] > 0].tolist()  # unigrams 3 and 4, bigram (3, 4)
    assert len(real) == 3 and len(set(real)) == 3


def test_ngram_bag_ignores_padding_and_starts_at_zero_logits():
    bag = NgramBag(4096, 16, (1, 2, 3), 4)
    ids, lengths = _ids(CORPUS[:3])
    assert torch.count_nonzero(bag(ids, lengths)) == 0  # zero output layer: no class favoured at the start
    torch.nn.init.normal_(bag.out.weight)
    wide = torch.cat([ids, torch.zeros(3, 40, dtype=torch.long)], 1)
    assert torch.allclose(bag(ids, lengths), bag(wide, lengths), atol=1e-6)
    alone = torch.cat([bag(ids[i:i + 1, : int(lengths[i])], lengths[i:i + 1]) for i in range(3)])
    assert torch.allclose(bag(ids, lengths), alone, atol=1e-6)


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("downsamples", [0, 1, None])
def test_model_with_ngram_path_is_padding_invariant(conv, downsamples):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=make_encoder("subword").vocab_size, num_classes=3, channels=(8, 16, 32, 64),
                         fc_dims=(32,), embedding_dim=8, ngram_buckets=4096, ngram_dim=16, conv=conv,
                         downsamples=downsamples)
    model = VDCNN(config).eval()
    torch.nn.init.normal_(model.ngrams.out.weight)
    ids, lengths = _ids(CORPUS)
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat([model(ids[i:i + 1, : int(lengths[i])], lengths[i:i + 1]) for i in range(len(CORPUS))])
    assert torch.allclose(batched, alone, atol=1e-5)
    if not conv:
        assert not model.stages and not hasattr(model, "head")


def test_downsamples_sets_the_pooled_length():
    config = ModelConfig(depth=9, downsamples=1)
    assert [config.stage_downsample(i) for i in range(4)] == ["none", "max", "none", "none"]
    rows = describe(config, 64)
    assert [r["length"] for r in rows if r["stage"].startswith("stage")] == [64, 32, 32, 32]
    assert ModelConfig(depth=9).pooled_length_factor == 8 and config.pooled_length_factor == 2
    with pytest.raises(ConfigError):
        ModelConfig(downsamples=-1)
    with pytest.raises(ConfigError):
        VDCNN(ModelConfig(conv=False))  # neither path


def test_recipe_fits_layout_to_lengths():
    assert choose_downsamples(np.full(100, 14)) == 0  # a question: keep every position
    assert choose_downsamples(np.full(100, 50)) == 2
    assert choose_downsamples(np.full(100, 900)) == 3  # the paper's three for long text
    assert choose_ngram_buckets(np.full(10, 5), 3) == 2 ** 15
    assert choose_ngram_buckets(np.full(100_000, 200), 3) == 2 ** 18
    cfg = build_config(None, {})
    lines = fit_to_lengths(cfg, np.full(500, 30), {"model.downsamples", "model.ngram_buckets", "model.ngram_orders"},
                           "char")
    assert cfg.model["downsamples"] == 1 and cfg.model["ngram_orders"] == (2, 3, 4, 5)
    assert "n-gram path" in lines[0]
    cfg = build_config(None, {})
    cfg.set("model.downsamples", 3)
    fit_to_lengths(cfg, np.full(500, 30), {"model.ngram_buckets", "model.ngram_orders"}, "subword")
    assert cfg.model["downsamples"] == 3  # the user's choice stands


def test_ngram_path_learns_at_its_own_rate_without_decay():
    cfg = build_config(None, {})
    cfg.set("train.optimizer", "adamw")
    cfg.set("train.lr", 0.001)
    cfg.set("train.weight_decay", 0.05)
    model = VDCNN(ModelConfig(vocab_size=50, num_classes=3, channels=(8, 16, 32, 64), fc_dims=(16,),
                              ngram_buckets=1024, ngram_dim=8))
    groups = make_optimizer(cfg, model).param_groups
    ngram = [g for g in groups if any(p is model.ngrams.embedding.weight for p in g["params"])]
    assert len(ngram) == 1 and ngram[0]["lr"] == pytest.approx(0.001 * cfg.train.ngram_lr_scale)
    assert ngram[0]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_ema_decay_warms_up_with_the_steps():
    ema = EmaSchedule(0.998)
    step = [0]
    ema.bind(lambda: step[0])
    assert ema.current() == pytest.approx(0.1)  # the first averages follow the weights
    step[0] = 290
    assert ema.current() == pytest.approx(291 / 300)  # a 300-step run averages about its last 30 steps
    step[0] = 50_000
    assert ema.current() == pytest.approx(0.998)


def test_autotune_candidates_and_when_it_runs():
    from vdcnn.autotune import candidates, should_autotune

    cfg = build_config(None, {})
    assert cfg.auto and should_autotune(cfg)
    names = [c.name for c in candidates(cfg, coverage=0.99)]
    assert names[0] == "subword + n-grams" and "char + n-grams" in names
    assert "byte + n-grams" in [c.name for c in candidates(cfg, coverage=0.2)]  # text the alphabet cannot spell
    fixed = build_config(None, {}, ["encoder.name=byte", "train.epochs=3"])
    assert not should_autotune(fixed)  # the user fixed the length of the run
    assert all("encoder.name" not in c.settings for c in candidates(fixed, 0.99))
    assert not should_autotune(build_config("vdcnn9", {}))
    assert "subword + n-grams, shallow: 2 stages, max over time" in names
    layout_fixed = build_config(None, {}, ["model.stages=[2,2,2,2]"])
    assert all("model.stages" not in c.settings for c in candidates(layout_fixed, 0.99))


@pytest.mark.parametrize("index", range(5))
def test_every_autotune_candidate_builds_a_model_that_reads_short_and_long_texts(index):
    """Each candidate's settings, with whatever downsampling the recipe chose from the lengths, give a
    model whose logits are finite for a 3-id text and a 300-id one in one padded batch."""
    import torch

    from vdcnn.autotune import _trial_config, candidates
    from vdcnn.model import VDCNN

    cfg = build_config(None, {})
    options = candidates(cfg, coverage=0.99)
    assert len(options) == 5
    trial = _trial_config(cfg, options[index], 30.0)
    trial.set("model.downsamples", 3, source="test")  # the most the recipe chooses (long texts)
    model = VDCNN(trial.model_config(vocab_size=300, num_classes=3, pad_id=0)).eval()
    ids = torch.zeros(2, 300, dtype=torch.long)
    ids[0, :3] = torch.tensor([5, 6, 7])
    ids[1] = torch.randint(1, 300, (300,))
    with torch.no_grad():
        logits = model(ids, torch.tensor([3, 300]))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_autotune_tries_candidates_on_validation_and_records_the_choice(tmp_path, monkeypatch):
    """A real (tiny) search: every candidate trains on the topic CSV, the winner's settings are set
    on the run and stored in config.json with the trials."""
    import vdcnn.autotune as search
    from tests.conftest import write_topic_csv
    from vdcnn.data import load_run_splits
    from vdcnn.recipe import plan_run
    from vdcnn.train import train

    monkeypatch.setattr(search, "_MIN_TRIAL_S", 0.5)
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=30)
    cfg = build_config(None, {}, [f"data.dataset={data}", "model.channels=[8,16,32,64]", "model.fc_dims=[16]",
                                  "train.threads=1", "train.epochs=2"])  # short trials
    splits = load_run_splits(cfg)
    logs: list[str] = []
    summary = search.autotune(cfg, plan_run(cfg, splits), splits, 40.0, logs.append, train)
    assert len(summary["trials"]) >= 2, logs
    assert summary["chosen"] in [t["candidate"] for t in summary["trials"]]
    assert all(0.0 <= t["best_val"] <= 1.0 for t in summary["trials"])
    for key, value in summary["settings"].items():
        assert cfg.model.get(key.split(".")[1], getattr(cfg.encoder, key.split(".")[1], None)) == value
    assert any(line.startswith("autotune chose") for line in logs)


def test_ngram_model_exports_with_parity(tmp_path, monkeypatch):
    """The n-gram path is integer arithmetic on the ids: ONNX and TorchScript bundles give the
    run's probabilities (the same parity as every other variant)."""
    pytest.importorskip("onnxruntime")
    from tests.test_export import LABELS, TEXTS, assert_parity, make_run
    from vdcnn.export import export_run
    from vdcnn.predict import Classifier

    encoder = make_encoder("subword")
    config = ModelConfig(vocab_size=encoder.vocab_size, num_classes=len(LABELS), channels=(8, 16, 32, 64),
                         fc_dims=(32,), embedding_dim=8, ngram_buckets=4096, ngram_dim=16, downsamples=1)
    reset = NgramBag.reset_parameters

    def loud(self: NgramBag) -> None:  # a non-zero output layer, so the path counts in the logits
        reset(self)
        torch.nn.init.normal_(self.out.weight, std=0.5)

    monkeypatch.setattr(NgramBag, "reset_parameters", loud)
    run = make_run(tmp_path, config, encoder)
    assert torch.count_nonzero(Classifier.load(run, device="cpu").model.ngrams.out.weight) > 0
    expected = Classifier.load(run, device="cpu").predict_proba(TEXTS)
    for fmt in ("onnx", "torchscript"):
        bundle = export_run(run, fmt)
        got = Classifier.load(bundle, device="cpu").predict_proba(TEXTS)
        assert_parity(got, expected, allowed_fraction=0.2, what=fmt)


def test_the_budget_follows_the_characters_and_stays_inside_the_goals():
    """11k long posts take longer per pass than 57k snippets: the budget follows the characters, and it
    covers the whole run, so it stays under 10 minutes below 20k rows and under 20 from there on."""
    from vdcnn.recipe import apply_recipe
    from vdcnn.time_budget import parse_duration

    budgets = {}
    for name, text, rows in [("short", "a short news line about markets", 2000), ("long", "a long post " * 500, 2000),
                             ("large", "a short news line about markets", 20_000)]:  # long: 12M characters
        cfg = build_config(None, {})
        apply_recipe(cfg, [text] * rows, np.arange(rows) % 4, 4)
        budgets[name] = parse_duration(cfg.train.time_budget)
    assert budgets["short"] < budgets["long"] < 10 * 60 and budgets["long"] < budgets["large"] < 20 * 60


def test_cpu_training_is_fp32_unless_bf16_is_asked_for(tmp_path):
    """bf16 autocast cost ~1.1 points at equal epochs on CPU (README): a new CPU run records
    train.bf16 false unless --bf16 was given."""
    from typer.testing import CliRunner
    from tests.conftest import TINY, write_topic_csv
    from vdcnn.cli.main import app

    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=20)
    for name, extra, wanted in [("plain", [], False), ("asked", ["--bf16"], True)]:
        out = tmp_path / name
        result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(out), "--max-length", "32",
                                          "--epochs", "1", "--device", "cpu", "--no-progress", "--no-baseline",
                                          *extra, *TINY])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["run"]["train"]["bf16"] is wanted


def test_automatic_recipe_on_a_one_batch_dataset(tmp_path):
    """30 rows make one batch an epoch: the time budget's plan is made from that single step
    (it divided by a zero step time before)."""
    from typer.testing import CliRunner
    from tests.conftest import write_topic_csv
    from vdcnn.cli.main import app

    data = write_topic_csv(tmp_path / "tiny.csv", rows_per_class=10)
    result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--no-progress", "--no-baseline", "--set", "model.channels=[8,16,32,64]",
                                      "--set", "model.fc_dims=[16]"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["results"]["epochs_run"] == 1


def test_autotune_keeps_the_recipe_unless_a_candidate_clearly_beats_it():
    """Trials at chance (too short to learn, as on long posts) must not pick a winner by noise."""
    from vdcnn.autotune import choose

    rows = [{"candidate": "own", "best_val": 0.0513, "settings": {}},
            {"candidate": "conv", "best_val": 0.0522, "settings": {"model.ngram_buckets": 0}}]
    chosen, why = choose(rows, "own", 1130, chance=0.05)
    assert chosen["candidate"] == "own" and "kept" in why
    rows[1]["best_val"] = 0.20
    assert choose(rows, "own", 1130, chance=0.05)[0]["candidate"] == "conv"


def test_autotune_trusts_no_trial_that_has_not_left_chance():
    """TNEWS (15 imbalanced classes, selection by macro-F1): five one-epoch trials scored 1.6 to 6.1 %
    macro-F1, and the "winner" by 4.5 points over the recipe's own was at chance: it must not be chosen."""
    from vdcnn.autotune import chance_score, choose

    rng = np.random.default_rng(0)
    shares = np.array([5955, 4000, 3000] + [2500] * 11 + [257], dtype=float)
    labels = rng.choice(len(shares), size=5338, p=shares / shares.sum())
    chance = chance_score(labels, "val_macro_f1")
    assert 0.05 < chance < 0.08  # about 1/15
    assert chance_score(labels, "val_acc") == pytest.approx(np.bincount(labels).max() / len(labels))
    rows = [{"candidate": "own", "best_val": 0.0162, "settings": {}},
            {"candidate": "byte", "best_val": 0.0608, "settings": {"encoder.name": "byte"}}]
    chosen, why = choose(rows, "own", len(labels), chance)
    assert chosen["candidate"] == "own" and "no trial left chance" in why
    rows[1]["best_val"] = 0.1535  # the shallow trial of the same search: clear of chance and of the recipe's own
    assert choose(rows, "own", len(labels), chance)[0]["candidate"] == "byte"
    multi = np.zeros((100, 4), dtype=np.int64)
    multi[:, 0] = 1
    assert chance_score(multi, "val_micro_f1") == pytest.approx(2 * 0.25 / 1.25)


def test_autotune_stops_trying_when_one_trial_overruns_the_search(tmp_path, monkeypatch):
    """A trial cannot stop before one epoch: on long documents the first one took several shares of the
    search. The candidates after it are skipped (and say why), so the real run keeps its time."""
    import time as clock

    import vdcnn.autotune as search
    from tests.conftest import write_topic_csv
    from vdcnn.data import load_run_splits
    from vdcnn.recipe import plan_run

    monkeypatch.setattr(search, "_MIN_TRIAL_S", 0.01)
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=10)
    cfg = build_config(None, {}, [f"data.dataset={data}", "train.threads=1"])
    splits = load_run_splits(cfg)
    plan = plan_run(cfg, splits)
    assert len(plan.search) == 5
    budget = 1.0 / search.SEARCH_SHARE  # one second of search: a fifth of a second a trial
    calls: list[float] = []

    def slow_trial(trial_cfg, out, progress, log, on_epoch, data):
        calls.append(trial_cfg.train.time_budget)
        assert trial_cfg.train.linear_path is False  # trials compare networks: no regression fitted in each
        clock.sleep(1.2)  # one epoch: six times the trial's share
        on_epoch({"epoch": 1, "val_acc": 0.5, "train_loss": 1.0})

    logs: list[str] = []
    summary = search.autotune(cfg, plan, splits, budget, logs.append, slow_trial)
    assert len(calls) == 1 and summary["chosen"] == plan.search[0].name
    assert sum("skipped (the search has taken" in line for line in logs) == 4, logs


def test_autotune_compares_trials_at_equal_time_not_at_equal_epochs(tmp_path, monkeypatch):
    """A candidate three times faster per epoch is behind the others after its first epoch (a third of
    their time) and ahead at half time: it is not pruned; one behind at half time is."""
    import vdcnn.autotune as search
    from tests.conftest import write_topic_csv
    from vdcnn.data import load_run_splits
    from vdcnn.recipe import plan_run

    now = [0.0]
    monkeypatch.setattr(search.time, "perf_counter", lambda: now[0])
    data = write_topic_csv(tmp_path / "topics.csv", rows_per_class=10)
    cfg = build_config(None, {}, [f"data.dataset={data}", "train.threads=1"])
    splits = load_run_splits(cfg)
    plan = plan_run(cfg, splits)
    # (share of the trial's time, validation score) at the end of each epoch, per candidate
    curves = [[(0.3, 0.60), (0.6, 0.62), (0.9, 0.63)],  # the recipe's own
              [(0.3, 0.55), (0.6, 0.56), (0.9, 0.57)],
              [(0.1, 0.30), (0.2, 0.50), (0.3, 0.60), (0.4, 0.66), (0.5, 0.70), (0.6, 0.72), (0.9, 0.80)],  # fast
              [(0.1, 0.20), (0.2, 0.25), (0.55, 0.30), (0.9, 0.31)],  # fast and poor
              [(0.3, 0.58), (0.6, 0.59), (0.9, 0.60)]]
    seen: list[int] = []

    def fake_trial(trial_cfg, out, progress, log, on_epoch, data):
        index = len(seen)
        seen.append(0)
        start, seconds = now[0], trial_cfg.train.time_budget
        for epoch, (share, score) in enumerate(curves[index], 1):
            now[0] = start + share * seconds
            seen[index] = epoch
            if on_epoch({"epoch": epoch, "val_acc": score, "val_macro_f1": score, "train_loss": 1.0}):
                return
        now[0] = start + seconds

    summary = search.autotune(cfg, plan, splits, 100.0 / search.SEARCH_SHARE, lambda s: None, fake_trial)
    pruned = {t["candidate"]: (t["pruned"], t["epochs"]) for t in summary["trials"]}
    names = [c.name for c in plan.search]
    assert pruned[names[2]] == (False, 7)  # behind after its first epoch (0.30 < 0.60), ahead at half time
    assert pruned[names[3]] == (True, 3)  # behind at half time: stopped there
    assert search._time_step(10.0, 20.0) == 50 and search._time_step(0.0, 20.0) == 1
