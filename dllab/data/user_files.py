"""Your own image data in MNIST format, for `--set data=PATH` on the image scenarios.

Two formats are read, both without running any code from the file:

- `.npz` as written by `numpy.savez` (the layout of Keras's `mnist.npz`): arrays `x_train`
  (N, H, W) and `y_train` (N,), and optionally `x_test` and `y_test`;
- IDX, the original MNIST files (`train-images-idx3-ubyte`, optionally gzipped): PATH names the
  images file and the labels file beside it is found by name (`images` -> `labels`, `idx3` ->
  `idx1`); PATH may also be a folder holding the four standard MNIST files.

A file from elsewhere may be hostile: a 1.5 MB gzip or `.npz` can expand to many GB, a header
can claim any shape, a label any class count. So every file is checked against the limits below
from its size on disk and from its headers (IDX dimensions, the `.npy` header of each `.npz`
member) before anything is decompressed or allocated, and a file that breaks one is refused with
a one-line `UsageError` naming the limit. Pixels stay in their integer dtype through validation
and the split; each part is converted to float32 in [0, 1] once, at the end (no float64 copy).
The validation part (and the test part, when the file has none) is split off the training
images, seeded and stratified, as for the bundled digits.
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dllab.data.digits import Digits, Split
from dllab.errors import UsageError

MAX_FILE_BYTES = 256 * 2**20  # one file on disk, compressed or not
MAX_ARRAY_BYTES = 256 * 2**20  # one array once decompressed (an IDX payload, a .npz member)
MAX_IMAGES = 1_000_000  # images in one array
MAX_SIDE = 256  # pixels along each side of an image
MAX_CLASSES = 1000  # the largest label allowed is MAX_CLASSES - 1

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, zipfile.BadZipFile, NotImplementedError,
                RuntimeError)


def _refuse(where: Path | str, problem: str) -> UsageError:
    return UsageError(f"--set data={where}: {problem}")


def check_header(shape: tuple[int, ...], dtype: np.dtype, where: Path | str, role: str = "") -> None:
    """Refuse, before any allocation, an array whose header breaks a limit: its byte size
    (`math.prod`, which cannot wrap around), its image count, its image sides, its dtype.
    `role` is "images" (N, H, W), "labels" (N,) or "" (any array)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise _refuse(where, f"an array of shape {shape} ({nbytes} bytes) is above the limit of "
                             f"{MAX_ARRAY_BYTES} bytes decompressed (MAX_ARRAY_BYTES)")
    if shape and shape[0] > MAX_IMAGES:
        raise _refuse(where, f"{shape[0]} images is above the limit of {MAX_IMAGES} (MAX_IMAGES)")
    if role == "images":
        if len(shape) != 3:
            raise _refuse(where, f"expected images (N, H, W), got an array of shape {shape}")
        if not all(1 <= side <= MAX_SIDE for side in shape[1:]):
            raise _refuse(where, f"images of {shape[1]}x{shape[2]} pixels: each side must be in "
                                 f"[1, {MAX_SIDE}] (MAX_SIDE)")
        if dtype.kind not in "iuf":
            raise _refuse(where, f"pixels must be integers or floats, not {dtype}")
    if role == "labels":
        if len(shape) != 1:
            raise _refuse(where, f"expected images (N, H, W) and labels (N,), got labels of shape {shape}")
        if dtype.kind not in "iu":
            raise _refuse(where, f"labels must be non-negative integers, not {dtype}")


def _open(path: Path):
    """A binary stream of the file's content (decompressed on the fly if gzipped), after the
    on-disk size check. Only regular files: a FIFO or a device would block or never end."""
    try:
        if not path.is_file():
            raise _refuse(path, "not a regular file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _refuse(path, f"the file has {size} bytes, above the limit of {MAX_FILE_BYTES} "
                                "(MAX_FILE_BYTES)")
        handle = open(path, "rb")
    except OSError as error:
        raise _refuse(path, f"cannot read the file: {error}") from None
    if handle.read(2) == b"\x1f\x8b":
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")
    handle.seek(0)
    return handle


def _read_exactly(handle, count: int) -> bytes:
    data = handle.read(count)
    return data if data is not None else b""


