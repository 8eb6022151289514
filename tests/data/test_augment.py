"""Random flips and shifts: each output is one of the allowed transforms, drawn from the key."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import data


def _images(b=64, h=7, w=6, c=2):
    return jax.random.normal(jax.random.key(0), (b, h, w, c))


def _shifted(image: np.ndarray, dy: int, dx: int, fill: np.ndarray) -> np.ndarray:
    """Independent reference: out[i, j] = image[i - dy, j - dx] inside the frame, else fill."""
    h, w, c = image.shape
    out = np.broadcast_to(fill, (h, w, c)).copy()
    for i, j in itertools.product(range(h), range(w)):
        if 0 <= i - dy < h and 0 <= j - dx < w:
            out[i, j] = image[i - dy, j - dx]
    return out


def test_random_flip_mirrors_some_images_and_keeps_the_rest():
    x = _images()
    y = np.asarray(data.random_flip(jax.random.key(1), x))
    x = np.asarray(x)
    flipped = [bool(np.array_equal(y[b], x[b, :, ::-1])) for b in range(len(x))]
    kept = [bool(np.array_equal(y[b], x[b])) for b in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # Bernoulli(1/2) over 64 images
    np.testing.assert_array_equal(y, data.random_flip(jax.random.key(1), x))
    assert not np.array_equal(y, data.random_flip(jax.random.key(2), x))


@pytest.mark.parametrize("fill", [0.0, (-0.5, 3.0)])
def test_random_shift_is_a_translation_with_a_filled_border(fill):
    x = np.asarray(_images())
    s = 2
    y = np.asarray(jax.jit(data.random_shift, static_argnums=2)(jax.random.key(3), x, s, fill))
    fill_c = np.broadcast_to(np.asarray(fill, np.float32), (x.shape[-1],))
    seen = set()
    for b in range(len(x)):
        matches = [
            (dy, dx)
            for dy, dx in itertools.product(range(-s, s + 1), repeat=2)
            if np.array_equal(y[b], _shifted(x[b], dy, dx, fill_c))
        ]
        assert len(matches) == 1, (b, matches)
        seen.add(matches[0])
    assert len(seen) > 12  # 25 possible shifts, 64 draws


def test_random_shift_zero_is_identity_and_augment_composes():
    x = _images()
    assert data.random_shift(jax.random.key(0), x, 0) is x
    assert data.augment(jax.random.key(0), x) is x
    key = jax.random.key(4)
    flip_key, shift_key = jax.random.split(key)
    expected = data.random_shift(shift_key, data.random_flip(flip_key, x), 1, fill=-1.0)
    got = data.augment(key, x, flip=True, max_shift=1, fill=-1.0)
    np.testing.assert_array_equal(got, expected)


def test_augmentation_is_differentiable_and_vmappable():
    x = _images(b=8)
    key = jax.random.key(5)
    grad = jax.grad(lambda x: data.random_shift(key, x, 2).sum())(x)
    # Each output pixel reads at most one input pixel, so the gradient is 1 where a pixel stays
    # in the frame and 0 where it was pushed out.
    assert set(np.unique(grad)) <= {0.0, 1.0}
    np.testing.assert_allclose(grad.sum(), (data.random_shift(key, jnp.ones_like(x), 2)).sum())
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k, x: data.augment(k, x, flip=True, max_shift=1))(
        keys, jnp.stack([x] * 3)
    )
    for i in range(3):
        np.testing.assert_array_equal(batched[i], data.augment(keys[i], x, flip=True, max_shift=1))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: data.random_shift(jax.random.key(0), x, 6), r"max_shift must be in \[0, 6\)"),
        (lambda x: data.random_shift(jax.random.key(0), x, -1), "max_shift must be in"),
        (lambda x: data.random_shift(jax.random.key(0), x, 1.5), "max_shift must be a static int"),
        (lambda x: data.random_shift(jax.random.key(0), x, 1, fill=(1, 2, 3)), "fill needs 1 or 2"),
        (lambda x: data.random_flip(jax.random.key(0), x[0]), r"\(B, H, W, C\) batch"),
        (lambda x: data.augment(jax.random.key(0), x[0], flip=True), r"\(B, H, W, C\) batch"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(_images())


def test_step_keys_are_fixed_by_the_epoch_key_and_independent_of_the_permutation():
    key = data.epoch_key(0, 3)
    keys = data.step_keys(key, 5)
    assert keys.shape == (5,)
    np.testing.assert_array_equal(
        jax.random.key_data(keys), jax.random.key_data(data.step_keys(data.epoch_key(0, 3), 5))
    )
    datas = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}
    datas.add(tuple(np.asarray(jax.random.key_data(key)).ravel()))
    assert len(datas) == 6
