"""The IDX reader and the ``idx`` source, on files the tests write byte by byte."""

import dataclasses
import gzip
import pathlib
import struct

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import idx, registry
from tests.data.conftest import IDX_NAMES, tiny_images

SMALL = dataclasses.replace(
    registry.get_spec("fashion_mnist"),
    name="small",
    num_train=30,
    num_test=20,
    archive_sha256={},
    content_sha256={},
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding written out here from the format's definition, independent of the reader."""
    big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def write_set(directory: pathlib.Path, compress=True, train=None, test=None, names=IDX_NAMES):
    """Writes the four IDX files of a small data set; returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    train = train or tiny_images(30, seed=3)
    test = test or tiny_images(20, seed=4)
    contents = [train[0][..., 0], train[1], test[0][..., 0], test[1]]
    for fname, array in zip(names, contents):
        raw = idx_bytes(array)
        if compress:
            (directory / fname).write_bytes(gzip.compress(raw))
        else:
            (directory / fname.removesuffix(".gz")).write_bytes(raw)
    return train, test


@pytest.mark.parametrize(
    "type_code, dtype",
    [(0x08, np.uint8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
@pytest.mark.parametrize("compress", [True, False])
def test_decode_idx_roundtrips_every_element_type(type_code, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    raw = idx_bytes(array, type_code)
    decoded = data.decode_idx(gzip.compress(raw) if compress else raw)
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, array)


def test_load_idx_reads_gzip_and_plain_files(tmp_path):
    train, test = write_set(tmp_path / "gz")
    write_set(tmp_path / "plain", compress=False, train=train, test=test)
    for directory in ("gz", "plain"):
        ds = idx.load_idx(SMALL, tmp_path / directory)
        assert ds.source == "idx" and ds.name == "small"
        assert ds.train_images.shape == (30, 28, 28, 1) and ds.train_images.dtype == np.uint8
        assert ds.train_labels.dtype == np.int32
        np.testing.assert_array_equal(ds.train_images, train[0])
        np.testing.assert_array_equal(ds.train_labels, train[1])
        np.testing.assert_array_equal(ds.test_images, test[0])
        np.testing.assert_array_equal(ds.test_labels, test[1])


def test_load_idx_prefers_a_subdirectory_named_after_the_data_set(tmp_path):
    write_set(tmp_path, train=tiny_images(30, seed=5))
    train, _ = write_set(tmp_path / "small", train=tiny_images(30, seed=6))
    np.testing.assert_array_equal(idx.load_idx(SMALL, tmp_path).train_images, train[0])


def test_truncated_gzip_names_the_file(tmp_path):
    write_set(tmp_path)
    path = tmp_path / IDX_NAMES[0]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.IDXError, match=rf"{path}: truncated gzip stream"):
        idx.load_idx(SMALL, tmp_path)


def test_corrupt_gzip_is_reported(tmp_path):
    write_set(tmp_path)
    path = tmp_path / IDX_NAMES[2]
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # inside the CRC/size trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(data.IDXError, match=rf"{path}: corrupt gzip data"):
        idx.load_idx(SMALL, tmp_path)


def test_truncated_payload_says_how_much_is_missing(tmp_path):
    write_set(tmp_path, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-28])
    with pytest.raises(data.IDXError, match=rf"{path}: truncated, header says 20x28x28"):
        idx.load_idx(SMALL, tmp_path)


def test_trailing_bytes_are_rejected(tmp_path):
    write_set(tmp_path, compress=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0\0\0")
    with pytest.raises(data.IDXError, match=rf"{path}: 3 unexpected bytes"):
        idx.load_idx(SMALL, tmp_path)


def test_wrong_magic_number(tmp_path):
    # Labels where the images should be: a valid IDX file with magic 2049, not 2051.
    write_set(tmp_path)
    (tmp_path / IDX_NAMES[0]).write_bytes((tmp_path / IDX_NAMES[1]).read_bytes())
    with pytest.raises(
        data.IDXError,
        match=r"train-images-idx3-ubyte.gz: wrong magic number "
        r"2049 .* expected 2051",
    ):
        idx.load_idx(SMALL, tmp_path)


def test_not_an_idx_file(tmp_path):
    with pytest.raises(data.IDXError, match=r"x.bin: not an IDX file"):
        data.decode_idx(b"\x89PNG\r\n\x1a\n", name="x.bin")


def test_count_mismatch_between_images_and_labels(tmp_path):
    train = tiny_images(30, seed=7)
    write_set(tmp_path, train=(train[0], train[1][:29]))
    with pytest.raises(
        data.IDXError,
        match=r"train-labels-idx1-ubyte.gz: 29 labels for the 30 "
        r"images .*count mismatch",
    ):
        idx.load_idx(SMALL, tmp_path)


def test_split_size_is_checked(tmp_path):
    write_set(tmp_path, test=tiny_images(19, seed=8))
    with pytest.raises(
        data.IDXError,
        match=r"t10k-images-idx3-ubyte.gz: expected 20 images, "
        r"got 19",
    ):
        idx.load_idx(SMALL, tmp_path)


def test_label_range_is_checked(tmp_path):
    images, labels = tiny_images(30, seed=9)
    labels = labels.copy()
    labels[3] = 10
    write_set(tmp_path, train=(images, labels))
    with pytest.raises(
        data.IDXError,
        match=r"train-labels-idx1-ubyte.gz: labels must lie in "
        r"\[0, 10\), found 10",
    ):
        idx.load_idx(SMALL, tmp_path)


def test_missing_file_and_directory(tmp_path):
    write_set(tmp_path)
    (tmp_path / IDX_NAMES[3]).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing file .*t10k-labels-idx1-ubyte.gz"):
        idx.load_idx(SMALL, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        idx.load_idx(SMALL, tmp_path / "nowhere")


def test_a_file_given_as_the_data_directory_is_named_as_such(tmp_path):
    # Any file (think data_dir=/etc/passwd): the message says what it is and what is wanted.
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    wanted = (
        r"the four IDX files of 'small' \(train-images-idx3-ubyte.gz, "
        r"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
        r"or uncompressed\)"
    )
    with pytest.raises(
        NotADirectoryError,
        match=rf"^idx: {passwd} is a file, not a directory; data_dir / CNNJAX_DATA_DIR "
        rf"\(config.data.dir\) must be the directory holding {wanted}$",
    ):
        idx.load_idx(SMALL, passwd)
    # One of the data set's own files: the message also names the directory that holds it.
    write_set(tmp_path / "set")
    archive = tmp_path / "set" / IDX_NAMES[0]
    with pytest.raises(
        NotADirectoryError,
        match=rf"^idx: {archive} is a file, .*{wanted}; this file has one of those names, its "
        rf"directory is {archive.parent}$",
    ):
        idx.load_idx(SMALL, archive)