def read_idx(path: Path | str, role: str = "") -> np.ndarray:
    """One IDX file (gzipped or not) as a numpy array in its own dtype. The header is checked
    against the limits before the payload is decompressed; a malformed file is a UsageError."""
    path = Path(path)
    handle = _open(path)
    try:
        with handle:
            magic = _read_exactly(handle, 4)
            if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in _IDX_TYPES or magic[3] == 0:
                raise _refuse(path, "not an IDX file (bad magic number)")
            dtype, ndim = np.dtype(_IDX_TYPES[magic[2]]), magic[3]
            dims = _read_exactly(handle, 4 * ndim)
            if len(dims) < 4 * ndim:
                raise _refuse(path, "IDX header is truncated")
            shape = tuple(int(d) for d in np.frombuffer(dims, ">u4"))
            check_header(shape, dtype, path, role)
            header, expected = 4 + 4 * ndim, math.prod(shape) * dtype.itemsize
            payload = _read_exactly(handle, expected)
            if len(payload) != expected or handle.read(1):
                size = header + len(payload) + (0 if len(payload) < expected else 1)
                more = "" if len(payload) < expected else "more than "
                raise _refuse(path, f"IDX file has {more}{size} bytes, its header says {header + expected}")
    except _READ_ERRORS as error:
        raise _refuse(path, f"cannot read IDX file: {error}") from None
    array = np.frombuffer(payload, dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _npy_header(member, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise _refuse(where, f"unsupported .npy format version {version} (numpy.savez writes 1.0)")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """x_train, y_train (x_test, y_test) of an .npz, each member's .npy header checked against
    the limits before it is decompressed; object arrays (pickles) are refused."""
    _open(path).close()  # the regular-file and size checks
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            for key in _NPZ_KEYS:
                info = members.get(key + ".npy")
                if info is None:
                    continue
                where = f"{path} ({key})"
                with archive.open(info) as member:
                    shape, _, dtype = _npy_header(member, where)
                if dtype.hasobject:
                    raise _refuse(where, "unreadable .npz file: it holds Python objects, which "
                                         "would need unpickling (refused)")
                check_header(tuple(shape), dtype, where, "images" if key[0] == "x" else "labels")
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except _READ_ERRORS as error:
        raise _refuse(path, f"unreadable .npz file: {error}") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise _refuse(path, "the .npz needs arrays x_train and y_train (MNIST layout)")
    return arrays


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _labels_beside(images: Path) -> Path:
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    labels = images.with_name(name)
    if name == images.name or not labels.is_file():
        raise _refuse(images, f"no labels file {labels.name} beside the IDX images file")
    return labels


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """x_train, y_train (and x_test, y_test when present) from an .npz, an IDX file or a folder."""
    if path.is_dir():
        files = [_find(path, name) for name in _MNIST_NAMES]
        if files[0] is None or files[1] is None:
            raise _refuse(path, f"folder lacks {_MNIST_NAMES[0]} and {_MNIST_NAMES[1]}")
        arrays = {"x_train": read_idx(files[0], "images"), "y_train": read_idx(files[1], "labels")}
        if files[2] is not None and files[3] is not None:
            arrays.update(x_test=read_idx(files[2], "images"), y_test=read_idx(files[3], "labels"))
        return arrays
    if path.suffix == ".npz":
        return read_npz(path)
    return {"x_train": read_idx(path, "images"), "y_train": read_idx(_labels_beside(path), "labels")}


def _images(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Validated (pixels in their own dtype, the scale that maps them to [0, 1], labels)."""
    check_header(x.shape, x.dtype, where, "images")
    check_header(y.shape, y.dtype, where, "labels")
    if len(x) != len(y) or len(y) == 0:
        raise _refuse(where, f"expected images (N, H, W) and labels (N,), got {x.shape} and {y.shape}")
    if y.min() < 0:
        raise _refuse(where, "labels must be non-negative integers")
    if int(y.max()) >= MAX_CLASSES:
        raise _refuse(where, f"label {int(y.max())} means {int(y.max()) + 1} classes, above the "
                             f"limit of {MAX_CLASSES} (MAX_CLASSES)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise _refuse(where, "pixels must be finite numbers")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise _refuse(where, "pixels must lie in 0..255 (integers) or 0..1 (floats)")
    scale = 255.0 if x.dtype.kind in "iu" or high > 1.0 else 1.0
    if x.dtype.kind in "iu":
        x = x.astype(np.uint8, copy=False)  # 0..255 checked above: exact, and the smallest dtype
    return x, scale, y.astype(np.int64, copy=False)


def _split(x: np.ndarray, y: np.ndarray, scale: float) -> Split:
    """The float32 images in [0, 1] of one part: the only float copy of the pixels."""
    return Split(np.divide(x, np.float32(scale), dtype=np.float32), y)


def load_user_images(path: str | Path, seed: int = 0, validation: float = 0.15, test: float = 0.2) -> Digits:
    """Your MNIST-format file as the same train/validation/test `Digits` split the scenarios use."""
    from sklearn.model_selection import train_test_split

    try:
        path = Path(path).expanduser()
        exists = path.exists()
    except (RuntimeError, OSError, ValueError) as error:  # "~nobody/x", a NUL byte, a long name
        raise _refuse(path, f"not a usable path: {error}") from None
    if not exists:
        raise _refuse(path, "no such file or folder")
    arrays = _read_arrays(path)
    x, scale, y = _images(arrays["x_train"], arrays["y_train"], str(path))
    try:
        if "x_test" in arrays and "y_test" in arrays:
            test_x, test_scale, test_y = _images(arrays["x_test"], arrays["y_test"], str(path))
            if test_x.shape[1:] != x.shape[1:]:
                raise _refuse(path, f"test images {test_x.shape[1:]} differ from train {x.shape[1:]}")
            val_size = validation
        else:
            x, test_x, y, test_y = train_test_split(x, y, test_size=test, stratify=y, random_state=seed)
            test_scale, val_size = scale, validation / (1 - test)
        train_x, val_x, train_y, val_y = train_test_split(x, y, test_size=val_size, stratify=y, random_state=seed)
    except ValueError as error:  # too few images of some class to stratify
        raise _refuse(path, f"cannot split it: {error}") from None
    return Digits(_split(train_x, train_y, scale), _split(val_x, val_y, scale),
                  _split(test_x, test_y, test_scale))
