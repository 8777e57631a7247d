"""Transfer learning (questions 26, 35) in PyTorch: pretrain on digits 0-4, reuse for 5-9.

1. Pretrain the CNN on the digits 0-4 of the training split and save its `state_dict`.
2. For each of `seeds` draws of a few labelled images per class of the digits 5-9: load the saved
   base (`torch.load(weights_only=True)`), freeze it (`requires_grad_(False)`), attach a new
   5-way head and train only the head; train the same CNN from scratch on the very same images
   with the same number of steps.
3. Compare test accuracy on all test images of 5-9, per draw and on average.

On these 8x8 digits the comparison goes *against* transfer: the features the base learned for 0-4
separate 5-9 worse than a freshly initialised network trained on the same few images (negative
transfer). dllab measures and reports it; the scenario checks the mechanics (save, load, freeze,
new head) and that the transferred model learns far above chance.

torchvision (ImageNet-pretrained models) is not a dependency of dllab, and its weights would have
to be downloaded; the base here is pretrained by dllab itself on the other half of the digits.
"""

from __future__ import annotations

import numpy as np
import torch

from dllab.data.digits import Split, load_digits
from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import report_history
from dllab.supervised.torch_training import evaluate, fit, image_tensors, train_epoch


def split_classes(split: Split, classes: range) -> Split:
    """The images of the given classes, relabelled 0..len(classes)-1."""
    keep = np.isin(split.labels, list(classes))
    return Split(split.images[keep], split.labels[keep] - classes.start)


def few_shots(split: Split, shots: int, rng: np.random.Generator) -> Split:
    """`shots` images per class, drawn without replacement."""
    chosen = np.concatenate([rng.choice(np.flatnonzero(split.labels == c), shots, replace=False)
                             for c in np.unique(split.labels)])
    return Split(split.images[chosen], split.labels[chosen])


def train_few(model: CNN, parameters, samples: Split, steps: int, learning_rate: float, seed: int) -> CNN:
    """Full-batch Adam on the few samples for `steps` steps (only `parameters` are updated)."""
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    x, y = image_tensors(samples)
    for _ in range(steps):
        train_epoch(model, optimizer, x, y, np.arange(len(y)), len(y))
    return model


def run(ctx, *, pretrain_epochs: int, batch_size: int, learning_rate: float, shots: int, finetune_steps: int,
        finetune_learning_rate: float, seeds: int) -> dict[str, float]:
    digits = load_digits(ctx.seed)
    source = type(digits)(*(split_classes(s, range(0, 5)) for s in (digits.train, digits.validation, digits.test)))
    target_train, target_test = split_classes(digits.train, range(5, 10)), split_classes(digits.test, range(5, 10))

    pretrained = CNN(classes=5)
    optimizer = torch.optim.Adam(pretrained.parameters(), lr=learning_rate)
    history = fit(ctx, pretrained, optimizer, source, epochs=pretrain_epochs, batch_size=batch_size, name="pretrain")
    report_history(ctx, history, "pretrain", "torch CNN pretrained on digits 0-4")
    path = ctx.artifact("pretrained_0-4.pt")
    torch.save(pretrained.state_dict(), path)
    metrics = {"pretrain_test_accuracy": evaluate(pretrained, *image_tensors(source.test))[1]}

    test_x, test_y = image_tensors(target_test)
    for draw in range(seeds):
        samples = few_shots(target_train, shots, ctx.rng(100 + draw))
        torch.manual_seed(ctx.seed * 1000 + draw)
        transfer = CNN(classes=5)  # new random head; the base is replaced by the saved one
        saved = torch.load(path, weights_only=True)
        transfer.features.load_state_dict({k[9:]: v for k, v in saved.items() if k.startswith("features.")})
        transfer.features.requires_grad_(False)
        base_before = [p.clone() for p in transfer.features.parameters()]
        train_few(transfer, transfer.head.parameters(), samples, finetune_steps, finetune_learning_rate, ctx.seed)
        base_change = max(float((p - q).abs().max()) for p, q in zip(transfer.features.parameters(), base_before))

        torch.manual_seed(ctx.seed * 1000 + draw)
        scratch = CNN(classes=5)
        train_few(scratch, scratch.parameters(), samples, finetune_steps, finetune_learning_rate, ctx.seed)
        metrics[f"transfer_accuracy_{draw}"] = evaluate(transfer, test_x, test_y)[1]
        metrics[f"scratch_accuracy_{draw}"] = evaluate(scratch, test_x, test_y)[1]
        metrics[f"frozen_base_change_{draw}"] = base_change
        ctx.log_scalar("charts/transfer_accuracy", metrics[f"transfer_accuracy_{draw}"], draw)
        ctx.log_scalar("charts/scratch_accuracy", metrics[f"scratch_accuracy_{draw}"], draw)
    for name in ("applications_downloads", "applications_frozen_trainable_weights"):
        ctx.skip_metric(name, "keras.applications is Keras only (torchvision is not a dllab dependency)")
    return summarize(metrics, seeds, trainable=sum(p.numel() for p in transfer.parameters() if p.requires_grad))


def summarize(metrics: dict[str, float], seeds: int, trainable: int) -> dict[str, float]:
    """Means over the draws and the worst draw's advantage of transfer over from-scratch."""
    transfer = [metrics[f"transfer_accuracy_{d}"] for d in range(seeds)]
    scratch = [metrics[f"scratch_accuracy_{d}"] for d in range(seeds)]
    metrics.update(
        transfer_accuracy_mean=float(np.mean(transfer)), scratch_accuracy_mean=float(np.mean(scratch)),
        worst_advantage=float(min(t - s for t, s in zip(transfer, scratch))),
        mean_advantage=float(np.mean(transfer) - np.mean(scratch)),
        advantage_over_chance=float(np.mean(transfer)) - 1 / 5,
        max_frozen_base_change=max(metrics[f"frozen_base_change_{d}"] for d in range(seeds)),
        finetuned_trainable_parameters=trainable,
    )
    return metrics
