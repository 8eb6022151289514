"""``load``: argument checks, the real Fashion-MNIST, the bundled set and the ``auto`` fallback."""

import logging
import subprocess
import sys

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import bundled
from tests.data.conftest import real_fashion_mnist_dir


def test_unknown_name_and_source_list_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"name must be one of fashion_mnist, mnist, mnist_5k, "
        r"got 'cifar'",
    ):
        data.load("cifar")
    with pytest.raises(
        ValueError,
        match=r"source must be one of auto, idx, tfds, bundled, "
        r"got 'web'",
    ):
        data.load("mnist", source="web")


def test_idx_source_needs_a_directory(monkeypatch):
    monkeypatch.delenv("CNNJAX_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match=r"source 'idx' needs data_dir or \$CNNJAX_DATA_DIR"):
        data.load("fashion_mnist", source="idx")


def test_real_fashion_mnist_from_cnnjax_data_dir(monkeypatch):
    monkeypatch.setenv("CNNJAX_DATA_DIR", str(real_fashion_mnist_dir()))
    ds = data.load()  # auto: the directory in the environment wins
    assert (ds.name, ds.source) == ("fashion_mnist", "idx")
    assert ds.train_images.shape == (60_000, 28, 28, 1)
    assert ds.test_images.shape == (10_000, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(ds.train_labels), np.full(10, 6_000))
    np.testing.assert_array_equal(np.bincount(ds.test_labels), np.full(10, 1_000))
    assert ds.train_images.mean() / 255 == pytest.approx(0.286, abs=2e-3)
    assert ds.test_images.mean() / 255 == pytest.approx(0.286, abs=2e-3)
    assert ds.class_names[9] == "Ankle boot" and ds.num_classes == 10


def test_mnist_is_not_silently_read_from_fashion_mnist_files(monkeypatch):
    monkeypatch.setenv("CNNJAX_DATA_DIR", str(real_fashion_mnist_dir()))
    with pytest.raises(data.IDXError, match="of 'fashion_mnist', not of 'mnist'"):
        data.load("mnist")


def test_bundled_is_real_mnist_split_4000_1000_stratified():
    ds = data.load("mnist", source="bundled")
    assert (ds.name, ds.source, ds.image_shape) == ("mnist_5k", "bundled", (28, 28, 1))
    np.testing.assert_array_equal(np.bincount(ds.train_labels), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(ds.test_labels), np.full(10, 100))
    # Disjoint: no test image also in training (MNIST digits are all distinct images).
    train = {img.tobytes() for img in ds.train_images}
    assert not any(img.tobytes() in train for img in ds.test_images)
    # Real digits: mostly black background, ink near 255 (MNIST's mean is about 0.13).
    assert 0.10 < ds.train_images.mean() / 255 < 0.16
    assert ds.train_images.max() == 255 and np.median(ds.train_images) == 0
    # Deterministic.
    np.testing.assert_array_equal(data.load("mnist_5k").test_images, ds.test_images)


def test_split_mask_takes_every_fifth_of_each_class():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0])
    mask = bundled.split_mask(labels, test_every=3)
    # class 0 at 0,2,3,5,6,11 -> the 3rd and 6th (positions 3, 11); class 1 at 1,4,7,8,9,10 -> 7, 10
    np.testing.assert_array_equal(np.flatnonzero(mask), [3, 7, 10, 11])


def test_auto_falls_back_to_bundled_offline_with_one_warning(monkeypatch, tmp_path, caplog):
    # A fresh machine: no IDX directory, an empty tfds data dir, and no network (the
    # autouse no_network fixture makes host names unresolvable, as offline).
    monkeypatch.delenv("CNNJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="cnnjax.data"):
        ds = data.load()
    assert (ds.name, ds.source) == ("mnist_5k", "bundled")
    ours = [r for r in caplog.records if r.name.startswith("cnnjax.data")]
    assert len(ours) == 1 and ours[0].levelno == logging.WARNING
    message = ours[0].getMessage()
    assert "\n" not in message
    assert "'mnist_5k'" in message and "'fashion_mnist'" in message
    assert "CNNJAX_DATA_DIR" in message and "network" in message


def test_auto_prefers_the_tfds_cache_over_the_fallback(monkeypatch, prepared_tfds_dir):
    monkeypatch.delenv("CNNJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(prepared_tfds_dir[0]))
    ds = data.load("fashion_mnist")
    assert (ds.name, ds.source, ds.num_train) == ("fashion_mnist", "tfds", 30)


def test_explicit_data_dir_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNJAX_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "given")):
        data.load("fashion_mnist", data_dir=tmp_path / "given")


def test_bundled_only_names_and_sources():
    with pytest.raises(ValueError, match="'mnist_5k' is only available from source 'bundled'"):
        data.load("mnist_5k", source="tfds")


def test_importing_cnnjax_data_pulls_in_no_model_or_trainer_code():
    code = (
        "import sys, cnnjax.data; "
        "bad = [m for m in sys.modules if m.startswith(('cnnjax.models', 'cnnjax.train'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("source", ["idx", "auto", "tfds"])
def test_a_file_as_data_dir_is_refused_as_a_file_by_every_source(source, tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    prefix = "tfds: data_dir " if source == "tfds" else "idx: "
    with pytest.raises(NotADirectoryError, match=rf"^{prefix}{passwd} is a file, not a directory"):
        data.load("fashion_mnist", source=source, data_dir=passwd)
