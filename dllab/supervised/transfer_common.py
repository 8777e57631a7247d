"""The transfer-learning comparison shared by `transfer_torch` and `transfer_keras`, free of any
framework: the data (source digits 0-4, target digits 5-9), the few-shot draws, the fair protocol,
the linear probes and the accuracy-against-shots figure.

The protocol compares, on the very same few labelled target images, four ways to train the CNN:

- `scratch`: every weight from a fresh random initialisation;
- `frozen`: the base pretrained on 0-4 (up to the 128-unit "features" layer), frozen, with a new
  5-way head, the only part that trains;
- `fine_tuned`: the two-stage recipe of keras-io's transfer-learning guide: the head first on the
  frozen base (half the steps), then the whole network unfrozen at a tenth of the learning rate;
- `warm_start`: every weight trains from the start, the base initialised with the pretrained one.

Every arm gets the same optimizer (full-batch Adam) and the same number of steps; each arm's
learning rate is chosen from the same candidates by its accuracy on the validation images of 5-9,
and only the test images of 5-9 (never seen in training or selection) give the reported figures.
Linear probes (standardised logistic regression on the few images) compare representations
directly: raw pixels, the frozen convolutional features, the frozen 128-unit features.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dllab.data.digits import Digits, Split, load_digits

ARMS = ("scratch", "frozen", "fine_tuned", "warm_start")
PROBES = ("pixels", "conv", "features")
PROBE_LABELS = {
    "pixels": "raw pixels",
    "conv": "frozen conv features",
    "features": "frozen 128-unit features",
}
SOURCE, TARGET = range(0, 5), range(5, 10)
CHANCE = 1 / len(TARGET)


def split_classes(split: Split, classes: range) -> Split:
    """The images of the given classes, relabelled 0..len(classes)-1."""
    keep = np.isin(split.labels, list(classes))
    return Split(split.images[keep], split.labels[keep] - classes.start)


def source_and_target(seed: int) -> tuple[Digits, Digits]:
    """The shared digits split cut in two tasks: 0-4 (source) and 5-9 (target), the same images
    everywhere."""
    digits = load_digits(seed)
    parts = (digits.train, digits.validation, digits.test)
    return Digits(*(split_classes(s, SOURCE) for s in parts)), Digits(
        *(split_classes(s, TARGET) for s in parts)
    )


def pretraining_source(seed: int, source: Digits, fault: str, rng: np.random.Generator) -> Digits:
    """The source task, or a control's mistake: `source_includes_target` pretrains on all ten
    digits (the target classes leak into the source); `labels_off_by_one` pretrains on labels
    shifted to the next class (the source's test labels stay right)."""
    if fault == "source_includes_target":
        return load_digits(seed)
    if fault == "labels_off_by_one":
        shifted = (source.train.labels + 1) % len(SOURCE)
        return Digits(Split(source.train.images, shifted), source.validation, source.test)
    return source


def supervised_arms(fine_tuning: bool) -> tuple[str, ...]:
    """The arms trained on 5-9: scratch and frozen, with `fine_tuning` also the other two."""
    return ARMS if fine_tuning else ARMS[:2]


def labels_off_by_one(train_arms: "TrainArms", classes: int) -> "TrainArms":
    """A control's mistake: every few-shot label replaced by the next class (ids off by one)."""

    def shifted(samples: Split, learning_rate: float, init_seed: int):
        return train_arms(
            Split(samples.images, (samples.labels + 1) % classes), learning_rate, init_seed
        )

    return shifted


def few_shots(split: Split, shots: int, rng: np.random.Generator) -> Split:
    """`shots` images per class, drawn without replacement."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1 image per class, got {shots}")
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(split.labels == c), shots, replace=False)
            for c in np.unique(split.labels)
        ]
    )
    return Split(split.images[chosen], split.labels[chosen])


def check_protocol(shots: list[int], learning_rates: list[float], steps: int, draws: int) -> None:
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must list positive numbers of images per class, got {shots}")
    if not learning_rates or min(learning_rates) <= 0:
        raise ValueError(f"learning_rates must list positive learning rates, got {learning_rates}")
    if steps < 2 or draws < 1:
        raise ValueError(
            f"steps ({steps}) must be at least 2 (two stages) and draws ({draws}) at least 1"
        )


def probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Test accuracy of a standardised logistic regression fitted on (train_x, train_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    probe.fit(train_x.reshape(len(train_x), -1), train_y)
    return float(probe.score(test_x.reshape(len(test_x), -1), test_y))


# train_arms(samples, learning_rate, init_seed) -> {arm: (validation_accuracy, test_accuracy)}
TrainArms = Callable[[Split, float, int], dict[str, tuple[float, float]]]
# features(images) -> {"conv": (N, ...), "features": (N, 128)} from the frozen pretrained base
Features = Callable[[np.ndarray], dict[str, np.ndarray]]


def draw_and_train(
    ctx,
    train: Split,
    train_arms: TrainArms,
    arms: tuple,
    count: int,
    learning_rates: list[float],
    draws: int,
    stream: int,
) -> tuple[dict, dict, list]:
    """`draws` draws of `count` images per class from `train`, every arm trained on each with every
    learning rate; per arm, the test accuracies (one per draw) at the learning rate with the best
    mean validation accuracy (the first on ties), and that learning rate. Also the draws."""
    runs = {arm: {lr: [] for lr in learning_rates} for arm in arms}
    drawn = []
    for draw in ctx.progress(range(draws), total=draws, desc=f"{count} shots"):
        samples = few_shots(train, count, ctx.rng(stream + 1000 * count + draw))
        drawn.append(samples)
        for lr in learning_rates:
            for arm, result in train_arms(samples, lr, ctx.seed * 1000 + draw).items():
                runs[arm][lr].append(result)
    tests, chosen = {}, {}
    for arm in arms:
        chosen[arm] = max(learning_rates, key=lambda lr: np.mean([v for v, _ in runs[arm][lr]]))
        tests[arm] = [t for _, t in runs[arm][chosen[arm]]]
    return tests, chosen, drawn


def probe_accuracies(features: Features, drawn: list, target: Digits) -> dict[str, float]:
    """Mean test accuracy over the draws of a logistic probe on each representation."""
    test_features = {"pixels": target.test.images, **features(target.test.images)}
    accuracies = {name: [] for name in PROBES}
    for samples in drawn:
        train_features = {"pixels": samples.images, **features(samples.images)}
        for name in PROBES:
            accuracies[name].append(probe_accuracy(train_features[name], samples.labels,
                                                   test_features[name], target.test.labels))
    return {name: float(np.mean(values)) for name, values in accuracies.items()}


def compare(ctx, target: Digits, train_arms: TrainArms, features: Features, *, shots: list[int],
            learning_rates: list[float], draws: int, arms: tuple = ARMS) -> dict[str, float]:
    """Run the arms on `draws` draws of each number of shots; learning rates chosen on validation.
    `supervised_minus_scratch_shots{K}` (with its bootstrap interval) is frozen - scratch per
    draw."""
    from dllab.supervised.selfsup_common import difference_metrics

    metrics: dict[str, float] = {}
    advantages: dict[str, list[float]] = {arm: [] for arm in arms[1:]}
    for arm in ARMS[len(arms):]:
        ctx.skip_metric(f"{arm}_advantage_mean", "arm not trained in this profile (fine_tuning)")
    for count in shots:
        tests, chosen, drawn = draw_and_train(ctx, target.train, train_arms, arms, count,
                                              learning_rates, draws, stream=0)
        for arm in arms:
            metrics[f"{arm}_accuracy_{count}shot"] = float(np.mean(tests[arm]))
            metrics[f"{arm}_learning_rate_{count}shot"] = chosen[arm]
            ctx.log_scalar(f"charts/{arm}_accuracy", metrics[f"{arm}_accuracy_{count}shot"], count)
        for arm in advantages:
            advantages[arm] += [t - s for t, s in zip(tests[arm], tests["scratch"])]
        differences = [t - s for t, s in zip(tests["frozen"], tests["scratch"])]
        metrics.update(difference_metrics(f"supervised_minus_scratch_shots{count}", differences,
                                          ctx.rng(7000 + count)))
        for name, value in probe_accuracies(features, drawn, target).items():
            metrics[f"probe_{name}_accuracy_{count}shot"] = value
        ctx.record(**metrics)
    for arm, values in advantages.items():
        metrics.update({f"{arm}_advantage_min": min(values), f"{arm}_advantage_max": max(values),
                        f"{arm}_advantage_mean": float(np.mean(values))})
    for arm in arms:
        accuracy = np.mean([metrics[f"{arm}_accuracy_{c}shot"] for c in shots])
        metrics[f"{arm}_over_chance"] = float(accuracy) - CHANCE
    metrics["probe_feature_collapse"] = float(np.mean(
        [metrics[f"probe_pixels_accuracy_{c}shot"] - metrics[f"probe_features_accuracy_{c}shot"]
         for c in shots]))
    if len(shots) > 1:  # a curve against shots needs two numbers of shots
        plot_shots(ctx, metrics, shots, arms)
    return metrics


def plot_shots(ctx, metrics: dict[str, float], shots: list[int], arms: tuple = ARMS):
    """accuracy_vs_shots.png: test accuracy on 5-9 against labelled images per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for arm in arms:
        axes.plot(shots, [metrics[f"{arm}_accuracy_{c}shot"] for c in shots], marker="o", label=arm)
    for name in PROBES:
        axes.plot(
            shots,
            [metrics[f"probe_{name}_accuracy_{c}shot"] for c in shots],
            linestyle="--",
            marker=".",
            alpha=0.7,
            label=f"logistic probe on {PROBE_LABELS[name]}",
        )
    axes.axhline(CHANCE, color="grey", linewidth=0.8, label="chance")
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(c) for c in shots])
    axes.set_xlabel("labelled images per class of 5-9")
    axes.set_ylabel("test accuracy on 5-9")
    library = ctx.framework if ctx.backend == ctx.framework else f"{ctx.framework} ({ctx.backend})"
    axes.set_title(f"{library}: pretrained on 0-4 vs from scratch, same few images")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return ctx.save_figure(figure, "accuracy_vs_shots.png")
