"""Device-resident batching: a whole split on the accelerator, batches gathered by index.

D2L 6.6 iterates a PyTorch ``DataLoader`` that copies every minibatch from the host. Here a
split is copied to the device once (Fashion-MNIST's 70,000 images are 55 MB as uint8) and
normalised there; an epoch is a ``(steps, batch)`` array of indices from a per-epoch
permutation, so a whole epoch can run inside one compiled ``lax.scan`` with no host round
trips::

    train = to_device(ds.train_images, ds.train_labels)
    idx = epoch_indices(epoch_key(seed, epoch), len(train.labels), batch_size)  # (S, B)
    def step(state, batch_idx):
        x, y = gather(train, batch_idx)  # (B, H, W, C) float32, (B,) int32
        ...
    state, _ = jax.lax.scan(step, state, idx)

Training drops the last partial batch (the permutation changes every epoch, so every example
is still seen); evaluation pads it and masks the padding, so each example counts exactly once.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATIONS = ("unit", "standardize")


class NormalizationError(ValueError):
    """The requested normalisation cannot be applied: ``"standardize"`` with a std that is
    zero, negative or not finite (a channel whose pixels all have one value, e.g. all-black
    images, has a std of 0)."""


class DeviceSplit(NamedTuple):
    """One split on the device.

    Attributes:
      images: ``(N, H, W, C)`` float32, normalised.
      labels: ``(N,)`` int32.
    """

    images: jax.Array
    labels: jax.Array


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 ``images`` ``(N, H, W, C)`` on the 0..1
    scale, as float32 ``(C,)`` arrays: the statistics ``to_device(normalize="standardize")``
    takes. Compute them on the training split and use them for both splits. A channel whose
    pixels all have one value gets std 0, which ``to_device`` refuses (NormalizationError)."""
    images = _check_images("channel_stats", images)
    axes = (0, 1, 2)
    mean = images.mean(axis=axes, dtype=np.float64) / 255.0
    std = images.std(axis=axes, dtype=np.float64) / 255.0
    return mean.astype(np.float32), std.astype(np.float32)


def to_device(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    normalize: str = "unit",
    mean: float | Sequence[float] | np.ndarray | None = None,
    std: float | Sequence[float] | np.ndarray | None = None,
    device: jax.Device | jax.sharding.Sharding | None = None,
) -> DeviceSplit:
    """Copies a split to ``device`` once, as uint8, and normalises it there.

    Args:
      images: ``(N, H, W, C)`` uint8.
      labels: ``(N,)`` integer.
      normalize: ``"unit"``: ``x / 255`` in [0, 1] (what the book's ``ToTensor`` does);
        ``"standardize"``: ``(x / 255 - mean) / std``.
      mean, std: scalars or per-channel ``(C,)``, on the 0..1 scale; required by
        ``"standardize"`` (see ``channel_stats``), rejected otherwise.
      device: where to put the split: a device, or a sharding (e.g. replicated over a mesh;
        in a multi-process run every process passes the same arrays); default JAX's default
        device.

    Returns:
      ``DeviceSplit`` with float32 images and int32 labels on ``device``.

    Raises:
      TypeError: ``images`` is not uint8 or ``labels`` not integer.
      ValueError: bad ranks or lengths, unknown ``normalize``, or ``mean``/``std`` missing,
        superfluous or of the wrong size.
      NormalizationError (a ValueError): ``"standardize"`` with a ``std`` that is not positive
        and finite (0 for a channel with no spread, e.g. all-black images) or a non-finite
        ``mean``; the message names the channels (and, for a std of 0, suggests
        ``normalize="unit"``).
    """
    images = _check_images("to_device", images)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"to_device: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"to_device: labels must have shape ({len(images)},) to match images, "
            f"got {labels.shape}"
        )
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"to_device: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    channels = images.shape[-1]
    if normalize == "unit":
        if mean is not None or std is not None:
            raise ValueError("to_device: mean and std are only used with normalize='standardize'")
        mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    else:
        if mean is None or std is None:
            raise ValueError(
                "to_device: normalize='standardize' needs mean and std (see channel_stats)"
            )
        mean = _per_channel("mean", mean, channels)
        std = _per_channel("std", std, channels)
        _check_stats(mean, std)
    images_u8 = jax.device_put(images, device)
    labels_i32 = jax.device_put(labels.astype(np.int32), device)
    return DeviceSplit(_normalize(images_u8, mean, std), labels_i32)


@jax.jit
def _normalize(images_u8: jax.Array, mean: np.ndarray, std: np.ndarray) -> jax.Array:
    return (images_u8.astype(jnp.float32) / 255.0 - mean) / std


