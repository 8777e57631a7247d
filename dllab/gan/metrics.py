"""How good is a digits GAN? Classifier-FID against a real floor, and mode coverage.

Both figures come from one digits classifier trained here on the training split only, with
scikit-learn (a one-hidden-layer MLP), so a torch GAN and a Keras GAN are judged by exactly the
same numbers, whatever their framework:

- classifier-FID: the Frechet distance between Gaussian fits of the classifier's hidden features
  (post-ReLU, like Inception's pool features in the usual FID) of generated and real images;
- the floor: the same FID between two sets of *real* images (training vs test), with the same
  number of images on each side as the generated-vs-test comparison. FID estimated from a few
  hundred samples is biased upwards, so a perfect generator would score about the floor, not 0;
  `fid / floor` is the figure that says how far from real the samples are;
- mode coverage: the share of generated samples the classifier assigns to each digit, how many
  digits get at least 5% of them, and the KL divergence of those shares to uniform (0 = the ten
  digits equally often; a collapsed GAN producing one digit scores log 10 = 2.30).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

N_CLASSES = 10
BLAS_THREADS = 1  # fixed: fewer threads are faster at this size, and the sums do not depend on it
MIN_MODE_SHARE = 0.05  # a digit counts as covered with at least this share of the samples


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians.

    The matrix square root is scipy's `sqrtm` with the usual safeguards (as in pytorch-fid): if
    the product is singular and the root is not finite, `eps` is added to both diagonals; a tiny
    imaginary part from round-off is dropped; a large one (near-singular covariances) makes the
    trace come from `trace_sqrt_product` instead."""
    from scipy import linalg

    mean_a, mean_b = np.atleast_1d(np.asarray(mean_a, np.float64)), np.atleast_1d(np.asarray(mean_b, np.float64))
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mean_a.shape * 2:
        raise ValueError(f"mismatched shapes: means {mean_a.shape} {mean_b.shape}, "
                         f"covariances {cov_a.shape} {cov_b.shape}")
    with warnings.catch_warnings(), threadpool_limits(BLAS_THREADS):
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            offset = eps * np.eye(len(mean_a))
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    trace_root = None
    if np.iscomplexobj(root):
        if np.abs(root.imag).max() > 1e-3 * max(1.0, np.abs(root.real).max()):
            trace_root = trace_sqrt_product(cov_a, cov_b)  # near-singular (a collapsed generator)
        root = root.real
    if trace_root is None:
        trace_root = float(np.trace(root))
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """Tr((S_a S_b)^(1/2)) as the sum of the square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2) (the same eigenvalues as S_a S_b, real and >= 0): the fallback when
    sqrtm's result has a large imaginary part, as with the features of a collapsed generator."""
    with threadpool_limits(BLAS_THREADS):
        values, vectors = np.linalg.eigh(cov_a)
        root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        product = root_a @ cov_b @ root_a
        return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None))))


def fit_gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of a (N, D) feature matrix."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Frechet distance between Gaussian fits of two feature sets."""
    return frechet_distance(*fit_gaussian(features_a), *fit_gaussian(features_b))


def mode_coverage(predicted_labels: np.ndarray, n_classes: int = N_CLASSES) -> dict[str, object]:
    """Per-digit shares of the predictions, digits with >= 5% of them, and KL(shares || uniform)."""
    predicted_labels = np.asarray(predicted_labels)
    if predicted_labels.size == 0:
        raise ValueError("mode_coverage needs at least one prediction")
    shares = np.bincount(predicted_labels, minlength=n_classes)[:n_classes] / predicted_labels.size
    present = shares[shares > 0]
    return {
        "shares": shares,
        "modes_covered": int(np.sum(shares >= MIN_MODE_SHARE)),
        "kl_uniform": float(np.sum(present * np.log(present * n_classes))),
    }


def data_hash(*arrays: np.ndarray) -> str:
    """A short hash of the training data, part of the classifier's cache key."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DigitsClassifier:
    """A trained scikit-learn MLP read out in numpy: hidden features and predicted digits."""

    hidden_weights: np.ndarray
    hidden_bias: np.ndarray
    output_weights: np.ndarray
    output_bias: np.ndarray

    def features(self, images: np.ndarray) -> np.ndarray:
        """Post-ReLU hidden activations of images in [0, 1], shape (N, 8, 8) or (N, 64)."""
        flat = np.asarray(images, np.float64).reshape(len(images), -1)
        if flat.shape[1] != self.hidden_weights.shape[0]:
            raise ValueError(f"expected {self.hidden_weights.shape[0]} pixels per image, got {flat.shape[1]}")
        with threadpool_limits(BLAS_THREADS):
            return np.maximum(flat @ self.hidden_weights + self.hidden_bias, 0.0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The most likely digit of each image."""
        with threadpool_limits(BLAS_THREADS):
            return (self.features(images) @ self.output_weights + self.output_bias).argmax(axis=1)


_CLASSIFIERS: dict[tuple, DigitsClassifier] = {}


def train_digits_classifier(images: np.ndarray, labels: np.ndarray, seed: int,
                            hidden: int = 128) -> DigitsClassifier:
    """The feature extractor, trained on the images given (the training split) and cached by
    seed and data hash, so every run in a process reuses the same one."""
    key = (seed, hidden, data_hash(images, labels))
    if key not in _CLASSIFIERS:
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, solver="lbfgs", max_iter=500,
                              random_state=seed)
        with warnings.catch_warnings(), threadpool_limits(BLAS_THREADS):
            warnings.simplefilter("ignore")  # ConvergenceWarning: the test accuracy is reported instead
            model.fit(np.asarray(images, np.float64).reshape(len(images), -1), labels)
        (w1, w2), (b1, b2) = model.coefs_, model.intercepts_
        _CLASSIFIERS[key] = DigitsClassifier(w1, b1, w2, b2)
    return _CLASSIFIERS[key]


class GanJudge:
    """Scores generated digits against the real splits with one classifier.

    `fid(images, "test")` compares generated images (in [0, 1]) with the test split; use as many
    generated images as the split has. `floor` is the FID of real training images against the
    test split, averaged over disjoint subsets of the test split's size (like with like)."""

    def __init__(self, digits, seed: int, floor_subsets: int = 3):
        self.classifier = train_digits_classifier(digits.train.images, digits.train.labels, seed)
        self.splits = {"validation": digits.validation, "test": digits.test}
        self.reference = {name: fit_gaussian(self.classifier.features(split.images))
                          for name, split in self.splits.items()}
        self.classifier_accuracy = float(np.mean(self.classifier.predict(digits.test.images) == digits.test.labels))
        train_features = self.classifier.features(digits.train.images)
        order = np.random.default_rng([seed, 97]).permutation(len(train_features))
        size = len(digits.test)
        subsets = min(floor_subsets, len(order) // size)
        if subsets < 1:
            raise ValueError(f"the training split ({len(order)}) is smaller than the test split ({size})")
        self.floors = [frechet_distance(*fit_gaussian(train_features[order[i * size:(i + 1) * size]]),
                                        *self.reference["test"]) for i in range(subsets)]
        self.floor = float(np.mean(self.floors))
        self.floor_all_train = frechet_distance(*fit_gaussian(train_features), *self.reference["test"])

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def fid(self, images: np.ndarray, split: str = "test") -> float:
        if split not in self.reference:
            raise ValueError(f"split must be one of {sorted(self.reference)}, got {split!r}")
        return frechet_distance(*fit_gaussian(self.classifier.features(images)), *self.reference[split])

    def coverage(self, images: np.ndarray) -> dict[str, object]:
        return mode_coverage(self.classifier.predict(images))
