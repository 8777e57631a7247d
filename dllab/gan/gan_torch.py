"""GANs for the 8x8 digits in PyTorch: an MLP GAN and a DCGAN, the standard recipe.

The recipe (Radford et al., 2016, "DCGAN"): Adam with learning rate 2e-4 and beta1 0.5, weights
drawn from N(0, 0.02), BatchNorm in the generator and in the discriminator's inner layers,
LeakyReLU(0.2) in the discriminator, tanh output on images scaled to [-1, 1]. Losses: the
discriminator's binary cross-entropy on real (label 1, or `real_label` for one-sided label
smoothing) and fake (label 0) images; the generator's non-saturating loss, -log D(G(z)), i.e. it
learns to make the discriminator call its images *real*.

`gan_keras.py` builds the same networks with the same names; `evaluation.py` judges both alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dllab.data.digits import load_digits
from dllab.gan.evaluation import Evaluator
from dllab.gan.faults import judged_digits, seed_noise_images

ARCHITECTURES = ("mlp", "dcgan")


def build_generator(architecture: str, latent_dim: int) -> nn.Module:
    """Noise (N, latent_dim) -> images (N, 1, 8, 8) in [-1, 1]."""
    if architecture == "mlp":
        return nn.Sequential(
            nn.Linear(latent_dim, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
            nn.Linear(256, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    if architecture == "dcgan":  # 2x2 -> 4x4 -> 8x8 by strided transposed convolutions
        return nn.Sequential(
            nn.Linear(latent_dim, 64 * 2 * 2, bias=False), nn.BatchNorm1d(64 * 2 * 2), nn.ReLU(),
            nn.Unflatten(1, (64, 2, 2)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), nn.Tanh())
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def build_discriminator(architecture: str) -> nn.Module:
    """Images (N, 1, 8, 8) -> one logit each (real > 0 > fake)."""
    if architecture == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 128), nn.LeakyReLU(0.2),
            nn.Linear(128, 1))
    if architecture == "dcgan":  # 8x8 -> 4x4 -> 2x2 by strided convolutions
        return nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, 64, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(64 * 2 * 2, 1))
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: weights N(0, 0.02); BatchNorm scale N(1, 0.02); biases 0."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def train_step(generator, discriminator, g_optimizer, d_optimizer, real: torch.Tensor, latent_dim: int,
               real_label: float = 1.0, combined_optimizer=None, generator_target: float = 1.0) -> tuple[float, float]:
    """One discriminator step, then one generator step; returns (d_loss, g_loss). Negative
    controls: `combined_optimizer` replaces the generator step by the seed's; `generator_target`
    0 trains the generator towards the fake label."""
    batch = real.shape[0]
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    fake = generator(torch.randn(batch, latent_dim)).detach()  # D step: G is not updated
    d_loss = (F.binary_cross_entropy_with_logits(discriminator(real), torch.full((batch, 1), real_label))
              + F.binary_cross_entropy_with_logits(discriminator(fake), zeros))
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()

    if combined_optimizer is not None:
        return d_loss.item(), seed_combined_step(generator, discriminator, combined_optimizer, real, latent_dim)
    fake = generator(torch.randn(batch, latent_dim))  # G step: make D call the fakes real
    target = ones if generator_target == 1.0 else torch.full((batch, 1), generator_target)
    g_loss = F.binary_cross_entropy_with_logits(discriminator(fake), target)
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    return d_loss.item(), g_loss.item()


def seed_combined_step(generator, discriminator, combined_optimizer, real: torch.Tensor, latent_dim: int) -> float:
    """The seed's generator step, a negative control: `combined` = Model([noise, real],
    [D(G(noise)), D(real)]) fit to ones by its own Adam over every weight, the discriminator's
    included (never frozen), so it also learns to call generated images real."""
    batch = real.shape[0]
    ones = torch.ones(batch, 1)
    loss = (F.binary_cross_entropy_with_logits(discriminator(generator(torch.randn(batch, latent_dim))), ones)
            + F.binary_cross_entropy_with_logits(discriminator(real), ones))
    combined_optimizer.zero_grad()
    loss.backward()
    combined_optimizer.step()
    return loss.item()


def real_images(train: torch.Tensor, order: torch.Tensor, start: int, batch_size: int, fault: str,
                seed: int, epoch: int) -> torch.Tensor:
    """The batch of "real" images: training digits, or (the seed's `real_imgs`, a negative
    control) Gaussian noise N(0, 1) of the same shape, drawn per epoch from numpy as in Keras."""
    if fault == "seed-noise-as-real":
        return torch.from_numpy(seed_noise_images(train.shape, seed, epoch)[order[start:start + batch_size]])
    return train[order[start:start + batch_size]]


def sampler(generator: nn.Module):
    """numpy noise -> numpy images in [-1, 1], with BatchNorm's running statistics (eval mode)."""
    def generate(noise: np.ndarray) -> np.ndarray:
        generator.eval()
        with torch.no_grad():
            images = generator(torch.from_numpy(noise)).numpy()
        generator.train()
        return images[:, 0]
    return generate


