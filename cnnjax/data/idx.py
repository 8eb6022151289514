"""The IDX format of MNIST-style data sets, and loading a directory of IDX files.

D2L 6.6 reads Fashion-MNIST through torchvision; the files underneath are four IDX files
(``train-images-idx3-ubyte.gz`` and friends). An IDX file is a big-endian header, magic number
``0x0000TTDD`` (``TT`` the element type, ``DD`` the number of dimensions) followed by ``DD``
uint32 sizes, then the elements in C order. Images are magic 2051 (uint8, 3 dims), labels 2049
(uint8, 1 dim). Files may be gzip-compressed or not; the content decides, not the name.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import pathlib
import struct
import zlib

import numpy as np

from cnnjax.data import registry
from cnnjax.data.dataset import Dataset

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# Element type code (third header byte) -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_log = logging.getLogger(__name__)


class IDXError(ValueError):
    """An IDX file is truncated, corrupt, or not the file that was expected."""


def decode_idx(raw: bytes, *, name: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decodes the content of one IDX file, gzip-compressed or not.

    Args:
      raw: the file's bytes.
      name: what to call the file in error messages (its path).
      magic: if given, the magic number the file must have (``IMAGES_MAGIC``/``LABELS_MAGIC``).

    Returns:
      The array, shape as the header says, native byte order. uint8 data is a read-only view.

    Raises:
      IDXError: truncated or corrupt gzip stream, header too short, zero bytes where the magic
        number needs them, unknown element type, wrong magic number, or a payload shorter or
        longer than the header's dimensions say.
    """
    return _parse(_gunzip(raw, name), name, magic)


def _gunzip(raw: bytes, name: str) -> bytes:
    """``raw`` decompressed if it is a gzip stream, else ``raw`` itself."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IDXError(
            f"{name}: truncated gzip stream ({len(raw)} bytes); the file is incomplete"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise IDXError(f"{name}: corrupt gzip data ({e})") from None


def _parse(raw: bytes, name: str, magic: int | None) -> np.ndarray:
    """Decodes uncompressed IDX bytes; see ``decode_idx``."""
    if len(raw) < 4:
        raise IDXError(f"{name}: truncated, {len(raw)} bytes is shorter than the IDX magic number")
    (file_magic,) = struct.unpack(">I", raw[:4])
    if magic is not None and file_magic != magic:
        raise IDXError(
            f"{name}: wrong magic number {file_magic} (0x{file_magic:08x}), expected {magic} "
            f"({_describe_magic(magic)})"
        )
    zero, type_code, ndim = file_magic >> 16, (file_magic >> 8) & 0xFF, file_magic & 0xFF
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise IDXError(f"{name}: not an IDX file (magic number 0x{file_magic:08x})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IDXError(f"{name}: truncated header, {len(raw)} bytes for {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got < expected:
        raise IDXError(
            f"{name}: truncated, header says {'x'.join(map(str, shape))} "
            f"({expected} bytes of data) but only {got} bytes follow"
        )
    if got > expected:
        raise IDXError(
            f"{name}: {got - expected} unexpected bytes after the "
            f"{'x'.join(map(str, shape))} data the header describes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or not); see ``decode_idx``."""
    path = pathlib.Path(path)
    return decode_idx(path.read_bytes(), name=str(path), magic=magic)


def _describe_magic(magic: int) -> str:
    return {IMAGES_MAGIC: "IDX images", LABELS_MAGIC: "IDX labels"}.get(magic, "IDX")


def resolve_dir(data_dir: str | os.PathLike, name: str) -> pathlib.Path:
    """``data_dir/name`` if that directory exists, else ``data_dir`` itself.

    So one ``CNNJAX_DATA_DIR`` can hold several data sets, one per sub-directory, or be the
    directory of the four files of one data set.
    """
    data_dir = pathlib.Path(data_dir).expanduser()
    sub = data_dir / name
    return sub if sub.is_dir() else data_dir


def _find_file(directory: pathlib.Path, base: str, all_names: tuple[str, ...]) -> pathlib.Path:
    for candidate in (directory / f"{base}.gz", directory / base):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"idx: missing file {directory / (base + '.gz')} (or uncompressed {base}); "
        f"the directory must hold {', '.join(n + '.gz' for n in all_names)}"
    )


def _read_checked(
    path: pathlib.Path, spec: registry.DatasetSpec, magic: int
) -> tuple[np.ndarray, bool]:
    """The array in ``path``, and whether its content is one of ``spec``'s registered files.

    Identified by the SHA-256 of the uncompressed bytes, so neither the compression level nor
    whether the file is compressed at all changes the verdict.
    """
    content = _gunzip(path.read_bytes(), str(path))
    origin = registry.identify_content(hashlib.sha256(content).hexdigest())
    if origin is not None and origin[0] != spec.name:
        raise IDXError(
            f"{path}: this is the {origin[1]} file of {origin[0]!r}, not of {spec.name!r} "
            f"(identified by the SHA-256 of its uncompressed content); point data_dir / "
            f"CNNJAX_DATA_DIR at the {spec.name} files"
        )
    return _parse(content, str(path), magic), origin is not None


