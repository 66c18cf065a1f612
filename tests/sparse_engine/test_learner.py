from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from sparse_engine import recipe
from sparse_engine.backbone import Backbone, BackboneSpec
from sparse_engine.config import PERIOD_STEPS, ProgressEvent, Retrain, TaskConfig
from sparse_engine.data import TaskData
from sparse_engine.kwta import auto_k
from sparse_engine.mnist import Mnist, digits_task
from sparse_engine.model import SparseCL
from sparse_engine.recipe import Run
from sparse_engine.saliency import density_schedule, keep_count
from sparse_engine.trainer import TaskTrainer

from .conftest import FAST, TINY


def test_iterative_pruning_follows_the_density_schedule(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, density=0.1, prune_rounds=3)
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=config, progress=events.append)
    pruned = [e.density for e in events if e.phase == "prune"]
    assert pruned == pytest.approx(density_schedule(0.1, 3), abs=1e-3)


def test_progress_reports_every_phase_in_order(three_tasks: list[TaskData]) -> None:
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=FAST, progress=events.append)
    phases = [e.phase for e in events if e.step == 0]
    assert phases == ["train", "prune", "retrain", "commit"]
    assert events[-1].density == pytest.approx(0.1, abs=1e-3)


def test_rewind_restores_every_trainable_value_to_its_start() -> None:
    spec = BackboneSpec.parse("mlp:12-6")
    backbone = Backbone(spec)
    trainer = TaskTrainer(
        backbone, [torch.zeros(6, 12, dtype=torch.bool)], 3, FAST, torch.Generator().manual_seed(0)
    )
    start = [p.detach().clone() for p in trainer.parameters()]
    with torch.no_grad():
        for p in trainer.parameters():
            p.add_(1.0)
    trainer.rewind()
    assert all(torch.equal(p, s) for p, s in zip(trainer.parameters(), start, strict=True))


def test_gradients_never_reach_owned_positions() -> None:
    spec = BackboneSpec.parse("mlp:12-6")
    owned = torch.zeros(6, 12, dtype=torch.bool)
    owned[:3] = True
    trainer = TaskTrainer(Backbone(spec), [owned], 3, FAST, torch.Generator().manual_seed(0))
    trainer(torch.randn(5, 12)).sum().backward()
    grad = trainer.free[0].grad
    assert grad is not None
    assert torch.equal(grad[owned], torch.zeros(int(owned.sum())))
    assert bool((grad[~owned] != 0).any())


