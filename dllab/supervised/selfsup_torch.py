"""Self-supervised pretraining of the CNN's encoder in PyTorch, on the unlabeled pool (see
`selfsup_common`): SimCLR's contrastive NT-Xent objective, or a denoising autoencoder. The
encoder is `CNN.features` (up to the 128-unit layer); what pretraining adds on top of it (the
projection, the decoder) is dropped afterwards. The result is saved as the `state_dict` of a
10-class CNN whose head is untrained, the form in which `transfer_torch.Arms` loads a base.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dllab.supervised.cnn_torch import CNN
from dllab.supervised.common import DENSE_UNITS
from dllab.supervised.selfsup_common import CLASSES, contrastive_batches, denoising_batches

PROJECTION_UNITS = 64


def nt_xent(projections: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: rows i and i + n are two views of one image; each must pick its partner out of
    the other 2n - 2 rows by cosine similarity / temperature (a 2n-way cross-entropy)."""
    z = nn.functional.normalize(projections, dim=1)
    similarity = z @ z.T / temperature
    similarity = similarity.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    half = len(z) // 2
    partner = torch.cat([torch.arange(half, 2 * half), torch.arange(half)])
    return nn.functional.cross_entropy(similarity, partner)


def pretrain_contrastive(
    encoder: nn.Module,
    pool: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    elastic: float,
) -> list[float]:
    """Adam on the NT-Xent loss of a projection (128 -> 128 -> 64) of the encoder's output."""
    projection = nn.Sequential(
        nn.Linear(DENSE_UNITS, DENSE_UNITS), nn.ReLU(), nn.Linear(DENSE_UNITS, PROJECTION_UNITS)
    )
    optimizer = torch.optim.Adam(
        [*encoder.parameters(), *projection.parameters()], lr=learning_rate
    )
    batches = contrastive_batches(pool, rng, epochs=epochs, batch_size=batch_size, elastic=elastic)
    losses = []
    for batch in torch.from_numpy(batches).unsqueeze(2):  # (2 * batch_size, 1, 8, 8)
        loss = nt_xent(projection(encoder(batch)), temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def pretrain_denoising(
    encoder: nn.Module,
    pool: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mask: float,
) -> list[float]:
    """Adam on the squared error of a linear decoder (128 -> 64 pixels) rebuilding clean images."""
    decoder = nn.Linear(DENSE_UNITS, pool.shape[1] * pool.shape[2])
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=learning_rate)
    corrupted, clean = (
        torch.from_numpy(a).unsqueeze(1)
        for a in denoising_batches(pool, rng, epochs=epochs, batch_size=batch_size, mask=mask)
    )
    losses = []
    for start in range(0, len(clean), batch_size):
        rebuilt = decoder(encoder(corrupted[start : start + batch_size]))
        loss = nn.functional.mse_loss(rebuilt, clean[start : start + batch_size].flatten(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def pretrain_encoder(
    objective: str,
    pool: np.ndarray,
    path: Path,
    rng: np.random.Generator,
    *,
    init_seed: int,
    **settings,
) -> list[float]:
    """Pretrain a fresh CNN's encoder with `objective` and save the CNN's `state_dict` at `path`;
    returns the pretraining losses, one per step. `settings` are the objective's arguments."""
    torch.manual_seed(init_seed)
    model = CNN(classes=CLASSES)
    if objective == "contrastive":
        losses = pretrain_contrastive(model.features, pool, rng, **settings)
    else:
        losses = pretrain_denoising(model.features, pool, rng, **settings)
    torch.save(model.state_dict(), path)
    return losses