def _check_split(spec, images_path, images, labels_path, labels, expected_count):
    height, width, channels = spec.image_shape
    if channels != 1 or images.shape[1:] != (height, width):
        raise IDXError(
            f"{images_path}: images must be {height}x{width} with 1 channel, got "
            f"{'x'.join(map(str, images.shape[1:]))}"
        )
    if len(images) != expected_count:
        raise IDXError(f"{images_path}: expected {expected_count} images, got {len(images)}")
    if len(labels) != len(images):
        raise IDXError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images in "
            f"{images_path.name} (count mismatch)"
        )
    if len(labels) and labels.max() >= spec.num_classes:
        raise IDXError(
            f"{labels_path}: labels must lie in [0, {spec.num_classes}), found {labels.max()}"
        )
    return images[..., None], labels.astype(np.int32)


def load_idx_files(
    spec: registry.DatasetSpec,
    *,
    train_images: str | os.PathLike,
    train_labels: str | os.PathLike,
    test_images: str | os.PathLike,
    test_labels: str | os.PathLike,
    source: str = "idx",
) -> Dataset:
    """Loads ``spec`` from four IDX files, each gzip-compressed or not.

    Verifies, for each file: gzip integrity (when compressed), the magic number (2051 images,
    2049 labels), the image size ``spec.image_shape``, the split size ``spec.num_train`` /
    ``spec.num_test``, as many labels as images, labels below ``spec.num_classes``, and that
    the file does not hold another registered data set's data (MNIST and Fashion-MNIST use the
    same file names). Files are identified by the SHA-256 of their uncompressed content
    (``DatasetSpec.content_sha256``), so compressed or not, at any gzip level, Fashion-MNIST
    is Fashion-MNIST. Files that pass every check but match no registered data set are loaded
    as ``spec`` with a warning that names them.

    Returns:
      A ``Dataset`` whose images are ``(N, H, W, 1)`` uint8 and labels ``(N,)`` int32.

    Raises:
      IDXError: a file fails a check above; the message names the file and what is wrong.
    """
    paths = [pathlib.Path(p) for p in (train_images, train_labels, test_images, test_labels)]
    arrays, unidentified = [], []
    for path, magic in zip(paths, (IMAGES_MAGIC, LABELS_MAGIC) * 2):
        array, identified = _read_checked(path, spec, magic)
        arrays.append(array)
        if not identified:
            unidentified.append(str(path))
    train = _check_split(spec, paths[0], arrays[0], paths[1], arrays[1], spec.num_train)
    test = _check_split(spec, paths[2], arrays[2], paths[3], arrays[3], spec.num_test)
    if spec.content_sha256 and unidentified:
        # Not an error: a corrected or relabelled copy is legitimate, and every check above
        # passed. But the data is not known to be spec's, so say so instead of vouching for it.
        _log.warning(
            "idx: %s: not the published %r files (the content matches no registered data "
            "set); loading them as %r, as asked",
            ", ".join(unidentified),
            spec.name,
            spec.name,
        )
    return Dataset(
        name=spec.name,
        source=source,
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        class_names=spec.class_names,
    )


def load_idx(spec: registry.DatasetSpec, data_dir: str | os.PathLike) -> Dataset:
    """Loads ``spec``'s four IDX files from ``data_dir`` (see ``resolve_dir``).

    Each file may be ``<name>.gz`` or uncompressed ``<name>``; ``load_idx_files`` lists the
    checks.

    Raises:
      ValueError: ``spec`` has no IDX files.
      NotADirectoryError: ``data_dir`` is a file.
      FileNotFoundError: ``data_dir`` or one of the four files is missing.
      IDXError: a file is truncated, corrupt or wrong; the message names the file.
    """
    if spec.idx_files is None:
        raise ValueError(f"load: data set {spec.name!r} is not available as IDX files")
    root = pathlib.Path(data_dir).expanduser()
    bases = dataclasses.astuple(spec.idx_files)
    if root.is_file():
        # Pointing at one of the files is an easy slip: name the directory that holds it.
        own = root.name.removesuffix(".gz") in bases
        raise NotADirectoryError(
            f"idx: {root} is a file, not a directory; data_dir / CNNJAX_DATA_DIR "
            f"(config.data.dir) must be the directory holding the four IDX files of "
            f"{spec.name!r} ({', '.join(b + '.gz' for b in bases)}, or uncompressed)"
            + (f"; this file has one of those names, its directory is {root.parent}" if own else "")
        )
    if not root.is_dir():
        raise FileNotFoundError(f"idx: data directory {root} does not exist")
    directory = resolve_dir(root, spec.name)
    found = [_find_file(directory, base, bases) for base in bases]
    dataset = load_idx_files(
        spec,
        train_images=found[0],
        train_labels=found[1],
        test_images=found[2],
        test_labels=found[3],
    )
    _log.info("Loaded %s from IDX files in %s", spec.name, directory)
    return dataset