def learning_rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every optimizer step from now on (the real optimizers, hooked)."""
    rates: list[float] = []
    make = recipe.make_optimizer

    def recording(params: list[torch.nn.Parameter], cfg: TaskConfig) -> torch.optim.Optimizer:
        optimizer = make(params, cfg)
        optimizer.register_step_pre_hook(
            lambda opt, *_: rates.append(float(opt.param_groups[0]["lr"]))
        )
        return optimizer

    monkeypatch.setattr(recipe, "make_optimizer", recording)
    return rates


def test_retraining_anneals_the_learning_rate_and_dense_training_does_not(
    three_tasks: list[TaskData], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(FAST, epochs=1, retrain_epochs=2)
    run = _run(SparseCL(TINY), three_tasks[0], config)
    rates = learning_rates(monkeypatch)
    run.prune_recipe()
    per_epoch = run.steps_per_epoch()
    assert len(rates) == 3 * per_epoch
    assert rates[:per_epoch] == [config.lr] * per_epoch  # dense phase: constant
    total = 2 * per_epoch
    want = [config.lr * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert rates[per_epoch:] == pytest.approx(want)  # retrain: lr, falling towards 0
    assert all(a > b for a, b in itertools.pairwise(rates[per_epoch:]))


def test_rewound_lottery_ticket_still_learns(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, retrain="rewind", retrain_epochs=2, prune_rounds=2)
    model = SparseCL(TINY)
    record = model.learn_task("t", three_tasks[0], config=config)
    assert record.val_accuracy > 0.9  # digits 0 vs 1; chance is 0.5


def _run(model: SparseCL, data: TaskData, config: TaskConfig) -> Run:
    """A recipe run of ``config`` for a new task of ``model``, nothing run yet."""
    train, val = data.split(0.1, seed=config.seed)
    return Run.create(model.backbone, model.owners.owned(), train, val, train.classes, config, 1.0)


def _with_first_task(three_tasks: list[TaskData]) -> SparseCL:
    model = SparseCL(TINY)
    model.learn_task("t1", three_tasks[0], config=FAST)
    return model


def test_sign_constant_sets_kept_free_weights_to_initial_sign_times_layer_std(
    three_tasks: list[TaskData],
) -> None:
    model = _with_first_task(three_tasks)  # so that some weights are owned
    run = _run(model, three_tasks[1], dataclasses.replace(FAST, retrain="sign_constant"))
    run.train_dense()
    run.prune(FAST.density)
    run.reset()
    net = run.trainer
    for p, start, t, o in zip(net.free, net.constants, net.trainable, net.owned, strict=True):
        constant = float(start[~o].std())
        assert int(t.sum()) > 0
        assert torch.equal(p[t].abs(), torch.full((int(t.sum()),), constant))
        assert torch.equal(torch.sign(p[t]), torch.sign(start[t]))


def test_reinit_draws_values_unlike_both_the_initial_and_the_trained_ones(
    three_tasks: list[TaskData],
) -> None:
    model = _with_first_task(three_tasks)
    run = _run(model, three_tasks[1], dataclasses.replace(FAST, retrain="reinit"))
    run.train_dense()
    run.prune(FAST.density)
    net = run.trainer
    trained = [p.detach().clone() for p in net.free]
    run.reset()
    for p, start, done, t in zip(net.free, net.constants, trained, net.trainable, strict=True):
        bound = 1.0 / p.shape[1] ** 0.5
        assert not bool((p[t] == start[t]).any())
        assert not bool((p[t] == done[t]).any())
        assert bool((p[t].abs() <= bound).all())
    assert all(not bool(b.any()) for b in net.biases)


def test_late_rewind_restores_exactly_the_iterate_after_rewind_epoch(
    three_tasks: list[TaskData],
) -> None:
    model = _with_first_task(three_tasks)
    late = dataclasses.replace(FAST, epochs=3, retrain="late_rewind", rewind_epoch=1)
    run = _run(model, three_tasks[1], late)
    run.train_dense()
    after_three = run.trainer.snapshot()
    run.prune(FAST.density)
    run.reset()
    # the same run stopped after one epoch of dense training is the rewind target
    reference = _run(model, three_tasks[1], dataclasses.replace(late, epochs=1, retrain="finetune"))
    reference.train_dense()
    target = reference.trainer.snapshot()
    rewound = run.trainer.snapshot()
    for got, want, t in zip(rewound, target, run.trainer.trainable, strict=False):
        assert torch.equal(got[t], want[t])  # free weights, at the kept positions
    n = len(run.trainer.free)
    for got, want, end in zip(rewound[n:], target[n:], after_three[n:], strict=True):
        assert torch.equal(got, want)  # biases and head
        assert not torch.equal(got, end)
    assert not torch.equal(rewound[0], run.trainer.initial[0])


@pytest.mark.parametrize("retrain", ["late_rewind", "reinit", "sign_constant"])
def test_retrain_modes_never_write_earlier_tasks(
    three_tasks: list[TaskData], probe: TaskData, retrain: Retrain
) -> None:
    model = _with_first_task(three_tasks)
    before = model.logits("t1", probe.x)
    owned = model.owners.owned()
    values = [w[o].clone() for w, o in zip(model.backbone.weights, owned, strict=True)]
    config = dataclasses.replace(FAST, retrain=retrain, retrain_epochs=2)  # a reset must relearn
    model.learn_task("t2", three_tasks[1], config=config)
    for w, o, v in zip(model.backbone.weights, owned, values, strict=True):
        assert torch.equal(w[o], v)
    assert torch.equal(model.logits("t1", probe.x), before)


@pytest.mark.parametrize("retrain", ["late_rewind", "reinit", "sign_constant"])
def test_retrain_modes_still_learn(three_tasks: list[TaskData], retrain: Retrain) -> None:
    config = dataclasses.replace(FAST, retrain=retrain, retrain_epochs=2)
    record = SparseCL(TINY).learn_task("t", three_tasks[0], config=config)
    assert record.val_accuracy > 0.9  # digits 0 vs 1; chance is 0.5


def test_history_records_every_round_of_iterative_pruning(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, density=0.1, prune_rounds=3, retrain_epochs=0)
    model = SparseCL(TINY)
    record = model.learn_task("t", three_tasks[0], config=config)
    rounds = [h for h in record.history if h["phase"] == "prune"]
    schedule = density_schedule(0.1, 3)
    assert [h["round"] for h in rounds] == [1.0, 2.0, 3.0]
    assert [h["target_density"] for h in rounds] == schedule
    sizes = [layer.numel for layer in model.spec.layers]
    exact = [sum(keep_count(d, n) for n in sizes) / sum(sizes) for d in schedule]
    assert [h["density"] for h in rounds] == pytest.approx(exact, abs=1e-12)


# ---- auto epochs (issue 17) -----------------------------------------------------------------
def stops(events: list[ProgressEvent]) -> dict[str, ProgressEvent]:
    """The event that ended each training phase, by phase."""
    return {e.phase: e for e in events if e.stopped is not None}


def test_auto_epochs_stop_on_a_plateau_and_say_why(
    three_tasks: list[TaskData], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Digits 0 vs 1 are learned in an epoch or two: both phases stop on the plateau long
    before max_epochs; retraining first cuts its lr LR_CUTS times, so it ends annealed."""
    config = dataclasses.replace(
        FAST, epochs="auto", retrain_epochs="auto", patience=2, max_epochs=40
    )
    rates = learning_rates(monkeypatch)
    events: list[ProgressEvent] = []
    model = SparseCL(TINY)
    model.learn_task("t", three_tasks[0], config=config, progress=events.append)
    ended = stops(events)
    assert set(ended) == {"train", "retrain"}
    assert all(e.stopped == "plateau" for e in ended.values())
    train_epochs, retrain_epochs = (int(ended[p].extra["epochs"]) for p in ("train", "retrain"))
    period = int(ended["train"].extra["period_epochs"])  # 270 examples: 5 steps an epoch
    assert period == config.epochs_per_period(5) > 1
    assert ended["retrain"].extra["period_epochs"] == period
    assert config.patience * period < train_epochs < config.max_epochs * period
    patience = config.patience * period
    assert (recipe.LR_CUTS + 1) * patience < retrain_epochs < config.max_epochs * period
    epochs = [e.epoch for e in events if e.step == 0 and e.phase in ("train", "retrain")]
    assert epochs == list(range(1, train_epochs + retrain_epochs + 1))
    per_epoch = len(rates) // (train_epochs + retrain_epochs)
    assert len(rates) == per_epoch * (train_epochs + retrain_epochs)
    assert rates[: train_epochs * per_epoch] == [config.lr] * (train_epochs * per_epoch)
    retrain_rates = rates[train_epochs * per_epoch :]
    levels = [config.lr * recipe.LR_CUT**i for i in range(recipe.LR_CUTS + 1)]
    assert sorted(set(retrain_rates), reverse=True) == pytest.approx(levels)
    assert retrain_rates[-1] == pytest.approx(levels[-1])  # ended at the annealed rate
    assert all(a >= b for a, b in itertools.pairwise(retrain_rates))


