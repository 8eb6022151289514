"""The device-resident iterator: normalisation, per-epoch permutations, padded evaluation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnjax import data


def small_split(n=10, h=4, w=3, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), rng.integers(0, 10, n)


def test_to_device_unit_is_x_over_255():
    images, labels = small_split()
    split = data.to_device(images, labels)
    chex.assert_shape(split.images, images.shape)
    assert split.images.dtype == jnp.float32 and split.labels.dtype == jnp.int32
    np.testing.assert_allclose(np.asarray(split.images), images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(split.labels), labels)


def test_to_device_standardize_per_channel():
    images, labels = small_split()
    mean, std = data.channel_stats(images)
    split = data.to_device(images, labels, normalize="standardize", mean=mean, std=std)
    x = np.asarray(split.images)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    scalar = data.to_device(images, labels, normalize="standardize", mean=0.5, std=0.25)
    np.testing.assert_allclose(
        np.asarray(scalar.images), (images / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-6
    )


def test_to_device_places_on_the_requested_device():
    images, labels = small_split()
    device = jax.devices()[-1]
    split = data.to_device(images, labels, device=device)
    assert split.images.devices() == {device} and split.labels.devices() == {device}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(images=np.zeros((2, 3, 3, 1), np.float32)), TypeError, "images must be uint8"),
        (dict(images=np.zeros((2, 3, 3), np.uint8)), ValueError, r"images must be \(N, H, W, C\)"),
        (dict(labels=np.zeros(3, int)), ValueError, r"labels must have shape \(2,\)"),
        (dict(labels=np.zeros(2, float)), TypeError, "labels must be integers"),
        (dict(normalize="zscore"), ValueError, "normalize must be one of"),
        (dict(normalize="standardize"), ValueError, "needs mean and std"),
        (dict(mean=0.5), ValueError, "only used with normalize='standardize'"),
        (
            dict(normalize="standardize", mean=[0.1, 0.2], std=1.0),
            ValueError,
            r"mean must be a scalar or have shape \(1,\)",
        ),
        (
            dict(normalize="standardize", mean=0.1, std=-1.0),
            data.NormalizationError,
            r"needs a finite positive std per channel, got std=\[-1.0\] for channel 0; pass "
            r"the channel_stats of the training images$",
        ),
        (
            dict(normalize="standardize", mean=float("nan"), std=1.0),
            data.NormalizationError,
            r"needs a finite mean per channel, got mean=\[nan\] for channel 0",
        ),
    ],
)
def test_to_device_rejects_bad_arguments(kwargs, error, match):
    args = dict(images=np.zeros((2, 3, 3, 1), np.uint8), labels=np.zeros(2, int)) | kwargs
    with pytest.raises(error, match=match):
        data.to_device(**args)


@pytest.mark.parametrize("constant", [0, 255])
def test_standardize_names_the_channel_with_no_spread_and_the_fix(constant):
    # All-black (or all-white) images: channel_stats gives std 0, which would divide by zero.
    images = np.full((6, 4, 4, 1), constant, np.uint8)
    mean, std = data.channel_stats(images)
    assert std.tolist() == [0.0]
    with pytest.raises(
        data.NormalizationError,
        match=r"^to_device: normalize='standardize' needs a finite positive std per channel, "
        r"got std=\[0.0\] for channel 0 \(a channel whose pixels all have one value, e.g. "
        r"all-black images, has no spread to divide by\); use normalize='unit' instead$",
    ):
        data.to_device(images, np.zeros(6, int), normalize="standardize", mean=mean, std=std)
    # A ValueError still, for callers that catch that.
    assert issubclass(data.NormalizationError, ValueError)


def test_standardize_names_only_the_channels_with_no_spread():
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    images[..., 2] = 0
    mean, std = data.channel_stats(images)
    with pytest.raises(data.NormalizationError, match=r"got std=\[0.0\] for channel 2 \("):
        data.to_device(images, np.zeros(6, int), normalize="standardize", mean=mean, std=std)
    images[..., 0] = 9
    mean, std = data.channel_stats(images)
    with pytest.raises(data.NormalizationError, match=r"std=\[0.0, 0.0\] for channels 0, 2 \("):
        data.to_device(images, np.zeros(6, int), normalize="standardize", mean=mean, std=std)
    # With every channel spread out, the same images standardise to finite values.
    images[0, 0, 0] = (0, 0, 1)
    mean, std = data.channel_stats(images)
    split = data.to_device(images, np.zeros(6, int), normalize="standardize", mean=mean, std=std)
    assert np.isfinite(np.asarray(split.images)).all()


# Few distinct shapes: each new (N, B) costs a compile.
@settings(max_examples=10, deadline=None)
@given(
    shape=st.sampled_from([(1, 1), (50, 10), (103, 10), (1000, 100)]),
    seed=st.integers(0, 2**31 - 1),
    epoch=st.integers(0, 1000),
)
def test_epoch_indices_is_a_permutation_cut_into_full_batches(shape, seed, epoch):
    n, batch = shape
    idx = np.asarray(data.epoch_indices(data.epoch_key(seed, epoch), n, batch))
    assert idx.shape == (n // batch, batch) and idx.dtype == np.int32
    flat = idx.ravel()
    assert len(np.unique(flat)) == flat.size  # nobody twice
    assert flat.min() >= 0 and flat.max() < n


def test_every_example_exactly_once_per_epoch_when_batches_divide():
    idx = np.asarray(data.epoch_indices(data.epoch_key(3, 5), 1000, 100))
    np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(1000))


def test_permutation_differs_across_epochs_and_replays_from_the_seed():
    epochs = [np.asarray(data.epoch_indices(data.epoch_key(7, e), 1000, 100)) for e in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(epochs[a], epochs[b])
    replay = np.asarray(data.epoch_indices(data.epoch_key(7, 2), 1000, 100))
    np.testing.assert_array_equal(replay, epochs[2])
    from_key = np.asarray(data.epoch_indices(data.epoch_key(jax.random.key(7), 2), 1000, 100))
    np.testing.assert_array_equal(from_key, epochs[2])
    other_seed = np.asarray(data.epoch_indices(data.epoch_key(8, 2), 1000, 100))
    assert not np.array_equal(other_seed, epochs[2])


def test_dropped_examples_change_between_epochs():
    # 103 examples, batch 10: 3 dropped per epoch, a different 3 in some epoch.
    dropped = []
    for e in range(5):
        seen = np.asarray(data.epoch_indices(data.epoch_key(0, e), 103, 10)).ravel()
        dropped.append(frozenset(set(range(103)) - set(seen.tolist())))
    assert all(len(d) == 3 for d in dropped) and len(set(dropped)) > 1


def test_epoch_indices_under_jit_and_scan_with_traced_epoch():
    @jax.jit
    def all_epochs(seed_key):
        def body(carry, epoch):
            return carry, data.epoch_indices(data.epoch_key(seed_key, epoch), 50, 10)

        return jax.lax.scan(body, None, jnp.arange(3))[1]

    out = np.asarray(all_epochs(jax.random.key(1)))
    for e in range(3):
        np.testing.assert_array_equal(
            out[e], np.asarray(data.epoch_indices(data.epoch_key(1, e), 50, 10))
        )


def test_epoch_indices_rejects_bad_sizes():
    key = data.epoch_key(0, 0)
    with pytest.raises(ValueError, match=r"batch_size must be <= num_examples \(5\), got 6"):
        data.epoch_indices(key, 5, 6)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.epoch_indices(key, 5, 0)
    with pytest.raises(TypeError, match="num_examples must be a static Python int"):
        data.epoch_indices(key, 5.0, 2)


@pytest.mark.parametrize("n, batch", [(10, 3), (10, 5), (1, 4), (257, 256)])
def test_eval_indices_cover_each_example_exactly_once(n, batch):
    idx, mask = data.eval_indices(n, batch)
    steps = -(-n // batch)
    chex.assert_shape([idx, mask], (steps, batch))
    assert idx.dtype == jnp.int32 and mask.dtype == jnp.bool_
    idx, mask = np.asarray(idx), np.asarray(mask)
    np.testing.assert_array_equal(idx[mask], np.arange(n))
    assert mask.sum() == n and idx.min() >= 0 and idx.max() < n


def test_gather_and_a_masked_eval_sum_count_every_example_once():
    images, labels = small_split(n=11)
    split = data.to_device(images, labels)
    idx, mask = data.eval_indices(11, 4)

    @jax.jit
    def label_sum(split):
        def body(total, batch):
            x, y = data.gather(split, batch[0])
            chex.assert_shape(x, (4, 4, 3, 2))
            return total + jnp.sum(jnp.where(batch[1], y, 0)), None

        return jax.lax.scan(body, 0, (idx, mask))[0]

    assert int(label_sum(split)) == labels.sum()
    x, y = data.gather(split, jnp.array([3, 0]))
    np.testing.assert_allclose(np.asarray(x), images[[3, 0]] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(y), labels[[3, 0]])
