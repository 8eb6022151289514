"""Exercise 6.6.4.3 for 6.6.4.2's second round: its finalist trained on MNIST.

The finalist (and choice) of ``configs/sweeps/lenet_round2.py``, ``configs/lenet_best.py``'s
network and recipe (tanh, Xavier-uniform init, 3x3 kernels, channels (8, 20), random shifts of
up to 1 pixel, AdamW 1e-2 with decoupled weight decay 0.2), trained like
``configs/sweeps/lenet_mnist.py``'s finalists: 20 epochs on MNIST's training split less 5,000
validation digits, seeds 0-3, the test split once. The screening (two epochs, one seed) is a
formality with one variant.

    CNNJAX_DATA_DIR=../shared/data/mnist python scripts/sweep.py \\
        --config configs/sweeps/lenet_mnist_round2.py --workdir runs/sweeps/lenet_mnist_round2

Results: ``results/chapter6/lenet_mnist_round2/`` and EXERCISES.md (6.6.4.3).
"""

import pathlib

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(pathlib.Path(__file__).resolve().parents[1] / "lenet_modern.py")
    c.overrides = {
        "progress": False,
        "data": {"name": "mnist", "train_limit": 15000, "validation_size": 5000},
        "model": {"conv_impl": "toeplitz"},
    }
    c.variants = {
        "shift_1+channels_8_20": {
            "model": {
                "activation": "tanh",
                "kernel_init": "xavier_uniform",
                "kernel_sizes": (3, 3),
                "padding": 1,
                "channels": (8, 20),
            },
            "data": {"random_shift": 1},
        },
    }
    c.axes = ml_collections.ConfigDict()
    c.axes.learning_rate = (1e-2,)
    c.axes.weight_decay = (0.2,)
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 2  # the recipe's warmup takes the first epoch
    c.screening.seeds = (0,)
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 1
    c.final.num_epochs = 20
    c.final.seeds = (0, 1, 2, 3)
    c.final.overrides = {"data": {"train_limit": 0}}
    return c
