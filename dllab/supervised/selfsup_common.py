"""Self-supervised pretraining on the unlabeled pool, then few labels: the parts shared by
`selfsup_torch` and `selfsup_keras`, free of any framework.

The unlabeled pool is every image of the shared training split, its labels unused. Two
pretraining objectives train the encoder of the CNN (its base, up to the 128-unit layer):

- `contrastive` (SimCLR's NT-Xent): two random distortions of each image (a small rotation,
  scaling and shift, and an elastic distortion, drawn here in numpy) must map to nearby points of
  a projection of the encoder's output, and away from the other images of the batch;
- `denoising`: the encoder, followed by a linear decoder, rebuilds each image from a copy with a
  random fraction of its pixels set to 0 (a masked / denoising autoencoder).

The views and masks come from a seeded numpy generator, so both frameworks pretrain on the same
inputs. Which objective serves is chosen on the validation split (a frozen encoder with a linear
head on one labelled image per class); the test split only reports.
"""

from __future__ import annotations

import numpy as np

OBJECTIVES = ("contrastive", "denoising")
CLASSES = 10


def unlabeled_pool(
    images: np.ndarray, shuffled_pixels: bool, rng: np.random.Generator
) -> np.ndarray:
    """The training images without labels; with `shuffled_pixels` (a control's mistake) every image
    has its 64 pixels permuted at random, which leaves nothing spatial to learn."""
    if not shuffled_pixels:
        return images
    flat = images.reshape(len(images), -1)
    order = np.argsort(rng.random(flat.shape), axis=1)
    return np.take_along_axis(flat, order, axis=1).reshape(images.shape)


def distort(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    elastic: float,
    rotate: float = 12.0,
    scale: float = 0.1,
    shift: float = 1.0,
) -> np.ndarray:
    """A random distortion per image: rotation (degrees), scaling, shift (pixels) and an elastic
    displacement field (Gaussian-smoothed noise, `elastic` pixels), bilinear resampling."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    count, height, width = images.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, count))[:, None, None]
    zoom = (1 + rng.uniform(-scale, scale, count))[:, None, None]
    offset = rng.uniform(-shift, shift, (2, count))[:, :, None, None]
    rows, cols = np.meshgrid(
        np.arange(height) - (height - 1) / 2, np.arange(width) - (width - 1) / 2, indexing="ij"
    )
    source_rows = (
        (np.cos(angle) * rows - np.sin(angle) * cols) / zoom + (height - 1) / 2 + offset[0]
    )
    source_cols = (np.sin(angle) * rows + np.cos(angle) * cols) / zoom + (width - 1) / 2 + offset[1]
    if elastic > 0:
        field = gaussian_filter(rng.normal(0, 1, (2, count, height, width)), sigma=(0, 0, 1.5, 1.5))
        source_rows, source_cols = (
            source_rows + elastic * field[0],
            source_cols + elastic * field[1],
        )
    index = np.broadcast_to(np.arange(count)[:, None, None], source_rows.shape)
    return map_coordinates(
        images, [index, source_rows, source_cols], order=1, mode="constant", cval=0.0
    ).astype(np.float32)


def contrastive_batches(
    pool: np.ndarray, rng: np.random.Generator, *, epochs: int, batch_size: int, elastic: float
) -> np.ndarray:
    """(steps, 2 * batch_size, 8, 8): per epoch a shuffled pass over the pool in full batches (the
    remainder dropped), each batch its first views followed by its second views."""
    steps_per_epoch = len(pool) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"selfsup_batch_size {batch_size} exceeds the pool of {len(pool)} images")
    batches = []
    for _ in range(epochs):
        chosen = pool[rng.permutation(len(pool))[: steps_per_epoch * batch_size]]
        first, second = distort(chosen, rng, elastic=elastic), distort(chosen, rng, elastic=elastic)
        shape = (steps_per_epoch, batch_size) + pool.shape[1:]
        batches.append(np.concatenate([first.reshape(shape), second.reshape(shape)], axis=1))
    return np.concatenate(batches)


def denoising_batches(
    pool: np.ndarray, rng: np.random.Generator, *, epochs: int, batch_size: int, mask: float
) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted, clean) images for `epochs` shuffled passes: in each corrupted copy a random
    `mask` fraction of the pixels is set to 0; batches are consecutive runs of `batch_size`."""
    orders = np.concatenate([rng.permutation(len(pool)) for _ in range(epochs)])
    clean = pool[orders]
    return (clean * (rng.random(clean.shape) >= mask)).astype(np.float32), clean


def nt_xent_reference(projections: np.ndarray, temperature: float) -> float:
    """SimCLR's NT-Xent loss in float64 numpy, the reference the frameworks' losses are tested
    against: rows i and i + n of the (2n, d) projections are the two views of one image."""
    z = projections / np.linalg.norm(projections, axis=1, keepdims=True)
    similarity = z @ z.T / temperature
    np.fill_diagonal(similarity, -np.inf)
    half = len(z) // 2
    partner = np.concatenate([np.arange(half, 2 * half), np.arange(half)])
    top = similarity.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(similarity - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_sum - similarity[np.arange(len(z)), partner]))


