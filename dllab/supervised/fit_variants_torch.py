"""One model, three ways to feed a torch training loop (questions 23, 36, 44), on the bundled digits.

PyTorch has no `fit`: the loop is written by hand (forward, loss, `zero_grad`, `backward`, `step`).
The same MLP (64 pixels -> Linear 64 -> ReLU -> Linear 10), from the same initial weights, is fed:

1. index batches of tensors in a seeded order (the hand-written loop);
2. a `DataLoader` over a `TensorDataset` with `shuffle=True` and a seeded `torch.Generator`;
3. a `DataLoader` over an `IterableDataset` that wraps a Python generator yielding the hand loop's
   batches (the torch counterpart of Keras's `fit` on a generator).

Measured: each variant's test accuracy and their spread (the same band), and that the generator
loader, fed the hand loop's batches in the same order, ends with bit-identical weights.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from dllab.supervised.common import epoch_orders, load_images, report_history
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


def train(model: nn.Module, batches, learning_rate: float, steps_per_epoch: int, evaluate_epoch) -> dict:
    """The hand-written loop, over any iterable of (images, labels) batches; the epoch's history."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    total, correct, seen = 0.0, 0, 0
    for step, (images, labels) in enumerate(batches, start=1):
        model.train()
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
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


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, data: str) -> dict[str, float]:
    digits = load_images(ctx.seed, data)
    x, y = torch.from_numpy(digits.train.flat()), torch.from_numpy(digits.train.labels)
    val_x, val_y = torch.from_numpy(digits.validation.flat()), torch.from_numpy(digits.validation.labels)
    test_x, test_y = torch.from_numpy(digits.test.flat()), torch.from_numpy(digits.test.labels)
    steps = -(-len(y) // batch_size)
    orders = epoch_orders(ctx.seed, len(y), epochs)
    initial = build_mlp(x.shape[1], classes=int(y.max()) + 1)

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
        history = train(model, batches, learning_rate, steps, lambda m: evaluate(m, val_x, val_y))
        report_history(ctx, history, name, f"torch: {name.replace('_', ' ')}")
        models[name] = model
        metrics[f"{name}_accuracy"] = evaluate(model, test_x, test_y)[1]
    values = list(metrics.values())
    ctx.skip_metric("tf_data_accuracy", "tf.data is TensorFlow's input pipeline; the torch variant uses DataLoader")
    metrics.update(
        accuracy_spread=max(values) - min(values), worst_accuracy=min(values),
        same_batches_weight_difference=max(float((p - q).detach().abs().max()) for p, q in zip(
            models["generator_loader"].parameters(), models["hand_loop"].parameters())),
    )
    ctx.skip_metric("fit_generator_exists", "a Keras API; torch has no fit")
    return metrics
