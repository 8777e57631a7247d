"""Self-supervised pretraining of the CNN's encoder in Keras 3, on the unlabeled pool (see
`selfsup_common`; the twin of `selfsup_torch`): SimCLR's contrastive NT-Xent objective as a
Keras loss over each batch, or a denoising autoencoder, both with `model.fit`. The encoder is
the CNN up to its "features" layer; the projection or decoder on top is dropped afterwards. The
result is saved as a `.keras` file of a 10-class CNN whose head is untrained, the form in which
`transfer_keras.Arms` loads a base.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from dllab.supervised.cnn_keras import build_cnn
from dllab.supervised.common import DENSE_UNITS
from dllab.supervised.selfsup_common import CLASSES, contrastive_batches, denoising_batches

PROJECTION_UNITS = 64


def nt_xent(views: int, temperature: float):
    """NT-Xent as a Keras loss on batches of exactly `views` rows: rows i and i + views / 2 are
    two views of one image; each must pick its partner out of the other rows (per-row loss)."""
    half = views // 2
    partner = np.concatenate([np.arange(half, views), np.arange(half)])
    diagonal = np.eye(views, dtype="float32") * 1e9  # exp(-1e9) is 0: as torch's -inf mask

    def loss(_, projections):
        z = projections / ops.sqrt(ops.sum(ops.square(projections), axis=1, keepdims=True))
        mask, targets = ops.convert_to_tensor(diagonal), ops.convert_to_tensor(partner)  # any backend
        similarity = ops.matmul(z, ops.transpose(z)) / temperature - mask
        return keras.losses.sparse_categorical_crossentropy(targets, similarity, from_logits=True)

    return loss


def pretrain_contrastive(
    encoder: keras.Model,
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
    model = keras.Sequential(
        [encoder, layers.Dense(DENSE_UNITS, activation="relu"), layers.Dense(PROJECTION_UNITS)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=nt_xent(2 * batch_size, temperature)
    )
    batches = contrastive_batches(pool, rng, epochs=epochs, batch_size=batch_size, elastic=elastic)
    images = batches.reshape((-1,) + pool.shape[1:] + (1,))
    history = StepLosses()
    model.fit(
        images,
        np.zeros(len(images)),
        batch_size=2 * batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[history],
    )
    return history.losses


def pretrain_denoising(
    encoder: keras.Model,
    pool: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mask: float,
) -> list[float]:
    """Adam on the squared error of a linear decoder (128 -> 64 pixels) rebuilding clean images."""
    model = keras.Sequential([encoder, layers.Dense(pool.shape[1] * pool.shape[2])])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    corrupted, clean = denoising_batches(pool, rng, epochs=epochs, batch_size=batch_size, mask=mask)
    history = StepLosses()
    model.fit(
        corrupted[..., None],
        clean.reshape(len(clean), -1),
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[history],
    )
    return history.losses


class StepLosses(keras.callbacks.Callback):
    """The loss after every step (Keras logs the running mean of the epoch: recovered per step)."""

    def __init__(self):
        super().__init__()
        self.losses, self.means = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))
        count = len(self.means)
        previous = self.means[-2] * (count - 1) if count > 1 else 0.0
        self.losses.append(self.means[-1] * count - previous)


def pretrain_encoder(
    objective: str,
    pool: np.ndarray,
    path: Path,
    rng: np.random.Generator,
    *,
    init_seed: int,
    **settings,
) -> list[float]:
    """Pretrain a fresh CNN's encoder with `objective` and save the CNN at `path` (`.keras`);
    returns the pretraining losses, one per step. `settings` are the objective's arguments."""
    keras.utils.set_random_seed(init_seed)
    model = build_cnn(classes=CLASSES)
    encoder = keras.Model(model.inputs[0], model.get_layer("features").output, name="encoder")
    if objective == "contrastive":
        losses = pretrain_contrastive(encoder, pool, rng, **settings)
    else:
        losses = pretrain_denoising(encoder, pool, rng, **settings)
    model.save(path)
    return losses