def bootstrap_interval(
    values, rng: np.random.Generator, resamples: int = 4000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (draws resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def difference_metrics(
    prefix: str, differences: list[float], rng: np.random.Generator
) -> dict[str, float]:
    """`{prefix}`, `{prefix}_ci_low`, `{prefix}_ci_high`: the mean difference over draws and its
    95% bootstrap interval."""
    low, high = bootstrap_interval(differences, rng)
    return {prefix: float(np.mean(differences)), f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


SELFSUP_ARMS = ("scratch", "frozen", "fine_tuned")


def selfsup_arms(fine_tuning: bool) -> tuple[str, ...]:
    """The arms of the self-supervised comparison: scratch and frozen, with `fine_tuning` also
    the two-stage fine-tuning."""
    return SELFSUP_ARMS if fine_tuning else SELFSUP_ARMS[:2]


def selfsup_settings(
    epochs: int,
    batch_size: int,
    learning_rate: float,
    *,
    temperature: float,
    elastic: float,
    mask: float,
) -> dict[str, dict]:
    """Each objective's pretraining arguments."""
    common = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    return {
        "contrastive": dict(common, temperature=temperature, elastic=elastic),
        "denoising": dict(common, mask=mask),
    }


SELFSUP_STREAM, SELECTION_STREAM = 50_000, 90_000  # few-shot draws apart from the supervised arm's


def choose_objective(ctx, digits, frozen_arms: dict, *, learning_rates: list[float], draws: int):
    """The objective whose frozen encoder, with a linear head on one labelled image per class,
    has the best mean validation accuracy (its own draws; the test accuracies are not looked at)."""
    from dllab.supervised.transfer_common import few_shots

    scores = {}
    for objective, train_arms in frozen_arms.items():
        per_rate = {lr: [] for lr in learning_rates}
        for draw in range(draws):
            samples = few_shots(digits.train, 1, ctx.rng(SELECTION_STREAM + draw))
            for lr in learning_rates:
                per_rate[lr].append(train_arms(samples, lr, ctx.seed * 1000 + draw)["frozen"][0])
        scores[objective] = max(float(np.mean(v)) for v in per_rate.values())
    chosen = max(frozen_arms, key=lambda objective: scores[objective])
    return chosen, {f"selection_{o}_validation_accuracy": s for o, s in scores.items()}


def compare_selfsup(
    ctx, digits, train_arms, *, shots: list[int], learning_rates: list[float], draws: int
) -> dict[str, float]:
    """Scratch, the frozen pretrained encoder with a new head, and the two-stage fine-tuning on the
    same few labelled images (10 classes); `selfsup_minus_scratch_shots{K}` is frozen - scratch per
    draw, with its 95% bootstrap interval over the draws."""
    from dllab.supervised.transfer_common import draw_and_train

    metrics: dict[str, float] = {}
    arms = train_arms.arms
    for count in shots:
        tests, chosen, _ = draw_and_train(
            ctx, digits.train, train_arms, arms, count, learning_rates, draws, stream=SELFSUP_STREAM
        )
        for index, arm in enumerate(arms):
            name = f"selfsup_{arm}_accuracy_shots{count}"
            metrics.update(difference_metrics(name, tests[arm], ctx.rng(8000 + 10 * count + index)))
            metrics[f"selfsup_{arm}_learning_rate_shots{count}"] = chosen[arm]
            ctx.log_scalar(f"charts/selfsup_{arm}_accuracy", metrics[name], count)
        for arm, prefix in (("frozen", "selfsup"), ("fine_tuned", "selfsup_fine_tuned")):
            if arm not in arms:
                continue
            differences = [t - s for t, s in zip(tests[arm], tests["scratch"])]
            metrics.update(
                difference_metrics(
                    f"{prefix}_minus_scratch_shots{count}",
                    differences,
                    ctx.rng(9000 + count + 100 * (arm == "fine_tuned")),
                )
            )
        ctx.record(**metrics)
    return metrics


def plot_labels(ctx, metrics: dict[str, float], shots: list[int]):
    """accuracy_vs_labels.png: left, test accuracy (10 classes) of scratch and the self-supervised
    arms against labelled images per class; right, pretrained - scratch for both kinds of
    pretraining. Error bars: 95% bootstrap intervals over the draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(axes, prefix, label, offset):
        means = np.array([metrics[f"{prefix}_shots{c}"] for c in shots])
        low = means - [metrics[f"{prefix}_shots{c}_ci_low"] for c in shots]
        high = np.array([metrics[f"{prefix}_shots{c}_ci_high"] for c in shots]) - means
        axes.errorbar(
            np.array(shots) * offset, means, yerr=[low, high], marker="o", capsize=3, label=label
        )

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, label, offset in (
        ("scratch", "from scratch", 0.96),
        ("frozen", "self-supervised, frozen", 1.0),
        ("fine_tuned", "self-supervised, fine-tuned", 1.04),
    ):
        if f"selfsup_{arm}_accuracy_shots{shots[0]}" in metrics:
            bars(left, f"selfsup_{arm}_accuracy", label, offset)
    left.axhline(1 / CLASSES, color="grey", linewidth=0.8, label="chance")
    left.set_ylabel("test accuracy, 10 digits")
    bars(right, "selfsup_minus_scratch", "self-supervised on the unlabeled pool (frozen)", 0.98)
    bars(right, "supervised_minus_scratch", "supervised on digits 0-4 (frozen; 5-9 task)", 1.02)
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_ylabel("pretrained - scratch, test accuracy")
    library = ctx.framework if ctx.backend == ctx.framework else f"{ctx.framework} ({ctx.backend})"
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xticks(shots, [str(c) for c in shots])
        axes.set_xlabel("labelled images per class")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(f"{library}: pretraining against training from scratch on the same few labels")
    figure.tight_layout()
    return ctx.save_figure(figure, "accuracy_vs_labels.png")
