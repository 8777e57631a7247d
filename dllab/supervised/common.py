"""Pieces every supervised scenario shares, free of any framework: the data choice, the
architecture's hand parameter count, in-run baselines, learning-curve PNGs and TensorBoard scalars.

A training history is a dict of per-epoch lists, Keras-style: `loss`, `accuracy`, `val_loss`,
`val_accuracy` (any subset).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dllab.data.digits import Digits, load_digits

# The seed's Conv-Pool-Conv-Pool-Dense CNN (question 17), adapted to 8x8 digits: 3x3 convolutions
# with "same" padding keep 8x8, each 2x2 max-pool halves it (8 -> 4 -> 2), so the dense layer
# sees 2 * 2 * 64 = 256 features. The same sizes are used by the torch and the Keras CNN.
CONV_FILTERS = (32, 64)
KERNEL = 3
DENSE_UNITS = 128


def load_images(seed: int, data: str = "digits", side_multiple: int = 1) -> Digits:
    """The bundled digits split (`data="digits"`), or your own MNIST-format file (`data=PATH`).
    `side_multiple`: image sides a network needs to divide by (the CNN's two 2x2 pools: 4), or
    a usage error (exit 2) naming the file."""
    if data == "digits":
        return load_digits(seed)
    from dllab.data.user_files import load_user_images
    from dllab.errors import UsageError

    digits = load_user_images(data, seed)
    sides = digits.train.images.shape[1:3]
    if any(side % side_multiple for side in sides):
        raise UsageError(f"--set data={data}: images of {sides[0]}x{sides[1]} pixels; this network "
                         f"needs sides divisible by {side_multiple}")
    return digits


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The labels in a seeded random order, no longer matching their inputs (a new array)."""
    return np.random.default_rng([seed, 11]).permutation(labels)


def fed_digits(digits: Digits, fault: str, seed: int) -> Digits:
    """The digits as the training pipeline feeds them to the network: unchanged (fault "none"),
    or with a negative control's data mistake. References (baselines, hand computations) keep
    using the digits as loaded."""
    if fault == "labels-shuffled":  # images and labels shuffled separately: labels no longer match
        train = replace(digits.train, labels=shuffled_labels(digits.train.labels, seed))
        return replace(digits, train=train)
    if fault == "columns-as-steps":  # (batch, features, time): the columns read as time steps
        return Digits(*(replace(split, images=np.ascontiguousarray(split.images.transpose(0, 2, 1)))
                        for split in (digits.train, digits.validation, digits.test)))
    return digits


def class_sorted_orders(labels: np.ndarray, epochs: int) -> list[np.ndarray]:
    """A negative control's mistake: the training set never shuffled, stored by class (all the
    0s, then all the 1s, ...), the same order every epoch."""
    return [np.argsort(labels, kind="stable") for _ in range(epochs)]


def class_count(digits: Digits) -> int:
    return int(max(digits.train.labels.max(), digits.validation.labels.max(), digits.test.labels.max()) + 1)


def cnn_parameter_count(height: int, width: int, classes: int, channels: int = 1) -> dict[str, int]:
    """The CNN's parameters counted by hand, layer by layer (weights + biases)."""
    if height % 4 or width % 4:
        raise ValueError(f"the CNN pools twice by 2: image size {height}x{width} must be divisible by 4")
    first, second = CONV_FILTERS
    counts = {
        "conv1": KERNEL * KERNEL * channels * first + first,
        "conv2": KERNEL * KERNEL * first * second + second,
        "dense": (height // 4) * (width // 4) * second * DENSE_UNITS + DENSE_UNITS,
        "output": DENSE_UNITS * classes + classes,
    }
    counts["total"] = sum(counts.values())
    return counts


def logistic_regression_accuracy(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Test accuracy of scikit-learn's logistic regression on the same data: a reference trained in
    the same run, which any network here should match or beat."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, random_state=seed)
    model.fit(train_x.reshape(len(train_x), -1), train_y)
    return float(model.score(test_x.reshape(len(test_x), -1), test_y))


def epoch_orders(seed: int, size: int, epochs: int, stream: int = 7) -> list[np.ndarray]:
    """One shuffled order of the training set per epoch, a function of (seed, epoch) only, so a
    run resumed at epoch k sees exactly the batches an uninterrupted run sees."""
    return [np.random.default_rng([seed, stream, epoch]).permutation(size) for epoch in range(epochs)]


def log_history(ctx, history: dict[str, list[float]], prefix: str, start_epoch: int = 0) -> None:
    """TensorBoard scalars: losses under `losses/<prefix>/...`, the rest under `charts/<prefix>/...`."""
    for name, values in history.items():
        group = "losses" if "loss" in name else "charts"
        for epoch, value in enumerate(values[start_epoch:], start=start_epoch):
            ctx.log_scalar(f"{group}/{prefix}/{name}", value, epoch + 1)


def plot_history(ctx, history: dict[str, list[float]], name: str, title: str = ""):
    """A learning-curve PNG in the run folder: losses on the left, accuracies on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, values in history.items():
        axes = loss_axes if "loss" in key else accuracy_axes
        axes.plot(range(1, len(values) + 1), values, label=key, marker="." if len(values) < 30 else None)
    for axes, label in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.suptitle(title or name)
    figure.tight_layout()
    return ctx.save_figure(figure, f"{name}.png")


def report_history(ctx, history: dict[str, list[float]], name: str, title: str = "") -> None:
    """Both artifacts of one training run: TensorBoard scalars and the learning-curve PNG."""
    log_history(ctx, history, name)
    plot_history(ctx, history, name, title)


def summarize_cells(metrics: dict[str, float], cells, digits: Digits, seed: int) -> dict[str, float]:
    """Add the RNN scenario's summary: the worst cell's accuracy against an in-run logistic
    regression, and the largest difference of any cell's logits from the hand recurrence."""
    baseline = logistic_regression_accuracy(digits.train.images, digits.train.labels,
                                            digits.test.images, digits.test.labels, seed)
    worst = min(metrics[f"{cell}_test_accuracy"] for cell in cells)
    metrics.update(worst_test_accuracy=worst, logistic_regression_accuracy=baseline,
                   worst_gap_to_logistic=worst - baseline,
                   max_layout_difference=max(metrics[f"{cell}_layout_difference"] for cell in cells))
    return metrics