@pytest.mark.parametrize("batch_size", [64, 5], ids=["5-steps-an-epoch", "54-steps-an-epoch"])
def test_auto_patience_counts_periods_of_at_least_period_steps(
    three_tasks: list[TaskData], batch_size: int
) -> None:
    """270 training examples at batch 64 are 5 steps an epoch: the phase waits ``patience``
    periods of PERIOD_STEPS steps (⌈PERIOD_STEPS / 5⌉ epochs) after its last better epoch,
    not ``patience`` epochs, and says so; at batch 5 (54 steps) a period is one epoch."""
    config = dataclasses.replace(
        FAST, epochs="auto", retrain_epochs=1, patience=2, max_epochs=40, batch_size=batch_size
    )
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=config, progress=events.append)
    end = stops(events)["train"]
    per_epoch = -(-270 // batch_size)
    period = config.epochs_per_period(per_epoch)
    assert period == (-(-PERIOD_STEPS // per_epoch) if per_epoch < PERIOD_STEPS else 1)
    assert (end.stopped, end.extra["period_epochs"]) == ("plateau", period)
    val = [e.accuracy for e in events if e.phase == "train" and e.step == 0]
    better = [i for i, a in enumerate(val, 1) if a > max(val[: i - 1], default=-1.0)]
    assert len(val) == end.extra["epochs"] == better[-1] + config.patience * period
    assert end.extra["kept_epoch"] == max(i for i, a in enumerate(val, 1) if a == max(val))
    assert stops(events)["retrain"].stopped == "fixed"


def test_auto_retraining_commits_its_best_epoch_not_its_last(mnist: Mnist) -> None:
    """Validation examples of other digits with labels drawn at random make the validation
    accuracy wander: the task committed is the retraining iterate of the best epoch (latest
    of equals), whatever the last epoch scored, k-WTA boost state included (its accuracy is
    measured again on the committed task)."""
    train = digits_task([0, 1], 300, mnist)
    real = digits_task([0, 1], 400, mnist).subset(slice(300, 400))
    others = digits_task(list(range(2, 10)), 200, mnist)
    coin = torch.randint(0, 2, (len(others),), generator=torch.Generator().manual_seed(3))
    val = TaskData(torch.cat([real.x, others.x]), torch.cat([real.y, coin]))
    config = dataclasses.replace(FAST, epochs=1, retrain_epochs="auto", patience=3, max_epochs=15)
    events: list[ProgressEvent] = []
    model = SparseCL(TINY)
    record = model.learn_task("t", train, val, config, events.append)
    retrain = [e.accuracy for e in events if e.phase == "retrain" and e.step == 0]
    end = stops(events)["retrain"]
    kept = int(end.extra["kept_epoch"])
    best = max(retrain)
    assert retrain[-1] < best  # the data make the last epoch worse than the best one
    assert kept == max(i for i, a in enumerate(retrain, 1) if a == best)
    assert end.extra["kept_accuracy"] == best == record.val_accuracy
    committed = model.reference_logits("t", val.x).argmax(1)
    assert int((committed == val.y).sum()) / len(val) == best


def test_fixed_epochs_run_exactly_their_count_and_say_so(three_tasks: list[TaskData]) -> None:
    config = dataclasses.replace(FAST, epochs=2, retrain_epochs=3)
    events: list[ProgressEvent] = []
    SparseCL(TINY).learn_task("t", three_tasks[0], config=config, progress=events.append)
    ended = stops(events)
    assert {p: (e.stopped, e.extra["epochs"], e.extra["kept_epoch"]) for p, e in ended.items()} == {
        "train": ("fixed", 2, 2),
        "retrain": ("fixed", 3, 3),
    }


def test_default_k_is_auto_resolved_per_layer_and_stored_as_asked(
    three_tasks: list[TaskData],
) -> None:
    """k "auto" (the default) becomes auto_k(width) winners; the config keeps "auto"."""
    model = SparseCL("mlp:784-100-49")
    config = dataclasses.replace(FAST, k=TaskConfig().k)
    model.learn_task("t", three_tasks[0], config=config)
    assert TaskConfig().k == "auto" and model.task("t").config.k == "auto"
    assert [s.k for s in model.task("t").kwta] == [auto_k(100), auto_k(49)] == [40, 24]
