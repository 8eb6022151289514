"""Exercise 6.6.4.2 as one sweep: LeNet changed one thing at a time, the winners combined.

The base is the modern LeNet (``configs/lenet_modern.py``: ReLU, max pooling, He-uniform init,
AdamW with decoupled weight decay 0.05, one warmup epoch then cosine decay, standardised
inputs). Each variant changes exactly one thing the exercise names (kernel size, channels,
activation, number of conv or dense layers, initialisation, pooling) or the training data
(random flips, random shifts); the learning rate is an axis, so every variant is screened at
three rates with two seeds, each variant one compiled population.

1. Screening: 6 epochs on a fixed 15,000-image subset of the training split (10,000 to train,
   5,000 to validate); the test set is not read.
2. Combination: the three variants that beat the base by the most (each at its best rate) are
   combined, every pair and the triple, and screened the same way.
3. Final: the two best rows of both stages with at most 100,000 parameters, retrained for 20
   epochs on the whole training split less the same 5,000 validation images, seeds 0-3, then
   evaluated on the test set once. The sweep's choice is the finalist with the best final
   validation accuracy.

    CNNJAX_DATA_DIR=../shared/data/fashion_mnist python scripts/sweep.py \\
        --config configs/sweeps/lenet_variants.py --workdir runs/sweeps/lenet_variants

Results: ``results/chapter6/lenet_variants/`` and EXERCISES.md (6.6.4.2).
"""

import pathlib

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(pathlib.Path(__file__).resolve().parents[1] / "lenet_modern.py")
    c.overrides = {
        "progress": False,
        "data": {"train_limit": 15000, "validation_size": 5000},
        # Toeplitz convs for every variant: on CPU they train all of these shapes faster than
        # XLA's own convs, and one implementation keeps the variants' numerics comparable.
        "model": {"conv_impl": "toeplitz"},
    }
    c.variants = {
        "base": {},
        # conv1 keeps its 28x28 output ("same" padding), as the base's 5x5 kernel with padding 2.
        "kernel_3x3": {"model": {"kernel_sizes": (3, 3), "padding": 1}},
        "channels_8_20": {"model": {"channels": (8, 20)}},
        "channels_10_24": {"model": {"channels": (10, 24)}},
        "act_tanh": {"model": {"activation": "tanh"}},
        "act_gelu": {"model": {"activation": "gelu"}},
        # A third conv block (3x3, 32 channels) after the base's two: maps 28-14-10-5-3-1.
        "conv_3_layers": {"model": {"channels": (6, 16, 32), "kernel_sizes": (5, 5, 3)}},
        "dense_1": {"model": {"dense": (120,)}},
        "init_xavier": {"model": {"kernel_init": "xavier_uniform"}},
        "pool_avg": {"model": {"pooling": "avg"}},
        "flip": {"data": {"random_flip": True}},
        "shift_2": {"data": {"random_shift": 2}},
    }
    c.axes = ml_collections.ConfigDict()
    c.axes.learning_rate = (3e-3, 1e-2, 3e-2)
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 6
    c.screening.seeds = (0, 1)
    c.combine = ml_collections.ConfigDict()
    c.combine.top = 3
    c.combine.baseline = "base"
    c.max_params = 100_000
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 2
    c.final.num_epochs = 20
    c.final.seeds = (0, 1, 2, 3)
    c.final.overrides = {"data": {"train_limit": 0}}
    return c
