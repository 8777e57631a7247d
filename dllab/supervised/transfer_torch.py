"""Transfer learning (questions 26, 35) in PyTorch: pretrain on digits 0-4, reuse for 5-9.

1. Pretrain the CNN of `cnn_torch` on the digits 0-4 and save its `state_dict`.
2. For a few labelled images per class of 5-9 (1, 2, 5, 10 by default; several draws), load the
   saved base (`torch.load(weights_only=True)`) and train three arms on the very same images with
   the same optimizer and steps (see `transfer_common`): `scratch` (fresh weights), `frozen`
   (`requires_grad_(False)` on the base, a new head), `fine_tuned` (head first, then the whole
   network at a tenth of the learning rate) and `warm_start` (every layer trains from the
   pretrained weights).
3. Report test accuracy on 5-9 against shots for each arm, its advantage over `scratch` per draw,
   and linear probes on pixels and on the frozen features.

On these 8x8 digits a base pretrained on five sibling classes does not beat a CNN trained from
scratch on the same few images: dllab measures and reports it (see
`dllab describe supervised/transfer`).
torchvision (ImageNet-pretrained models) is not a dllab dependency and its weights would be a
download; the base here is pretrained by dllab itself on the other half of the digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dllab.data.digits import Split, load_digits
from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import log_history
from dllab.supervised.selfsup_common import (
    CLASSES,
    OBJECTIVES,
    choose_objective,
    compare_selfsup,
    plot_labels,
    selfsup_arms,
    selfsup_settings,
    unlabeled_pool,
)
from dllab.supervised.selfsup_torch import pretrain_encoder
from dllab.supervised.torch_training import evaluate, fit, image_tensors, train_epoch
from dllab.supervised.transfer_common import (
    ARMS,
    TARGET,
    check_protocol,
    compare,
    labels_off_by_one,
    pretraining_source,
    source_and_target,
    supervised_arms,
)

CONV_LAYERS = 7  # features[:7] = conv-relu-pool-conv-relu-pool-flatten: the convolutional features


def train_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> nn.Module:
    """Full-batch steps of `optimizer` on the few samples (images, or frozen features for a head);
    parameters whose `requires_grad` is False get no gradient, so Adam leaves them alone:
    freezing, not the optimizer, keeps them."""
    for _ in range(steps):
        train_epoch(model, optimizer, x, y, np.arange(len(y)), len(y))
    return model


def load_base(model: CNN, path: Path) -> CNN:
    """Replace the model's base by the saved pretrained one (its head stays freshly initialised)."""
    saved = torch.load(path, weights_only=True)
    model.features.load_state_dict(
        {k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")}
    )
    return model


def held_parameters(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """How many of the model's parameters the optimizer holds state for (Adam's moments): the
    ones it has actually updated."""
    return sum(p.numel() for p in model.parameters() if optimizer.state.get(p))


def largest_change(parameters, before) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(parameters, before))


class Arms:
    """Trains the arms on one set of few samples, from the base saved at `path`. A frozen base
    computes the same features at every step, so the frozen arms train their head on features
    computed once; `measure_freezing` checks that shortcut against a whole frozen model (the
    base bit-identical, the head moving, Adam given every parameter) on the first call."""

    def __init__(
        self,
        path: Path,
        task,
        steps: int,
        classes: int,
        arms=ARMS,
        fault: str = "none",
        measure: bool = False,
    ):
        self.path, self.steps, self.classes, self.arms, self.fault = (
            path,
            steps,
            classes,
            arms,
            fault,
        )
        self.validation, self.test = image_tensors(task.validation), image_tensors(task.test)
        self.measure, self.mechanics = measure, {}
        self.loaded = load_base(CNN(classes=classes), path)
        self.features = self.base_features(self.loaded)

    @torch.no_grad()
    def base_features(self, model: CNN) -> tuple[torch.Tensor, torch.Tensor]:
        return model.features(self.validation[0]), model.features(self.test[0])

    def accuracies(self, model: nn.Module, inputs=None) -> tuple[float, float]:
        validation, test = inputs or (self.validation[0], self.test[0])
        return (
            evaluate(model, validation, self.validation[1])[1],
            evaluate(model, test, self.test[1])[1],
        )

    def transferred(self, init_seed: int) -> CNN:
        """A new random head on the pretrained base (a fresh base if the weights are not loaded)."""
        torch.manual_seed(init_seed)
        model = CNN(classes=self.classes)
        return model if self.fault == "encoder_not_loaded" else load_base(model, self.path)

    def frozen_head(self, samples: Split, learning_rate: float, init_seed: int, steps: int):
        """The new head trained on the frozen base's features of the samples; the model (base and
        trained head) and its (validation, test) accuracies."""
        model = self.transferred(init_seed)
        x, y = image_tensors(samples)
        with torch.no_grad():
            features = model.features(x)
        head = model.head
        train_steps(head, torch.optim.Adam(head.parameters(), lr=learning_rate), features, y, steps)
        inputs = self.features if self.fault != "encoder_not_loaded" else self.base_features(model)
        return model, self.accuracies(head, inputs)

    def measure_freezing(self, samples: Split, learning_rate: float, init_seed: int) -> None:
        """The whole model trained with its base frozen (`requires_grad_(False)`) and Adam given
        every parameter: what moved, what Adam holds, and how far its head is from the head
        trained on precomputed features (the shortcut the frozen arms take)."""
        model = self.transferred(init_seed)
        if self.fault != "base_not_frozen":
            model.features.requires_grad_(False)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        if self.fault == "stale_optimizer":  # the head replaced after the optimizer was built
            model.head = nn.Linear(model.head.in_features, self.classes)
        base, head = (
            [p.detach().clone() for p in part.parameters()] for part in (model.features, model.head)
        )
        train_steps(model, optimizer, *image_tensors(samples), self.steps)
        shortcut, _ = self.frozen_head(samples, learning_rate, init_seed, self.steps)
        self.mechanics = {
            "max_frozen_base_change": largest_change(model.features.parameters(), base),
            "frozen_head_change": largest_change(model.head.parameters(), head),
            "frozen_trainable_parameters": sum(
                p.numel() for p in model.parameters() if p.requires_grad
            ),
            "optimizer_held_parameters": held_parameters(model, optimizer),
            "feature_head_difference": largest_change(
                model.head.parameters(), shortcut.head.parameters()
            ),
        }

    def full(
        self, model: CNN, samples: Split, learning_rate: float, steps: int
    ) -> tuple[float, float]:
        """Every weight of `model` trained (nothing frozen); its accuracies."""
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        return self.accuracies(train_steps(model, optimizer, *image_tensors(samples), steps))

    def __call__(
        self, samples: Split, learning_rate: float, init_seed: int
    ) -> dict[str, tuple[float, float]]:
        if self.measure and not self.mechanics:
            self.measure_freezing(samples, learning_rate, init_seed)
        results = {}
        if "scratch" in self.arms:
            torch.manual_seed(init_seed)
            steps = (
                self.steps // 10 if self.fault == "scratch_fewer_steps" else self.steps
            )  # a control's mistake
            results["scratch"] = self.full(CNN(classes=self.classes), samples, learning_rate, steps)
        if "frozen" in self.arms:
            results["frozen"] = self.frozen_head(samples, learning_rate, init_seed, self.steps)[1]
        if "fine_tuned" in self.arms:  # stage 1: the head on the frozen base; 2: all, lr / 10
            tuned, _ = self.frozen_head(samples, learning_rate, init_seed, self.steps // 2)
            results["fine_tuned"] = self.full(
                tuned, samples, learning_rate / 10, self.steps - self.steps // 2
            )
        if "warm_start" in self.arms:  # nothing frozen: the pretrained initialisation
            results["warm_start"] = self.full(
                self.transferred(init_seed), samples, learning_rate, self.steps
            )
        return results


def batchnorm_statistics(images: np.ndarray, labels: np.ndarray, fault: str) -> dict[str, float]:
    """How far BatchNorm's running mean moves in 3 Adam steps: in training mode, in eval mode,
    and with its weights frozen (`requires_grad_(False)`) but in training mode, the torch pitfall:
    freezing the weights does not freeze the statistics, only `.eval()` does."""
    x, y = torch.from_numpy(images.reshape(len(images), -1)), torch.from_numpy(labels)
    changes = {}
    for name, training, frozen in (
        ("training_mode", True, False),
        ("inference_mode", False, False),
        ("requires_grad_false", True, True),
    ):
        torch.manual_seed(0)
        model = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.Linear(x.shape[1], int(y.max()) + 1))
        model[0].requires_grad_(not frozen)
        model.train(training != (fault == "bn_modes_swapped"))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        before = model[0].running_mean.clone()
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        changes[f"bn_stats_change_{name}"] = float((model[0].running_mean - before).abs().max())
    return changes


def pretrain_supervised(
    ctx, source, *, pretrain_epochs: int, batch_size: int, learning_rate: float, classes: int
) -> tuple[Path, float]:
    """The CNN trained on the source digits and saved as a `state_dict`; its source test
    accuracy."""
    pretrained = CNN(classes=classes)
    optimizer = torch.optim.Adam(pretrained.parameters(), lr=learning_rate)
    history = fit(
        ctx,
        pretrained,
        optimizer,
        source,
        epochs=pretrain_epochs,
        batch_size=batch_size,
        name="pretrain",
    )
    log_history(ctx, history, "pretrain")
    path = ctx.artifact("pretrained_0-4.pt")
    torch.save(pretrained.state_dict(), path)
    return path, evaluate(pretrained, *image_tensors(source.test))[1]


def supervised_arm(
    ctx, *, fault: str, shots, learning_rates, steps, draws, fine_tuning: bool, **pretraining
) -> dict[str, float]:
    """Pretrain on 0-4, then the arms on a few 5-9s, the probes of the features, and the
    freezing mechanics measured on the first few-shot training."""
    source, target = source_and_target(ctx.seed)
    source = pretraining_source(ctx.seed, source, fault, ctx.rng(31))
    path, source_accuracy = pretrain_supervised(
        ctx, source, classes=int(source.train.labels.max()) + 1, **pretraining
    )
    reloaded = load_base(CNN(classes=len(TARGET)), path).eval()

    @torch.no_grad()
    def features(images: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(images).unsqueeze(1)
        return {
            "conv": reloaded.features[:CONV_LAYERS](x).numpy(),
            "features": reloaded.features(x).numpy(),
        }

    arms = Arms(
        path,
        target,
        steps,
        len(TARGET),
        arms=supervised_arms(fine_tuning),
        fault=fault,
        measure=True,
    )
    trainer = labels_off_by_one(arms, len(TARGET)) if fault == "labels_off_by_one" else arms
    metrics = {"pretrain_test_accuracy": source_accuracy}
    metrics.update(
        compare(
            ctx,
            target,
            trainer,
            features,
            shots=shots,
            learning_rates=learning_rates,
            draws=draws,
            arms=arms.arms,
        )
    )
    return {**metrics, **arms.mechanics}


def selfsup_arm(
    ctx,
    *,
    fault: str,
    objectives: str,
    shots,
    learning_rates,
    steps,
    draws,
    fine_tuning: bool,
    selfsup_settings: dict,
) -> dict[str, float]:
    """Pretrain an encoder per objective on the unlabeled pool, choose one on validation, then
    scratch / frozen (/ fine-tuned) on a few labelled images of all ten digits."""
    digits = load_digits(ctx.seed)
    pool = unlabeled_pool(digits.train.images, fault == "shuffled_pixels", ctx.rng(41))
    metrics, paths = {}, {}
    for index, objective in enumerate(objectives.split("+")):
        paths[objective] = ctx.artifact(f"selfsup_{objective}.pt")
        losses = pretrain_encoder(
            objective,
            pool,
            paths[objective],
            ctx.rng(42 + index),
            init_seed=ctx.seed,
            **selfsup_settings[objective],
        )
        metrics[f"selfsup_{objective}_final_loss"] = float(np.mean(losses[-5:]))
    chosen = next(iter(paths))
    if len(paths) > 1:
        candidates = {
            o: Arms(p, digits, steps, CLASSES, arms=("frozen",), fault=fault)
            for o, p in paths.items()
        }
        chosen, scores = choose_objective(
            ctx, digits, candidates, learning_rates=learning_rates, draws=draws
        )
        metrics.update(scores)
    metrics["selfsup_objective_index"] = OBJECTIVES.index(chosen)
    arms = Arms(paths[chosen], digits, steps, CLASSES, arms=selfsup_arms(fine_tuning), fault=fault)
    metrics.update(
        compare_selfsup(ctx, digits, arms, shots=shots, learning_rates=learning_rates, draws=draws)
    )
    return metrics


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: list[int],
        learning_rates: list[float], steps: int, draws: int, supervised_draws: int,
        fine_tuning: bool, objectives: str, selfsup_epochs: int, selfsup_batch_size: int,
        selfsup_learning_rate: float, temperature: float, elastic: float, mask: float,
        applications: bool, fault: str) -> dict[str, float]:
    check_protocol(shots, learning_rates, steps, min(draws, supervised_draws))
    if fault == "whole_model_frozen":
        raise ValueError("fault 'whole_model_frozen' is Keras's; torch's is 'stale_optimizer'")
    protocol = dict(fault=fault, shots=shots, learning_rates=learning_rates, steps=steps,
                    fine_tuning=fine_tuning)
    metrics = supervised_arm(ctx, pretrain_epochs=pretrain_epochs, batch_size=batch_size,
                             learning_rate=learning_rate, draws=supervised_draws, **protocol)
    settings = selfsup_settings(selfsup_epochs, selfsup_batch_size, selfsup_learning_rate,
                                temperature=temperature, elastic=elastic, mask=mask)
    metrics.update(selfsup_arm(ctx, objectives=objectives, selfsup_settings=settings, draws=draws,
                               **protocol))
    plot_labels(ctx, metrics, shots)
    digits = load_digits(ctx.seed)
    metrics.update(batchnorm_statistics(digits.train.images, digits.train.labels, fault))
    for name in (
        "applications_downloads",
        "applications_frozen_trainable_weights",
        "bn_stats_change_trainable_false",
    ):
        ctx.skip_metric(name, "a Keras measurement (keras.applications, Keras's BatchNorm rule)")
    return metrics
