"""Hostile `--set data=` files: bombs, lying headers, absurd shapes and class counts are refused
from the file size and the headers, before anything large is decompressed or allocated."""

import gzip
import io
import os
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
import sklearn.model_selection  # noqa: F401  (imported before tracemalloc counts allocations)

from conftest import run_cli
from dllab.data import user_files
from dllab.data.user_files import load_user_images, read_idx
from dllab.errors import UsageError

MIB = 2**20


def idx_header(shape, code=0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.array(shape, ">u4").tobytes()


def gzip_bomb(path, header: bytes, zero_mib: int) -> None:
    """`header` then `zero_mib` MiB of zeros, as concatenated gzip members (one valid gzip
    stream): about 1 KB on disk per MiB decompressed, written in milliseconds."""
    block = gzip.compress(bytes(MIB), 9)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header))
        for _ in range(zero_mib):
            handle.write(block)


def npy_member(shape, descr="|u1") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npz_bomb(path, shape, zero_mib: int, labels=None) -> None:
    """An .npz whose x_train.npy header claims `shape`, followed by `zero_mib` MiB of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(npy_member(shape))
            for _ in range(zero_mib):
                member.write(bytes(MIB))
        archive.writestr("y_train.npy", npy_member((shape[0],)) + bytes(min(shape[0], MIB)))


def refused_quickly(path, limit: str, budget_bytes: int = 8 * MIB) -> str:
    """Load `path`, expect a one-line UsageError naming `limit`, and a small peak allocation."""
    tracemalloc.start()
    try:
        with pytest.raises(UsageError) as error:
            load_user_images(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert limit in message and "\n" not in message, message
    assert peak < budget_bytes, f"allocated {peak / MIB:.1f} MiB before refusing"
    return message


def test_gzip_bomb_idx_is_refused_from_its_header(tmp_path):
    """1.5 MB on disk, 1.5 GB decompressed: refused from the header, nothing decompressed."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, idx_header((2_000_000, 28, 28)), 1500)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_header((10,)) + bytes(10))
    assert path.stat().st_size < 2 * MIB
    refused_quickly(path, "MAX_ARRAY_BYTES")


def test_idx_header_claiming_more_than_its_payload_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, idx_header((4_000_000, 28, 28)), 64)  # 3 GB claimed, 64 MiB of zeros follow
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_header((10,)) + bytes(10))
    refused_quickly(path, "MAX_ARRAY_BYTES")


def test_idx_size_check_cannot_wrap_around(tmp_path):
    """2^31 * 2^31 * 4 = 2^64 wraps to 0 in numpy's int64 product: a header-only file looked
    consistent. `math.prod` sees the real size."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header((2**31, 2**31, 4)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_header((1,)) + bytes(1))
    with pytest.raises(UsageError, match="MAX_ARRAY_BYTES"):
        read_idx(path)
    refused_quickly(path, "MAX_ARRAY_BYTES")


def test_npz_bomb_is_refused_from_the_npy_header(tmp_path):
    path = tmp_path / "bomb.npz"
    npz_bomb(path, (4_000_000, 28, 28), 64)
    refused_quickly(path, "MAX_ARRAY_BYTES")


def test_more_images_than_the_limit_is_refused(tmp_path):
    count = user_files.MAX_IMAGES + 1
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_header((count, 1, 1)) + bytes(count))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_header((count,)) + bytes(count))
    refused_quickly(tmp_path / "train-images-idx3-ubyte", "MAX_IMAGES")


def test_an_absurd_image_side_is_refused(tmp_path):
    np.savez(tmp_path / "wide.npz", x_train=np.zeros((20, 1, 100_000), np.uint8), y_train=np.arange(20) % 2)
    refused_quickly(tmp_path / "wide.npz", "MAX_SIDE")


def test_a_huge_label_is_refused_as_a_class_count(tmp_path):
    """A label of 2^31 - 1 would ask for an output layer of 2^31 units."""
    labels = np.arange(40) % 2
    labels[0] = 2**31 - 1
    np.savez(tmp_path / "labels.npz", x_train=np.zeros((40, 8, 8), np.uint8), y_train=labels)
    message = refused_quickly(tmp_path / "labels.npz", "MAX_CLASSES")
    assert "2147483648 classes" in message


def test_the_file_size_limit_is_checked_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(user_files, "MAX_FILE_BYTES", 1000, raising=False)
    x = np.zeros((40, 8, 8), np.uint8)
    np.savez(tmp_path / "big.npz", x_train=x, y_train=np.arange(40) % 2)
    refused_quickly(tmp_path / "big.npz", "MAX_FILE_BYTES")


def test_pixels_stay_integers_until_the_float32_split(tmp_path):
    """The only float copy is float32 (4 bytes a pixel); pixels / 255.0 made a float64 copy
    (8 bytes a pixel) of the whole file first."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4000, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=np.arange(4000) % 10)
    float32_bytes = x.size * 4
    tracemalloc.start()
    try:
        digits = load_user_images(tmp_path / "mine.npz", seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digits.train.images.dtype == np.float32
    assert peak < 1.75 * float32_bytes, f"peak {peak / float32_bytes:.2f} x the float32 size"
    assert {float(digits.train.images.min()), float(digits.train.images.max())} == {0.0, 1.0}


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    code = ("from dllab.data.user_files import load_user_images; from dllab.errors import UsageError\n"
            f"try:\n    load_user_images({str(fifo)!r})\nexcept UsageError as e:\n    print('REFUSED', e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in done.stdout and "not a regular file" in done.stdout, done.stderr[-500:]


@pytest.mark.parametrize("path", ["~no-such-user-dllab/x.npz", "a\0b.npz"])
def test_unusable_paths_are_usage_errors(path):
    with pytest.raises(UsageError):
        load_user_images(path)


def test_a_bomb_through_the_cli_is_exit_2_with_no_run_folder(tmp_path):
    pytest.importorskip("torch")  # the CNN of the command below
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(bomb, idx_header((2_000_000, 28, 28)), 1500)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_header((10,)) + bytes(10))
    status, out, err = run_cli("run", "supervised/cnn", "--framework", "torch", "--quick",
                               "--set", f"data={bomb}", cwd=tmp_path)
    assert status == 2, err[-800:]
    assert "MAX_ARRAY_BYTES" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_images_the_cnn_cannot_pool_are_a_usage_error_before_any_training(tmp_path):
    """The CNN's two 2x2 pools need sides divisible by 4: 10x10 images are refused with exit 2
    and no run folder, not a shape error inside the network."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ten.npz", x_train=rng.integers(0, 255, (300, 10, 10), dtype=np.uint8),
             y_train=rng.integers(0, 10, 300))
    done = subprocess.run([sys.executable, "-m", "dllab", "run", "supervised/cnn", "--quick", "--framework",
                           "torch", "--set", f"data={tmp_path / 'ten.npz'}", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "divisible by 4" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
