"""Loading a data set through tensorflow-datasets, with or without TensorFlow.

D2L 6.6 downloads Fashion-MNIST with torchvision; here tensorflow-datasets (tfds) finds,
downloads and checks the data. What tfds can do depends on whether TensorFlow is installed
(measured with tfds 4.9.10):

* Reading prepared data needs no TensorFlow: ``tfds.data_source`` gives random access to data
  prepared in the ``array_record`` format.
* Preparing the MNIST family needs TensorFlow: tfds's builders decompress and read the archives
  with ``tf.io.gfile`` and encode each image with ``tf.image.encode_png``.
* tfds's download manager needs no TensorFlow: it downloads over HTTP, verifies the SHA-256
  that tfds registers for each archive, and reuses archives already downloaded, or placed by
  hand in ``<tfds data_dir>/downloads/manual/``.

So, in order: read prepared ``array_record`` data if it is there; else, with TensorFlow,
let tfds download and prepare it as ``array_record`` and read that; else fetch the four
archives with tfds's download manager and decode them with ``cnnjax.data.idx``. (Reading
prepared data decodes one PNG per example, ~0.4 ms each on a 2-core CPU, so ~30 s for
Fashion-MNIST; decoding the archives takes under a second. Prepared data keeps tfds's own
example order, which differs from the archives'.)

A download is attempted only after a quick probe that the archives' host (or the configured
HTTP proxy) accepts a TCP connection: without it an offline machine waits minutes in tfds's
HTTP retries (10 retries with exponential back-off, about 200 s measured) before failing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import pathlib
import posixpath
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

from cnnjax.data import idx, registry
from cnnjax.data.dataset import Dataset

PROBE_TIMEOUT_S = 5.0

_log = logging.getLogger(__name__)


class DataUnavailableError(RuntimeError):
    """The data set is not cached here and cannot be downloaded (no network)."""


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


def default_data_dir() -> str | None:
    """``$TFDS_DATA_DIR`` read now, so a change after tfds was imported still counts."""
    return os.environ.get("TFDS_DATA_DIR") or None


def load_tfds(
    spec: registry.DatasetSpec,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Loads ``spec`` through tfds (see the module docstring for the order of attempts).

    Args:
      spec: the data set; needs ``spec.tfds_name``.
      data_dir: tfds's data directory; default ``$TFDS_DATA_DIR``, else tfds's own default
        (``~/tensorflow_datasets``).
      download: if False, use only what is already on disk.

    Raises:
      ValueError: tfds does not have this data set, or its features are not what ``spec``
        says.
      NotADirectoryError: ``data_dir`` is a file.
      DataUnavailableError: not on disk, and ``download`` is False or the network is
        unreachable (probed before any download).
      OSError: the download failed for another reason (e.g. an HTTP error).
    """
    if spec.tfds_name is None:
        raise ValueError(f"load: data set {spec.name!r} is not available through tfds")
    data_dir = data_dir or default_data_dir()
    if data_dir is not None and pathlib.Path(data_dir).expanduser().is_file():
        # tfds would look under <file>/<name>/, find nothing and try to download.
        raise NotADirectoryError(
            f"tfds: data_dir {data_dir} is a file, not a directory; it must be tfds's data "
            f"directory (default $TFDS_DATA_DIR, else ~/tensorflow_datasets)"
        )
    import tensorflow_datasets as tfds  # Deferred: importing tfds takes ~0.6 s.

    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if _has_array_record(builder):
        return _read_prepared(spec, builder)
    if tensorflow_available() and not builder.is_prepared():
        if not _archives_on_disk(builder, builder.url_infos or {}):
            _require_download(builder, download)
        with _network_errors_as_unavailable(builder):
            builder.download_and_prepare(file_format="array_record")
        return _read_prepared(spec, builder)
    # No TensorFlow, or data prepared only as TFRecord (which has no random access).
    return _read_archives(spec, builder, tfds, download)


def _has_array_record(builder) -> bool:
    return builder.is_prepared() and "array_record" in {
        str(getattr(f, "value", f)) for f in builder.info.available_file_formats()
    }


