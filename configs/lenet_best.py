"""Exercise 6.6.4.2: the best LeNet variant, trained in full on Fashion-MNIST.

The modern LeNet (configs/lenet_variants.py's base: ReLU, max pooling, He-uniform init, AdamW
1e-2 with decoupled weight decay 0.05, one warmup epoch then cosine decay, standardised inputs)
with 3x3 kernels (first conv padded by 1; the screening's best kernel size, EXERCISES.md 6.6.4.2)
and random left-right flips of the training images (EXERCISES.md says why). 81,194 parameters.
20 epochs on the training split less 5,000 held-out validation images, four seeds (0-3) as one
population; the test split is evaluated once, at the end. Target: mean test accuracy >= 0.915.

    python scripts/train.py --config configs/lenet_best.py --workdir runs/lenet_best \\
        --config.data.source=idx --config.data.dir=../shared/data/fashion_mnist

Measured results (and the alternatives it was chosen against on validation accuracy) are in
EXERCISES.md, 6.6.4.2.
"""

import pathlib

import ml_collections

from cnnjax.train import load_config_file


def get_config() -> ml_collections.ConfigDict:
    # The modern LeNet's recipe (configs/lenet_modern.py), changed where this run differs.
    config = load_config_file(str(pathlib.Path(__file__).with_name("lenet_modern.py")))
    config.num_epochs = 20
    config.data.validation_size = 5000
    config.data.random_flip = True
    config.model.kernel_sizes = (3, 3)
    config.model.padding = 1
    # Toeplitz convs in training and evaluation alike, as the results in EXERCISES.md were
    # measured ("auto" also trains this 3x3 variant with them on CPU, but evaluates with lax).
    config.model.conv_impl = "toeplitz"
    config.population.size = 4
    config.progress = False
    return config
