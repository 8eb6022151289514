"""Exercise 6.6.4.2: LeNet variants along each axis the exercise names, as short screening runs.

The base is ``configs/lenet_modern.py``'s recipe (ReLU, max pooling, He-uniform init, AdamW 1e-2
with decoupled weight decay 0.05, one warmup epoch then cosine decay, standardised inputs) on a
fixed 15,000-image subset of the training split, of which 5,000 are held out for validation: 6
epochs, four seeds as one population. Every variant changes one thing (:data:`VARIANTS`: its
name, the axis, and the ``--config.`` overrides); each is its own run, since members of a
population share one model. Variants are scored on the validation split only.

    python scripts/exercises.py --sweep-commands   # prints one train.py command per variant
    python scripts/train.py --config configs/lenet_variants.py --workdir runs/variants/base \\
        --config.data.source=idx --config.data.dir=../shared/data/fashion_mnist
    python scripts/exercises.py --results runs/variants   # the table of every finished run

Results, measured: see EXERCISES.md (6.6.4.2).
"""

import pathlib

import ml_collections

from cnnjax.train import load_config_file

# name -> (axis, overrides of the base config)
VARIANTS: dict[str, tuple[str, dict]] = {
    "base": ("-", {}),
    "kernel_3x3": ("kernel size", {"model.kernel_sizes": (3, 3), "model.padding": 1}),
    "channels_10_24": ("channels", {"model.channels": (10, 24)}),
    "act_tanh": ("activation", {"model.activation": "tanh"}),
    "act_gelu": ("activation", {"model.activation": "gelu"}),
    "conv_3_layers": (
        "conv layers",
        {"model.channels": (6, 16, 32), "model.kernel_sizes": (5, 3, 3)},
    ),
    "dense_1": ("dense layers", {"model.dense": (120,)}),
    "init_xavier": ("initialisation", {"model.kernel_init": "xavier_uniform"}),
    "tanh_kernel_3x3": (
        "combined",
        {"model.activation": "tanh", "model.kernel_sizes": (3, 3), "model.padding": 1},
    ),
    "lr_3e-3_3e-2": (
        "learning rate",
        {
            "population.size": 8,
            "population.seeds": (0, 1, 2, 3) * 2,
            "population.learning_rates": (3e-3,) * 4 + (3e-2,) * 4,
        },
    ),
}


def get_config() -> ml_collections.ConfigDict:
    # The modern LeNet's recipe (configs/lenet_modern.py), changed where this run differs.
    config = load_config_file(str(pathlib.Path(__file__).with_name("lenet_modern.py")))
    config.num_epochs = 6
    config.data.train_limit = 15000
    config.data.validation_size = 5000
    # Toeplitz convs for every variant: XLA:CPU's own convs are several times slower for the
    # wider layers, beyond what "auto"'s measured bounds admit (EXERCISES.md, 6.6.4.2).
    config.model.conv_impl = "toeplitz"
    config.population.size = 4
    config.progress = False
    return config
