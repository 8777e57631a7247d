"""Pictures of a GAN run: a grid of samples (PNG, byte-for-byte reproducible) and the curves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def to_unit(images: np.ndarray) -> np.ndarray:
    """Generator outputs in [-1, 1] (tanh) back to pixel intensities in [0, 1], shape (N, 8, 8)."""
    images = np.asarray(images, np.float32)
    return np.clip((images.reshape(len(images), 8, 8) + 1.0) / 2.0, 0.0, 1.0)


def sample_grid(images: np.ndarray, columns: int = 10, scale: int = 4, border: int = 1) -> np.ndarray:
    """Tile (N, H, W) images in [0, 1] into one uint8 picture, each pixel shown as scale x scale."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, H, W) array, got shape {images.shape}")
    if columns < 1 or scale < 1 or border < 0:
        raise ValueError("columns and scale must be >= 1 and border >= 0")
    count, height, width = images.shape
    rows = -(-count // columns)
    cell_h, cell_w = height * scale + border, width * scale + border
    grid = np.full((rows * cell_h + border, columns * cell_w + border), 128, np.uint8)
    pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    for index, image in enumerate(pixels):
        top, left = border + (index // columns) * cell_h, border + (index % columns) * cell_w
        grid[top:top + height * scale, left:left + width * scale] = np.kron(image, np.ones((scale, scale), np.uint8))
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image encoded as PNG with no metadata, so equal arrays give equal bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: Path) -> Path:
    Path(path).write_bytes(png_bytes(image))
    return Path(path)


def curves_figure(history: dict[str, list[float]], floor: float, best_epoch: int, title: str):
    """Losses per epoch on the left; validation FID per epoch (log scale) with the floor on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, fids) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = history["epoch"][1:]  # epoch 0 (the untrained generator) has no losses
    losses.plot(epochs, history["d_loss"][1:], label="discriminator")
    losses.plot(epochs, history["g_loss"][1:], label="generator")
    losses.set_xlabel("epoch")
    losses.set_ylabel("mean loss")
    losses.legend()
    fids.plot(history["epoch"], history["fid_validation"], label="FID vs validation split")
    fids.axhline(floor, color="gray", linestyle="--", label="floor (real train vs real test)")
    fids.axvline(best_epoch, color="green", linestyle=":", label=f"kept generator (epoch {best_epoch})")
    fids.set_yscale("log")
    fids.set_xlabel("epoch")
    fids.set_ylabel("classifier-FID")
    fids.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
