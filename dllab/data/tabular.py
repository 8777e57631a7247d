"""A real 8-feature binary table for the seed's Keras MLP (an 8-input 12-8-1 network).

The seed's network has `input_dim=8`; its classic data set (Pima Indians diabetes) is not bundled
with any dependency and must not be downloaded at run time. dllab uses the Wisconsin diagnostic
breast-cancer table bundled with scikit-learn (569 tumours, 212 malignant, 357 benign) and keeps
its first 8 columns, the *mean* cell-nucleus measurements: radius, texture, perimeter, area,
smoothness, compactness, concavity, concave points. The target is 1 = benign, 0 = malignant.

The split is seeded and stratified (the same proportions as the digits: 65% train, 15%
validation, 20% test). Features are standardized with the *training* mean and standard deviation
only, so nothing about the validation or test rows leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FEATURE_COUNT = 8


@dataclass(frozen=True)
class Table:
    """Standardized features (N, 8) float32 and 0/1 labels (N,) float32 for one part of the split."""

    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BinaryTable:
    train: Table
    validation: Table
    test: Table
    feature_names: tuple[str, ...]


@lru_cache(maxsize=8)
def load_breast_cancer_8(seed: int = 0, validation: float = 0.15, test: float = 0.2) -> BinaryTable:
    """The first 8 columns of scikit-learn's breast-cancer table, split and standardized."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise ValueError(f"validation ({validation}) and test ({test}) must be fractions summing below 1")
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    features = bunch.data[:, :FEATURE_COUNT].astype(np.float64)
    labels = bunch.target.astype(np.float32)
    rest_x, test_x, rest_y, test_y = train_test_split(
        features, labels, test_size=test, stratify=labels, random_state=seed)
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=validation / (1 - test), stratify=rest_y, random_state=seed)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)

    def part(x, y):
        return Table(((x - mean) / std).astype(np.float32), y)

    names = tuple(str(n) for n in bunch.feature_names[:FEATURE_COUNT])
    return BinaryTable(part(train_x, train_y), part(val_x, val_y), part(test_x, test_y), names)
