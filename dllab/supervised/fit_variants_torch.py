"""One model, three ways to feed a torch training loop (questions 23, 36, 44), on the bundled digits.

PyTorch has no `fit`: the loop is written by hand (forward, loss, `zero_grad`, `backward`, `step`).
The same MLP (64 pixels -> Linear 64 -> ReLU -> Linear 10), from the same initial weights, is fed:

1. index batches of tensors in a seeded order (the hand-written loop);
2. a `DataLoader` over a `TensorDataset` with `shuffle=True` and a seeded `torch.Generator`;
3. a `DataLoader` over an `IterableDataset` that wraps a Python generator yielding the hand loop's
   batches (the torch counterpart of Keras's `fit` on a generator).

Measured: each variant's test accuracy and their spread (the same band), and that the two
variants fed the very same batches (the hand loop and the generator loader) end with the weights
that a float64 numpy recomputation of the same Adam steps on those batches gives
(`references.adam_mlp_reference`: forward pass, gradients and update written out by hand).
The networks train in float64 for that comparison: in float32, Adam's division by sqrt(v)
magnifies the rounding of near-zero gradients, and the two trajectories drift apart by up to
1e-2 on some seeds; in float64 they agree to about 1e-15.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from dllab.supervised.common import class_sorted_orders, epoch_orders, fed_digits, load_images, report_history
from dllab.supervised.references import adam_mlp_reference
from dllab.supervised.torch_training import evaluate


class GeneratorDataset(IterableDataset):
    """An IterableDataset whose iterator is a Python generator of ready-made batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, orders: list[np.ndarray], batch_size: int):
        self.x, self.y, self.orders, self.batch_size = x, y, orders, batch_size

    def __iter__(self):
        for order in self.orders:
            for start in range(0, len(order), self.batch_size):
                index = torch.from_numpy(order[start:start + self.batch_size])
                yield self.x[index], self.y[index]


def build_mlp(pixels: int = 64, hidden: int = 64, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train(model: nn.Module, batches, learning_rate: float, steps_per_epoch: int, evaluate_epoch,
          fault: str = "none") -> dict:
    """The hand-written loop, over any iterable of (images, labels) batches; the epoch's history.
    `fault` injects a negative control's mistake: the loss on logits read as log-probabilities
    (`nll_loss` without `log_softmax`), or gradients never zeroed (they add up over the steps)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    total, correct, seen = 0.0, 0, 0
    loss_function = nn.functional.nll_loss if fault == "logits-as-probabilities" else nn.functional.cross_entropy
    for step, (images, labels) in enumerate(batches, start=1):
        model.train()
        logits = model(images)
        loss = loss_function(logits, labels)
        if fault != "no-zero-grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
        if step % steps_per_epoch == 0:
            val_loss, val_accuracy = evaluate_epoch(model)
            for key, value in zip(history, (total / seen, correct / seen, val_loss, val_accuracy)):
                history[key].append(value)
            total, correct, seen = 0.0, 0, 0
    return history


def weights_as_numpy(model: nn.Module) -> list[np.ndarray]:
    """[W1 (in, hidden), b1, W2 (hidden, out), b2]: the layout of `adam_mlp_reference`."""
    first, second = model[0], model[2]
    return [first.weight.detach().numpy().T, first.bias.detach().numpy(),
            second.weight.detach().numpy().T, second.bias.detach().numpy()]


def reference_difference(models: list[nn.Module], initial: nn.Module, batches, learning_rate: float) -> float:
    """The largest weight difference of the given trained models from the float64 numpy
    recomputation of the same Adam steps, from the same initial weights, on the same batches."""
    reference = adam_mlp_reference(weights_as_numpy(initial), batches, learning_rate, style="torch")
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - b)))
               for model in models for a, b in zip(weights_as_numpy(model), reference))


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = fed_digits(load_images(ctx.seed, data), fault, ctx.seed)
    x, y = torch.from_numpy(digits.train.flat()).double(), torch.from_numpy(digits.train.labels)
    val_x, val_y = torch.from_numpy(digits.validation.flat()).double(), torch.from_numpy(digits.validation.labels)
    test_x, test_y = torch.from_numpy(digits.test.flat()).double(), torch.from_numpy(digits.test.labels)
    steps = -(-len(y) // batch_size)
    orders = epoch_orders(ctx.seed, len(y), epochs)
    if fault == "class-sorted":  # a control's mistake: the batches come class by class
        orders = class_sorted_orders(digits.train.labels, epochs)
    initial = build_mlp(x.shape[1], classes=int(y.max()) + 1).double()  # float64: see the docstring

    def hand_batches():
        for order in orders:
            for start in range(0, len(order), batch_size):
                index = torch.from_numpy(order[start:start + batch_size])
                yield x[index], y[index]

    def epochs_of(loader):
        for _ in range(epochs):
            yield from loader

    sources = {
        "hand_loop": hand_batches(),
        "dataloader": epochs_of(DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(ctx.seed))),
        "generator_loader": DataLoader(GeneratorDataset(x, y, orders, batch_size), batch_size=None),
    }
    models, metrics = {}, {}
    for name, batches in sources.items():
        model = copy.deepcopy(initial)
        history = train(model, batches, learning_rate, steps, lambda m: evaluate(m, val_x, val_y), fault)
        report_history(ctx, history, name, f"torch: {name.replace('_', ' ')}")
        models[name] = model
        metrics[f"{name}_accuracy"] = evaluate(model, test_x, test_y)[1]
    values = list(metrics.values())
    ctx.skip_metric("tf_data_accuracy", "tf.data is TensorFlow's input pipeline; the torch variant uses DataLoader")
    same_batches = [(images.numpy(), labels.numpy()) for images, labels in hand_batches()]
    metrics.update(
        accuracy_spread=max(values) - min(values), worst_accuracy=min(values),
        same_batches_weight_difference=reference_difference(
            [models["hand_loop"], models["generator_loader"]], initial, same_batches, learning_rate),
    )
    ctx.skip_metric("fit_generator_exists", "a Keras API; torch has no fit")
    return metrics
