"""Your own image data in MNIST format, for `--set data=PATH` on the image scenarios.

Two formats are read, both without running any code from the file:

- `.npz` as written by `numpy.savez` (the layout of Keras's `mnist.npz`): arrays `x_train`
  (N, H, W) and `y_train` (N,), and optionally `x_test` and `y_test`;
- IDX, the original MNIST files (`train-images-idx3-ubyte`, optionally gzipped): PATH names the
  images file and the labels file beside it is found by name (`images` -> `labels`, `idx3` ->
  `idx1`); PATH may also be a folder holding the four standard MNIST files.

Integer pixels (0..255) are scaled to [0, 1]. The validation part (and the test part, when the
file has none) is split off the training images, seeded and stratified, as for the bundled
digits. A missing or malformed file is a one-line `UsageError` saying what is wrong.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from dllab.data.digits import Digits, Split
from dllab.errors import UsageError

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as a numpy array; a malformed header is a UsageError."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise UsageError(f"--set data={path}: cannot read IDX file: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise UsageError(f"--set data={path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UsageError(f"--set data={path}: IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise UsageError(f"--set data={path}: IDX file has {len(raw)} bytes, its header says {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _labels_beside(images: Path) -> Path:
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    labels = images.with_name(name)
    if name == images.name or not labels.is_file():
        raise UsageError(f"--set data={images}: no labels file {labels.name} beside the IDX images file")
    return labels


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """x_train, y_train (and x_test, y_test when present) from an .npz, an IDX file or a folder."""
    if path.is_dir():
        files = [_find(path, name) for name in _MNIST_NAMES]
        if files[0] is None or files[1] is None:
            raise UsageError(f"--set data={path}: folder lacks {_MNIST_NAMES[0]} and {_MNIST_NAMES[1]}")
        arrays = {"x_train": read_idx(files[0]), "y_train": read_idx(files[1])}
        if files[2] is not None and files[3] is not None:
            arrays.update(x_test=read_idx(files[2]), y_test=read_idx(files[3]))
        return arrays
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("x_train", "y_train", "x_test", "y_test") if key in data.files}
        except (ValueError, OSError) as error:
            raise UsageError(f"--set data={path}: unreadable .npz file: {error}") from None
        if "x_train" not in arrays or "y_train" not in arrays:
            raise UsageError(f"--set data={path}: the .npz needs arrays x_train and y_train (MNIST layout)")
        return arrays
    return {"x_train": read_idx(path), "y_train": read_idx(_labels_beside(path))}


def _images(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise UsageError(f"--set data={where}: expected images (N, H, W) and labels (N,), "
                         f"got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UsageError(f"--set data={where}: labels must be non-negative integers")
    if np.issubdtype(x.dtype, np.integer) or x.max() > 1.0:
        x = x / 255.0
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise UsageError(f"--set data={where}: pixels must lie in 0..255 (integers) or 0..1 (floats)")
    return x.astype(np.float32), y.astype(np.int64)


def load_user_images(path: str | Path, seed: int = 0, validation: float = 0.15, test: float = 0.2) -> Digits:
    """Your MNIST-format file as the same train/validation/test `Digits` split the scenarios use."""
    from sklearn.model_selection import train_test_split

    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--set data={path}: no such file or folder")
    arrays = _read_arrays(path)
    x, y = _images(arrays["x_train"], arrays["y_train"], str(path))
    try:
        if "x_test" in arrays and "y_test" in arrays:
            test_x, test_y = _images(arrays["x_test"], arrays["y_test"], str(path))
            if test_x.shape[1:] != x.shape[1:]:
                raise UsageError(f"--set data={path}: test images {test_x.shape[1:]} differ from train {x.shape[1:]}")
            val_size = validation
        else:
            x, test_x, y, test_y = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
            val_size = validation / (1 - test)
        train_x, val_x, train_y, val_y = train_test_split(x, y, test_size=val_size, stratify=y, random_state=seed)
    except ValueError as error:  # too few images of some class to stratify
        raise UsageError(f"--set data={path}: cannot split it: {error}") from None
    return Digits(Split(train_x, train_y), Split(val_x, val_y), Split(test_x, test_y))
