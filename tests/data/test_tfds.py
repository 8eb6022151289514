"""The ``tfds`` source, run through real tensorflow-datasets code with TensorFlow absent."""

import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager

from cnnjax import data
from cnnjax.data import tfds_source
from tests.data.conftest import IDX_NAMES, real_fashion_mnist_dir

FASHION_CLASSES = data.get_spec("fashion_mnist").class_names


def test_reads_prepared_array_record_data(prepared_tfds_dir):
    data_dir, splits = prepared_tfds_dir
    ds = data.load("fashion_mnist", source="tfds", data_dir=data_dir)
    assert (ds.name, ds.source, ds.class_names) == ("fashion_mnist", "tfds", FASHION_CLASSES)
    for split in ("train", "test"):
        # tfds stores examples in an order of its own (it shuffles by key while preparing).
        images, labels = splits[split]
        written = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
        got_images, got_labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        assert got_labels.dtype == np.int32 and got_images.dtype == np.uint8
        assert len(got_labels) == len(labels)
        assert {img.tobytes(): int(lab) for img, lab in zip(got_images, got_labels)} == written


def test_under_tfds_mock_data(prepared_tfds_dir):
    # mock_data replaces what tfds reads from disk with random examples; everything from
    # tfds.builder to the data source's records, and all of our code, runs for real.
    data_dir, splits = prepared_tfds_dir
    with tfds.testing.mock_data(
        num_examples=7, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=os.fspath(data_dir)
    ):
        ds = data.load("fashion_mnist", source="tfds", data_dir=data_dir)
    assert ds.num_train == ds.num_test == 7
    assert ds.train_images.shape == (7, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10
    assert ds.class_names == FASHION_CLASSES
    assert not np.array_equal(ds.train_images, splits["train"][0][:7])  # mocked, not on disk


def test_download_manager_accepts_the_real_archives_as_manual_downloads(tmp_path):
    # tfds's download manager takes files in <data_dir>/downloads/manual/ as already
    # downloaded and checks them against the SHA-256 tfds registers: no network, no TF.
    real = real_fashion_mnist_dir()
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in IDX_NAMES:
        (manual / name).symlink_to(real / name)
    ds = data.load("fashion_mnist", source="tfds", data_dir=tmp_path)
    assert (ds.source, ds.num_train, ds.num_test) == ("tfds", 60_000, 10_000)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), np.full(10, 1_000))


def test_a_manual_archive_with_the_wrong_checksum_is_rejected_by_tfds(tmp_path):
    real = real_fashion_mnist_dir()
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in IDX_NAMES:
        (manual / name).symlink_to(real / name)
    (manual / IDX_NAMES[3]).unlink()
    (manual / IDX_NAMES[3]).write_bytes((real / IDX_NAMES[3]).read_bytes()[:-1])
    with pytest.raises(download_manager.NonMatchingChecksumError):
        data.load("fashion_mnist", source="tfds", data_dir=tmp_path)


def test_offline_without_cache_fails_fast(tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailableError, match="cannot download fashion_mnist"):
        data.load("fashion_mnist", source="tfds", data_dir=tmp_path)
    assert time.perf_counter() - start < 10  # tfds's own retries would take minutes


def test_download_false_uses_only_the_disk(tmp_path):
    spec = data.get_spec("mnist")
    with pytest.raises(data.DataUnavailableError, match="download=False"):
        tfds_source.load_tfds(spec, data_dir=tmp_path, download=False)


def test_probe_sees_a_listening_and_a_closed_local_port():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert tfds_source.reachable("127.0.0.1", port, timeout=2)
    assert not tfds_source.reachable("127.0.0.1", port, timeout=2)


def test_probe_honours_proxy_settings(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert tfds_source._connect_target("http://host.example/a.gz") == ("proxy.example", 3128)
    assert tfds_source._connect_target("https://host.example/a.gz") == ("host.example", 443)


def test_tensorflow_is_not_needed_here():
    # These tests are meant to prove the TF-free path; say so if TF shows up.
    assert not tfds_source.tensorflow_available(), "TensorFlow is installed in this venv"


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_registry_checksums_match_the_ones_tfds_registers(name, tmp_path):
    spec = data.get_spec(name)
    builder = tfds.builder(spec.tfds_name, data_dir=tmp_path)
    registered = {info.filename: info.checksum for info in builder.url_infos.values()}
    assert registered == dict(spec.archive_sha256)
    assert tuple(builder.info.features["label"].names) == spec.class_names
