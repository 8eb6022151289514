"""Exercise 6.6.4.3 as a sweep: the finalists of 6.6.4.2's sweep, trained on MNIST.

The two finalists of ``configs/sweeps/lenet_variants.py`` (chosen on Fashion-MNIST's validation
split: ``results/chapter6/lenet_variants/``), each at its learning rate, with the modern LeNet's
recipe: 20 epochs on MNIST's training split less 5,000 validation digits, seeds 0-3, then the
test split once. The screening (two epochs, one seed, 10,000 digits) only orders them:
``final.top_k = 2`` sends both to the final stage.

    CNNJAX_DATA_DIR=../shared/data/mnist python scripts/sweep.py \\
        --config configs/sweeps/lenet_mnist.py --workdir runs/sweeps/lenet_mnist

Results: ``results/chapter6/lenet_mnist/`` and EXERCISES.md (6.6.4.3).
"""

import pathlib

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(pathlib.Path(__file__).resolve().parents[1] / "lenet_modern.py")
    c.overrides = {
        "progress": False,
        "data": {"name": "mnist", "train_limit": 15000, "validation_size": 5000},
        "model": {"conv_impl": "toeplitz"},  # as in the Fashion-MNIST sweep
    }
    # 6.6.4.2's finalists, as its sweep combined them.
    c.variants = {
        "act_tanh+init_xavier": {"model": {"activation": "tanh", "kernel_init": "xavier_uniform"}},
        "act_tanh+init_xavier+kernel_3x3": {
            "model": {
                "activation": "tanh",
                "kernel_init": "xavier_uniform",
                "kernel_sizes": (3, 3),
                "padding": 1,
            }
        },
    }
    c.axes = ml_collections.ConfigDict()
    c.axes.learning_rate = (1e-2,)  # both finalists' rate
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 2  # the recipe's warmup takes the first epoch
    c.screening.seeds = (0,)
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 2
    c.final.num_epochs = 20
    c.final.seeds = (0, 1, 2, 3)
    c.final.overrides = {"data": {"train_limit": 0}}
    return c
