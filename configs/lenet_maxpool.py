"""Exercise 6.6.4.1: the book's LeNet recipe (D2L 6.6) with max instead of average pooling.

Everything else is ``configs/lenet.py``: sigmoid, Xavier-uniform init, SGD at learning rate 0.9,
batch 256, 10 epochs. Four seeds (0-3) as one population; 5,000 training images are held out as
a validation split (evaluated every epoch) and the test split is evaluated once, at the end.
The same recipe with average pooling, for the comparison, is this config with
``--config.model.pooling=avg``.

    python scripts/train.py --config configs/lenet_maxpool.py --workdir runs/lenet_maxpool \\
        --config.data.source=idx --config.data.dir=../shared/data/fashion_mnist

Measured results: BENCHMARKS.md ("The chapter's exercises") and EXERCISES.md (6.6.4.1).
"""

import ml_collections

from cnnjax.train import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()  # the book's recipe
    config.model.pooling = "max"
    config.data.validation_size = 5000
    config.population.size = 4
    return config
