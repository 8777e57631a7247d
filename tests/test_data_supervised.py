"""The supervised data: the 8-feature breast-cancer table and user MNIST-format files (.npz, IDX)."""

import gzip

import numpy as np
import pytest

from dllab.data.digits import load_digits
from dllab.data.tabular import load_breast_cancer_8
from dllab.data.user_files import load_user_images, read_idx
from dllab.errors import UsageError


def test_table_split_is_stratified_standardized_and_seeded():
    table = load_breast_cancer_8(0)
    sizes = [len(table.train), len(table.validation), len(table.test)]
    assert sum(sizes) == 569 and table.train.features.shape[1] == 8
    assert table.feature_names[0] == "mean radius" and table.feature_names[-1] == "mean concave points"
    np.testing.assert_allclose(table.train.features.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(table.train.features.std(axis=0), 1, atol=1e-5)
    rates = [part.labels.mean() for part in (table.train, table.validation, table.test)]
    assert max(rates) - min(rates) < 0.02  # stratified: same benign share everywhere
    assert np.array_equal(load_breast_cancer_8(0).test.labels, table.test.labels)
    assert not np.array_equal(load_breast_cancer_8(1).test.features, table.test.features)


def write_idx(path, array: np.ndarray, code: int = 0x08):
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype({0x08: ">u1", 0x0D: ">f4"}[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(data)


def fake_mnist(count=200, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size), dtype=np.uint8), np.arange(count) % 10


def test_npz_with_test_part(tmp_path):
    x, y = fake_mnist()
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    digits = load_user_images(tmp_path / "mine.npz", seed=0)
    assert len(digits.test) == 50 and len(digits.train) + len(digits.validation) == 200
    assert digits.train.images.dtype == np.float32 and 0 <= digits.train.images.min() <= digits.train.images.max() <= 1
    np.testing.assert_array_equal(digits.test.images, x[:50] / np.float32(255))


def test_idx_file_and_folder_give_the_same_split(tmp_path):
    x, y = fake_mnist()
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), x)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(gzip.decompress((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()))
    by_file = load_user_images(tmp_path / "train-images-idx3-ubyte", seed=3)
    by_folder = load_user_images(tmp_path, seed=3)
    assert np.array_equal(by_file.test.labels, by_folder.test.labels)
    assert len(by_file.train) + len(by_file.validation) + len(by_file.test) == 200


@pytest.mark.parametrize("name, make, message", [
    ("missing.npz", lambda p: None, "no such file"),
    ("train-images-idx3-ubyte", lambda p: p.write_bytes(b"not an idx file at all"), "bad magic"),
    ("data.npz", lambda p: np.savez(p, images=np.zeros((3, 8, 8))), "x_train and y_train"),
    ("data.npz", lambda p: np.savez(p, x_train=np.zeros((3, 8)), y_train=np.zeros(3, int)), "expected images"),
    ("data.npz", lambda p: np.savez(p, x_train=np.zeros((3, 8, 8)), y_train=np.array([0.5, 1, 2])), "integers"),
    ("data.npz", lambda p: np.savez(p, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4)), "cannot split"),
])
def test_bad_user_files_are_one_line_usage_errors(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(UsageError, match=message) as error:
        load_user_images(path)
    assert "\n" not in str(error.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "evil.npz", x_train=np.array([object()] * 3, dtype=object), y_train=np.zeros(3, int))
    with pytest.raises(UsageError, match="unreadable"):
        load_user_images(tmp_path / "evil.npz")


def test_truncated_idx_is_refused(tmp_path):
    x, _ = fake_mnist(10)
    write_idx(tmp_path / "a-images-idx3-ubyte", x)
    raw = (tmp_path / "a-images-idx3-ubyte").read_bytes()
    (tmp_path / "a-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(UsageError, match="header says"):
        read_idx(tmp_path / "a-images-idx3-ubyte")


def test_bundled_digits_round_trip_through_a_user_npz(tmp_path):
    """The digits saved in MNIST layout and loaded back as a user file give the same pixels."""
    digits = load_digits(0)
    np.savez(tmp_path / "digits.npz", x_train=np.round(digits.train.images * 255).astype(np.uint8),
             y_train=digits.train.labels, x_test=np.round(digits.test.images * 255).astype(np.uint8),
             y_test=digits.test.labels)
    loaded = load_user_images(tmp_path / "digits.npz", seed=0)
    np.testing.assert_allclose(loaded.test.images, digits.test.images, atol=1 / 255)
    assert np.array_equal(loaded.test.labels, digits.test.labels)
