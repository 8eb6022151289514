"""Which data set a directory of IDX files holds, whatever its compression.

MNIST and Fashion-MNIST ship under the same four file names and sizes, so only the content can
tell them apart. These tests copy the real files into ``tmp_path`` uncompressed and re-gzipped
at another level (so the archives' own SHA-256 no longer matches) and load them both as what
they are and as the other data set.
"""

import dataclasses
import gzip
import hashlib
import logging

import pytest

from cnnjax import data
from cnnjax.data import idx, registry
from tests.data.conftest import IDX_NAMES, real_fashion_mnist_dir, real_mnist_dir
from tests.data.test_idx import SMALL, write_set

REAL_DIRS = {"fashion_mnist": real_fashion_mnist_dir, "mnist": real_mnist_dir}
OTHER = {"fashion_mnist": "mnist", "mnist": "fashion_mnist"}
FORMS = ("plain", "gzip-1")


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """``{(data set, form): directory}``: the real files uncompressed ("plain") and re-gzipped
    at level 1 ("gzip-1"), each form in its own directory."""
    out = {}
    for name, real_dir in REAL_DIRS.items():
        real = real_dir()
        for form in FORMS:
            directory = tmp_path_factory.mktemp(f"{name}-{form}")
            for fname in IDX_NAMES:
                raw = gzip.decompress((real / fname).read_bytes())
                if form == "plain":
                    (directory / fname.removesuffix(".gz")).write_bytes(raw)
                else:
                    (directory / fname).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
            out[name, form] = directory
    return out


@pytest.mark.parametrize("name", sorted(REAL_DIRS))
def test_registered_digests_are_those_of_the_real_files(name):
    real, spec = REAL_DIRS[name](), data.get_spec(name)
    for fname in IDX_NAMES:
        raw = (real / fname).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == spec.archive_sha256[fname]
        content = hashlib.sha256(gzip.decompress(raw)).hexdigest()
        assert content == spec.content_sha256[fname.removesuffix(".gz")]
        assert registry.identify_content(content) == (name, fname.removesuffix(".gz"))
    assert registry.identify_content(hashlib.sha256(b"").hexdigest()) is None


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(REAL_DIRS))
def test_a_recompressed_or_plain_copy_is_identified_by_its_content(copies, name, form, caplog):
    directory = copies[name, form]
    # The archives' digests no longer match: only the content can identify these files.
    first = next(p for p in directory.iterdir() if p.name.startswith("train-images"))
    assert hashlib.sha256(first.read_bytes()).hexdigest() not in set(
        data.get_spec(name).archive_sha256.values()
    )
    with caplog.at_level(logging.WARNING, logger="cnnjax.data"):
        ds = data.load(name, source="idx", data_dir=directory)
    assert (ds.name, ds.num_train, ds.num_test) == (name, 60_000, 10_000)
    assert not caplog.records  # identified: nothing to warn about
    other = OTHER[name]
    with pytest.raises(
        data.IDXError,
        match=rf"train-images-idx3-ubyte(\.gz)?: this is the train-images-idx3-ubyte file of "
        rf"'{name}', not of '{other}' \(identified by the SHA-256 of its uncompressed content\); "
        rf"point data_dir / CNNJAX_DATA_DIR at the {other} files",
    ):
        data.load(other, source="idx", data_dir=directory)


@pytest.mark.parametrize("form", ("original", *FORMS))
def test_one_file_of_another_data_set_is_refused(tmp_path, form):
    """A single MNIST label file among small test files, in any compression, is caught."""
    raw = (real_mnist_dir() / IDX_NAMES[1]).read_bytes()
    write_set(tmp_path)
    target = tmp_path / IDX_NAMES[1]
    if form == "plain":
        target.unlink()
        target = tmp_path / IDX_NAMES[1].removesuffix(".gz")
        raw = gzip.decompress(raw)
    elif form == "gzip-1":
        raw = gzip.compress(gzip.decompress(raw), compresslevel=1, mtime=0)
    target.write_bytes(raw)
    with pytest.raises(
        data.IDXError,
        match=rf"{target.name}: this is the train-labels-idx1-ubyte file of 'mnist', "
        r"not of 'small'",
    ):
        idx.load_idx(SMALL, tmp_path)


def test_files_no_data_set_is_known_by_are_loaded_as_asked_and_named_in_a_warning(tmp_path, caplog):
    # A spec with registered contents that these random files do not match: loaded, but the
    # warning names each file, rather than vouching for them.
    known = dataclasses.replace(SMALL, content_sha256=data.get_spec("mnist").content_sha256)
    write_set(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cnnjax.data"):
        ds = idx.load_idx(known, tmp_path)
    assert ds.name == "small"
    (record,) = caplog.records
    message = record.getMessage()
    for fname in IDX_NAMES:
        assert str(tmp_path / fname) in message
    assert "not the published 'small' files (the content matches no registered data set)" in (
        message
    )
    # A spec that registers no contents has nothing to compare with: no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnjax.data"):
        idx.load_idx(dataclasses.replace(known, content_sha256={}), tmp_path)
    assert not caplog.records
