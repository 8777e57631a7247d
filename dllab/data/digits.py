"""The 8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes).

One seeded, stratified train/validation/test split shared by every framework, so that torch and
Keras results are compared on the very same images. Pixels are scaled from 0..16 to 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Split:
    """Images (N, 8, 8) float32 in [0, 1] and labels (N,) int64 for one part of the split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def flat(self) -> np.ndarray:
        return self.images.reshape(len(self), -1)


@dataclass(frozen=True)
class Digits:
    train: Split
    validation: Split
    test: Split


@lru_cache(maxsize=8)
def load_digits(seed: int = 0, validation: float = 0.15, test: float = 0.2) -> Digits:
    """Stratified split of the bundled digits; the same seed gives the same split everywhere."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=test, stratify=labels, random_state=seed)
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=validation / (1 - test), stratify=rest_y, random_state=seed)
    return Digits(Split(train_x, train_y), Split(val_x, val_y), Split(test_x, test_y))
