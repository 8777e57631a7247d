"""PyTorch's `Dataset` and `DataLoader` (seed question 22), checked by measurement.

A `Dataset` answers `len()` and `dataset[i]`; a `DataLoader` draws indices from a sampler, calls
`dataset[i]` (in worker processes when `num_workers > 0`), and collates samples into batches.
Measured here on the bundled digits, with a random augmentation (noise and a one-pixel shift):

- an epoch visits every index exactly once, and a new epoch reshuffles;
- the shuffle order comes from the `generator` passed to the loader: the same seed gives the same
  order, another seed another order;
- with the documented recipe for workers (`generator=` plus a `worker_init_fn` seeding numpy from
  `torch.initial_seed()`), a run with 2 workers is repeatable, yet its random augmentation
  differs from a 0-worker run, because each worker draws from its own random stream;
- drawing each sample's randomness from a generator keyed by (seed, epoch, index) makes the
  batches of 2 workers identical, bit for bit, to those of 0 workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class AugmentedDigits(Dataset):
    """Digit images (1, 8, 8) with random noise and a random one-pixel horizontal shift.

    `randomness="per_sample"` keys the augmentation on (seed, epoch, index), so it is the same in
    whichever process computes it; `randomness="global"` uses the process's own torch and numpy
    random streams (the common way, which depends on how work is split among workers)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, seed: int, noise: float,
                 randomness: str = "per_sample"):
        if randomness not in ("per_sample", "global"):
            raise ValueError(f"randomness must be 'per_sample' or 'global', got {randomness!r}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.seed, self.noise, self.randomness, self.epoch = seed, noise, randomness, 0

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch (workers copy the dataset when an epoch starts)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.randomness == "per_sample":
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 1_000_003 + int(index))
            shift = int(torch.randint(-1, 2, (1,), generator=generator))
            noise = torch.randn(self.images[index].shape, generator=generator)
        else:
            shift = int(np.random.randint(-1, 2))
            noise = torch.randn(self.images[index].shape)
        image = torch.roll(self.images[index], shifts=shift, dims=2) + self.noise * noise
        return image, self.labels[index], index


def seed_worker(worker_id: int) -> None:
    """PyTorch's recipe: give numpy and `random` in each worker the seed torch gave that worker."""
    import random

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(dataset: Dataset, *, batch_size: int, seed: int, workers: int, fault: str = "none") -> DataLoader:
    """A shuffling loader whose order, and the workers' seeds, come from one seeded generator.
    (`fault` injects a negative control's mistake, in one visible branch each.)"""
    generator = torch.Generator().manual_seed(0 if fault == "constant-loader-seed" else seed)
    if fault == "shuffle-without-seed":  # the mistake: the order comes from torch's global stream
        generator = None
    sampler = None
    if fault == "sample-with-replacement":  # the mistake: draws with replacement, not a permutation
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      generator=generator, num_workers=workers,
                      worker_init_fn=seed_worker if workers else None, persistent_workers=False)


def read_epochs(loader: DataLoader, epochs: int,
                fault: str = "none") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every epoch's (images, labels, indices), each concatenated over its batches."""
    results = []
    initial_seed = loader.generator.initial_seed() if loader.generator is not None else None
    for epoch in range(epochs):
        if fault == "loader-rebuilt-each-epoch" and initial_seed is not None:  # the mistake:
            loader.generator.manual_seed(initial_seed)  # a fresh seeded loader every epoch
        loader.dataset.set_epoch(epoch)
        batches = list(loader)
        results.append(tuple(torch.cat([batch[part] for batch in batches]) for part in range(3)))
    return results


def max_difference(first, second) -> float:
    """Largest absolute difference between two runs' images (inf if their order differs)."""
    worst = 0.0
    for (images_a, labels_a, index_a), (images_b, labels_b, index_b) in zip(first, second):
        if not torch.equal(index_a, index_b) or not torch.equal(labels_a, labels_b):
            return float("inf")
        worst = max(worst, float((images_a - images_b).abs().max()))
    return worst


def same_positions(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first == second).float().mean())


def measure_order(read, size: int, seed: int) -> dict[str, float]:
    """Each epoch is a permutation; the next epoch reshuffles; the order is a function of the
    loader's generator seed."""
    main, same_seed, other_seed = read("per_sample", seed, 0), read("per_sample", seed, 0), read("per_sample", seed + 1, 0)
    orders = [indices for _, _, indices in main]
    permutation = all(torch.equal(torch.sort(order).values, torch.arange(size)) for order in orders)
    return {
        "epoch_is_permutation": float(permutation),
        "same_seed_max_abs_diff": max_difference(main, same_seed),
        "other_seed_same_position_fraction": same_positions(orders[0], other_seed[0][2]),
        "next_epoch_same_position_fraction": same_positions(orders[0], orders[1]),
    }, main


def measure_workers(read, main, seed: int, workers: int) -> dict[str, float]:
    """Randomness keyed on (seed, epoch, index): 2 workers give the 0-worker batches bit for bit."""
    return {"workers_vs_main_max_abs_diff": max_difference(main, read("per_sample", seed, workers))}


def measure_global_randomness(read, seed: int, workers: int, randomness: str) -> dict[str, float]:
    """The process's own random streams with the documented worker recipe: repeatable from run to
    run, the same order, but other augmentations than without workers."""
    global_main = read(randomness, seed, 0)
    global_workers, global_workers_again = read(randomness, seed, workers), read(randomness, seed, workers)
    return {
        "global_rng_workers_repeat_max_abs_diff": max_difference(global_workers, global_workers_again),
        "global_rng_workers_vs_main_max_abs_diff": max_difference(global_main, global_workers),
        "global_rng_same_order": float(all(torch.equal(a[2], b[2]) for a, b in zip(global_main, global_workers))),
    }


def run(ctx, *, batch_size: int, epochs: int, workers: int, noise: float, fault: str) -> dict[str, float]:
    from dllab.data.digits import load_digits

    train = load_digits(ctx.seed).train

    def read(randomness: str, seed: int, worker_count: int):
        dataset = AugmentedDigits(train.images, train.labels, seed=ctx.seed, noise=noise, randomness=randomness)
        loader = make_loader(dataset, batch_size=batch_size, seed=seed, workers=worker_count, fault=fault)
        return read_epochs(loader, epochs, fault)

    size = len(train)
    order, main = measure_order(read, size, ctx.seed)
    # the mistake of control per-sample-everywhere: the "global" loaders keyed on the sample too
    randomness = "per_sample" if fault == "per-sample-everywhere" else "global"
    return {
        "dataset_size": size,
        "batches_per_epoch": -(-size // batch_size),
        **order,
        **measure_workers(read, main, ctx.seed, workers),
        **measure_global_randomness(read, ctx.seed, workers, randomness),
    }
