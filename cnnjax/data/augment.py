"""Random training-time augmentation of image batches, on the device, as pure functions of a key.

Two label-preserving transforms for clothing and digit images, applied per example:

* :func:`random_flip`: mirror left-right with probability 1/2 (a shirt seen from the other side
  is still a shirt; not for digits or text);
* :func:`random_shift`: translate by whole pixels, ``dy, dx`` uniform in ``[-s, s]``, the
  uncovered border filled with a constant (the normalised value of a black pixel, say).

:func:`augment` composes them. Each is a function of ``(key, images)`` only, so a training run
that draws its keys from the seed and the step replays exactly (resume, the scan and the
per-step loop all see the same batches). All are jit-, vmap- and grad-safe (the images are
differentiable; the key is not).

    key = jax.random.key(0)
    x = augment(key, x, flip=True, max_shift=2, fill=-0.81)  # (B, H, W, C)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["augment", "random_flip", "random_shift"]


def _check_batch(op: str, images) -> None:
    if getattr(images, "ndim", None) != 4:
        raise ValueError(
            f"{op}: images must be a (B, H, W, C) batch, got shape {getattr(images, 'shape', None)}"
        )


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Each image mirrored left-right (along W) with probability 1/2, independently.

    Args:
      key: a PRNG key.
      images: ``(B, H, W, C)``.

    Returns:
      ``(B, H, W, C)``, same dtype: image ``b`` is ``images[b, :, ::-1]`` where a Bernoulli(1/2)
      draw is 1, else ``images[b]``.

    Raises:
      ValueError: ``images`` is not 4-D.
    """
    _check_batch("random_flip", images)
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def random_shift(
    key: jax.Array, images: jax.Array, max_shift: int, fill: float | Sequence[float] = 0.0
) -> jax.Array:
    """Each image translated by ``(dy, dx)`` whole pixels, both uniform in ``[-s, s]``.

    ``out[b, i, j] = images[b, i - dy, j - dx]`` where that index is inside the image, else
    ``fill``: the content moves by ``(dy, dx)`` and nothing wraps around.

    Args:
      key: a PRNG key.
      images: ``(B, H, W, C)``.
      max_shift: ``s``, a static int with ``0 <= s < min(H, W)``; 0 returns ``images``.
      fill: the value of the uncovered border, a scalar or one value per channel ``(C,)``
        (may be traced).

    Returns:
      ``(B, H, W, C)``, same dtype.

    Raises:
      TypeError: ``max_shift`` is not a static int.
      ValueError: ``images`` is not 4-D, ``max_shift`` is out of range, or ``fill`` has the
        wrong number of values.
    """
    _check_batch("random_shift", images)
    _, h, w, c = images.shape
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)):
        raise TypeError(f"random_shift: max_shift must be a static int, got {max_shift!r}")
    if not 0 <= max_shift < min(h, w):
        raise ValueError(
            f"random_shift: max_shift must be in [0, {min(h, w)}) for {h}x{w} images, "
            f"got {max_shift}"
        )
    fill = jnp.asarray(fill, images.dtype).reshape(-1)  # may be traced
    if fill.size not in (1, c):
        raise ValueError(f"random_shift: fill needs 1 or {c} (channels) values, got {fill.size}")
    if max_shift == 0:
        return images
    s = int(max_shift)
    padded_shape = (images.shape[0], h + 2 * s, w + 2 * s, c)
    canvas = jnp.broadcast_to(fill, padded_shape)
    canvas = canvas.at[:, s : s + h, s : s + w, :].set(images)
    # The window starting at (s - dy, s - dx) of the padded image is the image moved by (dy, dx).
    starts = jax.random.randint(key, (images.shape[0], 2), 0, 2 * s + 1)

    def crop(image: jax.Array, start: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (h, w, c))

    return jax.vmap(crop)(canvas, starts)


def augment(
    key: jax.Array,
    images: jax.Array,
    *,
    flip: bool = False,
    max_shift: int = 0,
    fill: float | Sequence[float] = 0.0,
) -> jax.Array:
    """:func:`random_flip` (if ``flip``) then :func:`random_shift` (if ``max_shift``), with
    independent keys split from ``key``; ``images`` unchanged when both are off.

    Args:
      key: a PRNG key.
      images: ``(B, H, W, C)``.
      flip: mirror each image left-right with probability 1/2.
      max_shift: translate each image by up to this many pixels (see :func:`random_shift`).
      fill: the shifted-in border's value, scalar or ``(C,)``.

    Returns:
      ``(B, H, W, C)``, same dtype.
    """
    _check_batch("augment", images)
    flip_key, shift_key = jax.random.split(key)
    if flip:
        images = random_flip(flip_key, images)
    return random_shift(shift_key, images, max_shift, fill)
