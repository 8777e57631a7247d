"""The seed's Conv-Pool-Conv-Pool-Dense CNN (question 17) in PyTorch, on the bundled 8x8 digits.

Measured: test accuracy on the shared digits split, next to a logistic regression trained in the
same run on the same pixels (the reference a CNN should match or beat), and the parameter count
against a hand count. The network outputs logits; `cross_entropy` applies the softmax.
Resumable: `dllab run supervised/cnn --framework torch --resume RUN_FOLDER`.
"""

from __future__ import annotations

import torch
from torch import nn

from dllab.supervised.common import (CONV_FILTERS, DENSE_UNITS, KERNEL, class_count, cnn_parameter_count,
                                     fed_digits, load_images, logistic_regression_accuracy, report_history)
from dllab.supervised.torch_training import evaluate, fit, image_tensors


class CNN(nn.Module):
    """Conv(32, 3x3, same) - ReLU - MaxPool(2) - Conv(64) - ReLU - MaxPool(2) - Dense(128) - Dense(classes).

    `features` is the reusable base (transfer learning freezes it), `head` the classifier."""

    def __init__(self, height: int = 8, width: int = 8, classes: int = 10, channels: int = 1,
                 conv_bias: bool = True):
        super().__init__()
        if height % 4 or width % 4:
            raise ValueError(f"image size {height}x{width} must be divisible by 4 (two 2x2 poolings)")
        first, second = CONV_FILTERS
        self.features = nn.Sequential(
            nn.Conv2d(channels, first, KERNEL, padding="same", bias=conv_bias), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(first, second, KERNEL, padding="same", bias=conv_bias), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear((height // 4) * (width // 4) * second, DENSE_UNITS), nn.ReLU(),
        )
        self.head = nn.Linear(DENSE_UNITS, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(ctx, *, epochs: int, batch_size: int, learning_rate: float, data: str,
        fault: str = "none") -> dict[str, float]:
    digits = load_images(ctx.seed, data, side_multiple=4)
    height, width = digits.train.images.shape[1:]
    classes = class_count(digits)
    model = CNN(height, width, classes, conv_bias=fault != "conv-without-bias")  # a control's mistake
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history = fit(ctx, model, optimizer, fed_digits(digits, fault, ctx.seed), epochs=epochs,
                  batch_size=batch_size, name="cnn", resumable=True)
    report_history(ctx, history, "cnn", f"torch CNN on {data}")
    test_loss, test_accuracy = evaluate(model, *image_tensors(digits.test))
    baseline = logistic_regression_accuracy(digits.train.images, digits.train.labels,
                                            digits.test.images, digits.test.labels, ctx.seed)
    counted = parameter_count(model)
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "logistic_regression_accuracy": baseline,
        "advantage_over_logistic": test_accuracy - baseline,
        "parameters": counted,
        "parameter_count_error": counted - cnn_parameter_count(height, width, classes)["total"],
    }