def _arrays(prefix: str, state: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}/{key}": value.detach().cpu().numpy() for key, value in state.items()}


def _tensors(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key[len(prefix) + 1:]: torch.from_numpy(value.copy()) for key, value in arrays.items()
            if key.startswith(prefix + "/")}


def _optimizer_arrays(prefix: str, optimizer) -> tuple[dict[str, np.ndarray], list]:
    state = optimizer.state_dict()
    arrays = {f"{prefix}/{index}/{name}": value.cpu().numpy()
              for index, slots in state["state"].items() for name, value in slots.items()}
    return arrays, state["param_groups"]


def _load_optimizer(prefix: str, optimizer, arrays: dict[str, np.ndarray], groups: list) -> None:
    state: dict[int, dict] = {}
    for key, value in _tensors(prefix, arrays).items():
        index, name = key.split("/")
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def run(ctx, *, architecture: str, latent_dim: int, epochs: int, batch_size: int, learning_rate: float,
        beta_1: float, real_label: float, checkpoint_every: int, fault: str = "none") -> dict[str, float]:
    """Scenario entry: train on the training split, keep the generator with the best validation
    FID, report its test FID beside the real-vs-real floor. `checkpoint_every` epochs (0: never)
    a checkpoint is saved; `--resume` continues from it to the same final metrics."""
    from dllab import checkpoint

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    digits = load_digits(ctx.seed)
    train = torch.from_numpy(digits.train.images[:, None] * 2.0 - 1.0)  # [0, 1] -> [-1, 1]
    generator, discriminator = build_generator(architecture, latent_dim), build_discriminator(architecture)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    best = {key: value.clone() for key, value in generator.state_dict().items()}
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(beta_1, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=learning_rate, betas=(beta_1, 0.999))
    combined_optimizer = torch.optim.Adam([*generator.parameters(), *discriminator.parameters()], lr=learning_rate,
                                          betas=(beta_1, 0.999)) if fault == "seed-combined" else None
    evaluator = Evaluator(ctx, judged_digits(digits, fault), latent_dim)
    generate = sampler(generator)

    first_epoch, saved = 1, ctx.load_checkpoint()
    if saved is None:
        evaluator.start(generate)
    else:
        arrays, meta = saved
        generator.load_state_dict(_tensors("generator", arrays))
        discriminator.load_state_dict(_tensors("discriminator", arrays))
        best = _tensors("best_generator", arrays)
        _load_optimizer("g_optimizer", g_optimizer, arrays, meta["g_optimizer"])
        _load_optimizer("d_optimizer", d_optimizer, arrays, meta["d_optimizer"])
        evaluator.load_state(meta["evaluator"])
        checkpoint.set_rng_state(arrays, meta)
        first_epoch = meta["epoch"] + 1

    for epoch in ctx.progress(range(first_epoch, epochs + 1), total=epochs - first_epoch + 1,
                              desc=f"{architecture} GAN (torch)"):
        order = torch.from_numpy(np.random.default_rng([ctx.seed, 1, epoch]).permutation(len(train)))
        losses = [train_step(generator, discriminator, g_optimizer, d_optimizer,
                             real_images(train, order, i, batch_size, fault, ctx.seed, epoch),
                             latent_dim, real_label, combined_optimizer, 0.0 if fault == "generator-target-fake" else 1.0)
                  for i in range(0, len(train), batch_size)]
        d_loss, g_loss = np.mean(losses, axis=0)
        if evaluator.epoch_end(epoch, generate, d_loss, g_loss):
            best = {key: value.clone() for key, value in generator.state_dict().items()}
        if checkpoint_every and (epoch % checkpoint_every == 0 or epoch == epochs):
            g_arrays, g_groups = _optimizer_arrays("g_optimizer", g_optimizer)
            d_arrays, d_groups = _optimizer_arrays("d_optimizer", d_optimizer)
            rng_arrays, rng_meta = checkpoint.rng_state()
            ctx.save_checkpoint(
                {**_arrays("generator", generator.state_dict()), **_arrays("discriminator", discriminator.state_dict()),
                 **_arrays("best_generator", best), **g_arrays, **d_arrays, **rng_arrays},
                {**rng_meta, "epoch": epoch, "g_optimizer": g_groups, "d_optimizer": d_groups,
                 "evaluator": evaluator.state()})

    generator.load_state_dict(best)
    return evaluator.finish(generate, f"{architecture} GAN, torch: kept epoch {evaluator.best_epoch}")
