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
scratch on the same few images: dllab measures and reports it (see `dllab describe supervised/transfer`).
torchvision (ImageNet-pretrained models) is not a dllab dependency and its weights would be a
download; the base here is pretrained by dllab itself on the other half of the digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dllab.data.digits import Split
from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import report_history
from dllab.supervised.torch_training import evaluate, fit, image_tensors, train_epoch
from dllab.supervised.transfer_common import TARGET, check_protocol, compare, source_and_target

CONV_LAYERS = 7  # features[:7] = conv-relu-pool-conv-relu-pool-flatten: the convolutional features


def train_steps(model: CNN, parameters, samples: Split, steps: int, learning_rate: float) -> CNN:
    """Full-batch Adam on the few samples for `steps` steps; only `parameters` are updated."""
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    x, y = image_tensors(samples)
    for _ in range(steps):
        train_epoch(model, optimizer, x, y, np.arange(len(y)), len(y))
    return model


def load_base(model: CNN, path: Path) -> CNN:
    """Replace the model's base by the saved pretrained one (its head stays freshly initialised)."""
    saved = torch.load(path, weights_only=True)
    model.features.load_state_dict({k.removeprefix("features."): v for k, v in saved.items()
                                    if k.startswith("features.")})
    return model


class Arms:
    """Trains the four arms on one set of few samples; checks that the frozen base never moves."""

    def __init__(self, path: Path, target, steps: int):
        self.path, self.steps = path, steps
        self.validation, self.test = image_tensors(target.validation), image_tensors(target.test)
        self.max_frozen_base_change, self.trainable_parameters = 0.0, 0

    def accuracies(self, model: CNN) -> tuple[float, float]:
        return evaluate(model, *self.validation)[1], evaluate(model, *self.test)[1]

    def __call__(self, samples: Split, learning_rate: float, init_seed: int) -> dict[str, tuple[float, float]]:
        torch.manual_seed(init_seed)
        scratch = CNN(classes=len(TARGET))  # fresh weights everywhere
        train_steps(scratch, scratch.parameters(), samples, self.steps, learning_rate)

        torch.manual_seed(init_seed)
        frozen = load_base(CNN(classes=len(TARGET)), self.path)  # a new random head on the saved base
        frozen.features.requires_grad_(False)
        base_before = [p.clone() for p in frozen.features.parameters()]
        train_steps(frozen, frozen.head.parameters(), samples, self.steps, learning_rate)
        change = max(float((p - q).abs().max()) for p, q in zip(frozen.features.parameters(), base_before))
        self.max_frozen_base_change = max(self.max_frozen_base_change, change)
        self.trainable_parameters = sum(p.numel() for p in frozen.parameters() if p.requires_grad)

        torch.manual_seed(init_seed)
        tuned = load_base(CNN(classes=len(TARGET)), self.path)
        tuned.features.requires_grad_(False)  # stage 1: the head on the frozen base
        train_steps(tuned, tuned.head.parameters(), samples, self.steps // 2, learning_rate)
        tuned.features.requires_grad_(True)  # stage 2: everything, with a small learning rate
        train_steps(tuned, tuned.parameters(), samples, self.steps - self.steps // 2, learning_rate / 10)

        torch.manual_seed(init_seed)
        warm = load_base(CNN(classes=len(TARGET)), self.path)  # nothing frozen: pretrained initialisation
        train_steps(warm, warm.parameters(), samples, self.steps, learning_rate)
        return {"scratch": self.accuracies(scratch), "frozen": self.accuracies(frozen),
                "fine_tuned": self.accuracies(tuned), "warm_start": self.accuracies(warm)}


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: list[int],
        learning_rates: list[float], steps: int, draws: int) -> dict[str, float]:
    check_protocol(shots, learning_rates, steps, draws)
    source, target = source_and_target(ctx.seed)
    pretrained = CNN(classes=5)
    optimizer = torch.optim.Adam(pretrained.parameters(), lr=learning_rate)
    history = fit(ctx, pretrained, optimizer, source, epochs=pretrain_epochs, batch_size=batch_size, name="pretrain")
    report_history(ctx, history, "pretrain", "torch CNN pretrained on digits 0-4")
    path = ctx.artifact("pretrained_0-4.pt")
    torch.save(pretrained.state_dict(), path)
    metrics = {"pretrain_test_accuracy": evaluate(pretrained, *image_tensors(source.test))[1]}

    reloaded = load_base(CNN(classes=5), path).eval()

    @torch.no_grad()
    def features(images: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(images).unsqueeze(1)
        return {"conv": reloaded.features[:CONV_LAYERS](x).numpy(), "features": reloaded.features(x).numpy()}

    arms = Arms(path, target, steps)
    metrics.update(compare(ctx, target, arms, features, shots=shots, learning_rates=learning_rates, draws=draws))
    metrics.update(max_frozen_base_change=arms.max_frozen_base_change,
                   frozen_trainable_parameters=arms.trainable_parameters)
    for name in ("applications_downloads", "applications_frozen_trainable_weights"):
        ctx.skip_metric(name, "keras.applications is Keras only (torchvision is not a dllab dependency)")
    return metrics