def _check_stats(mean: np.ndarray, std: np.ndarray) -> None:
    """Raises NormalizationError unless every channel's std is positive and finite, and every
    mean finite: "standardize" divides by the std, and 0 gives inf / NaN inputs."""
    for name, values, bad in (
        ("mean", mean, ~np.isfinite(mean)),
        ("std", std, ~(np.isfinite(std) & (std > 0))),
    ):
        if not bad.any():
            continue
        channels = np.flatnonzero(bad)
        where = f"channel{'s' if len(channels) > 1 else ''} {', '.join(map(str, channels))}"
        if name == "std" and np.all(values[channels] == 0):
            why = (
                " (a channel whose pixels all have one value, e.g. all-black images, has no "
                "spread to divide by); use normalize='unit' instead"
            )
        else:
            why = "; pass the channel_stats of the training images"
        raise NormalizationError(
            f"to_device: normalize='standardize' needs a finite{' positive' * (name == 'std')} "
            f"{name} per channel, got {name}={values[channels].tolist()} for {where}{why}"
        )


def _check_images(op: str, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"{op}: images must be uint8, got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{op}: images must be (N, H, W, C), got shape {images.shape}")
    return images


def _per_channel(name: str, value, channels: int) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 0:
        value = np.full(channels, value, np.float32)
    if value.shape != (channels,):
        raise ValueError(
            f"to_device: {name} must be a scalar or have shape ({channels},), got {value.shape}"
        )
    return value


def _static_int(op: str, name: str, value, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{op}: {name} must be a static Python int, got {type(value).__name__}"
        ) from None
    if value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value


def epoch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Shuffled training batches for one epoch, as indices.

    Args:
      key: PRNG key for this epoch (see ``epoch_key``); may be traced.
      num_examples: N, a static Python int.
      batch_size: B, a static Python int, ``1 <= B <= N``.

    Returns:
      ``(N // B, B)`` int32: a random permutation of ``range(N)`` cut into batches. The last
      ``N % B`` examples of the permutation are dropped (a different set each epoch), so every
      batch is full and each example appears at most once per epoch.

    Raises:
      TypeError: ``num_examples`` or ``batch_size`` is not a static int.
      ValueError: ``batch_size`` is not in ``[1, num_examples]``.
    """
    num_examples = _static_int("epoch_indices", "num_examples", num_examples, 1)
    batch_size = _static_int("epoch_indices", "batch_size", batch_size, 1)
    if batch_size > num_examples:
        raise ValueError(
            f"epoch_indices: batch_size must be <= num_examples ({num_examples}), got {batch_size}"
        )
    return _permuted_batches(key, num_examples, batch_size)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _permuted_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    # Jitted so that a per-epoch call from Python reuses one compiled permutation.
    steps = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def eval_indices(num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Evaluation batches in order, the last one padded.

    Args:
      num_examples: N, a static Python int >= 1.
      batch_size: B, a static Python int >= 1.

    Returns:
      ``(idx, mask)``, both ``(S, B)`` with ``S = ceil(N / B)``: ``idx`` int32 and ``mask``
      bool. Where ``mask`` is True, ``idx`` runs through ``0 .. N-1`` once each, in order; the
      padding (``mask`` False) repeats index ``N - 1`` and must be masked out of any sum.

    Raises:
      TypeError, ValueError: as ``epoch_indices``.
    """
    num_examples = _static_int("eval_indices", "num_examples", num_examples, 1)
    batch_size = _static_int("eval_indices", "batch_size", batch_size, 1)
    steps = -(-num_examples // batch_size)
    flat = jnp.arange(steps * batch_size, dtype=jnp.int32)
    mask = flat < num_examples
    idx = jnp.minimum(flat, num_examples - 1)
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def gather(split: DeviceSplit, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The examples of ``split`` at ``idx``.

    Args:
      split: images ``(N, H, W, C)``, labels ``(N,)``.
      idx: integer indices of shape ``(B,)`` (or any shape ``S``), values in ``[0, N)``.

    Returns:
      ``x``: ``(B, H, W, C)`` (``S + (H, W, C)``), ``y``: ``(B,)`` (``S``).
    """
    return split.images[idx], split.labels[idx]


def epoch_key(seed_or_key: int | jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The PRNG key of ``epoch``: ``fold_in(key, epoch)``.

    A function of the seed and the epoch number only, so a run resumed at epoch ``e``
    replays the shuffling it would have had. ``seed_or_key`` is an int seed (turned into
    ``jax.random.key(seed)``) or a key, new-style or legacy uint32; ``epoch`` may be traced.
    """
    if isinstance(seed_or_key, (int, np.integer)):
        seed_or_key = jax.random.key(int(seed_or_key))
    return jax.random.fold_in(seed_or_key, epoch)


def step_keys(key: jax.Array, num_steps: int) -> jax.Array:
    """One PRNG key per training step of an epoch, for random augmentation.

    Drawn from ``fold_in(key, 1)``, so they are independent of the epoch's permutation (which
    ``epoch_indices`` draws from ``key`` itself) and, like it, a function of the seed and the
    epoch only.

    Args:
      key: the epoch's key (``epoch_key``); may be traced.
      num_steps: S, a static Python int >= 1.

    Returns:
      ``(S,)`` keys of ``key``'s kind.
    """
    num_steps = _static_int("step_keys", "num_steps", num_steps, 1)
    return jax.random.split(jax.random.fold_in(key, 1), num_steps)