def _read_prepared(spec: registry.DatasetSpec, builder) -> Dataset:
    """Both splits of a prepared data set, through tfds's random-access data source."""
    image_key, label_key = builder.info.supervised_keys
    class_names = tuple(builder.info.features[label_key].names)
    if class_names != spec.class_names:
        raise ValueError(
            f"load: tfds {spec.tfds_name!r} has classes {class_names}, expected {spec.class_names}"
        )
    sources = builder.as_data_source(split=["train", "test"])
    splits = []
    for source in sources:
        # One record at a time: tfds 4.9.10's mock data source breaks ``__getitems__``, and
        # records are decoded one by one either way.
        records = [source[i] for i in range(len(source))]
        images = np.stack([r[image_key] for r in records]).astype(np.uint8, copy=False)
        labels = np.asarray([r[label_key] for r in records], dtype=np.int32)
        if images.shape[1:] != spec.image_shape:
            raise ValueError(
                f"load: tfds {spec.tfds_name!r} images are {images.shape[1:]}, "
                f"expected {spec.image_shape}"
            )
        splits.append((images, labels))
    _log.info("Loaded %s from tfds data in %s", spec.name, builder.data_dir)
    return Dataset(
        name=spec.name,
        source="tfds",
        train_images=splits[0][0],
        train_labels=splits[0][1],
        test_images=splits[1][0],
        test_labels=splits[1][1],
        class_names=class_names,
    )


def _read_archives(spec: registry.DatasetSpec, builder, tfds, download: bool) -> Dataset:
    """Fetches the four IDX archives with tfds's download manager and decodes them."""
    if spec.idx_files is None:
        raise DataUnavailableError(
            f"load: {spec.name!r} is not prepared in {builder.data_dir}, and preparing it "
            "needs TensorFlow (pip install tensorflow)"
        )
    by_file = {posixpath.basename(urllib.parse.urlparse(u).path): u for u in builder.url_infos}
    wanted = [f"{base}.gz" for base in dataclasses.astuple(spec.idx_files)]
    missing = [f for f in wanted if f not in by_file]
    if missing:
        raise ValueError(f"load: tfds {spec.tfds_name!r} registers no URL for {missing}")
    urls = {f: by_file[f] for f in wanted}
    if not _archives_on_disk(builder, urls.values()):
        _require_download(builder, download)
    download_dir = _download_dir(builder)
    manager = tfds.download.DownloadManager(
        download_dir=download_dir,
        manual_dir=download_dir / "manual",
        url_infos=builder.url_infos,
        dataset_name=builder.name,
    )
    # Checksums are verified against tfds's registry, for downloads and manual files alike.
    with _network_errors_as_unavailable(builder):
        paths = manager.download(urls)
    dataset = idx.load_idx_files(
        spec,
        train_images=paths[wanted[0]],
        train_labels=paths[wanted[1]],
        test_images=paths[wanted[2]],
        test_labels=paths[wanted[3]],
        source="tfds",
    )
    _log.info("Loaded %s from tfds downloads in %s", spec.name, download_dir)
    return dataset


def _download_dir(builder) -> pathlib.Path:
    """Where tfds keeps downloads for ``builder`` (its default, ``<data_dir>/downloads``)."""
    return pathlib.Path(builder.data_dir_root) / "downloads"


def _archives_on_disk(builder, urls) -> bool:
    """Whether tfds's download manager would find every one of ``urls`` without a network."""
    from tensorflow_datasets.core.download import resource as tfds_resource

    download_dir = _download_dir(builder)
    for url in urls:
        info = builder.url_infos[url]
        if info.filename and (download_dir / "manual" / info.filename).is_file():
            continue
        fname = tfds_resource.get_dl_fname(url, info.checksum)
        # Where tfds puts downloads now (per data set), and where older versions put them.
        if not any(
            tfds_resource.is_locally_cached(d / fname)
            for d in (download_dir / builder.name, download_dir)
        ):
            return False
    return True


def _require_download(builder, download: bool) -> None:
    """Raises DataUnavailableError unless a download may and can be attempted now."""
    if not download:
        raise DataUnavailableError(
            f"load: {builder.name} is not in the tfds data directory {builder.data_dir_root} "
            "and download=False"
        )
    for host, port in sorted({_connect_target(url) for url in builder.url_infos or ()}):
        if not reachable(host, port):
            raise DataUnavailableError(
                f"load: cannot download {builder.name}: no connection to {host}:{port} "
                f"within {PROBE_TIMEOUT_S:g} s (offline?)"
            )


@contextlib.contextmanager
def _network_errors_as_unavailable(builder):
    """Turns a connection lost during a download into DataUnavailableError."""
    import requests  # A dependency of tfds; its errors are what tfds's downloads raise.

    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as e:
        raise DataUnavailableError(f"load: downloading {builder.name} failed: {e}") from e


def _connect_target(url: str) -> tuple[str, int]:
    """The (host, port) a download of ``url`` connects to, honouring HTTP(S) proxy settings."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname, parts.port or default_port


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

    Runs in a daemon thread because name resolution has no timeout of its own.
    """
    outcome: list[bool] = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=attempt, name=f"probe {host}:{port}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome) and outcome[0]
