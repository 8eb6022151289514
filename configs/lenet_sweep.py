"""A population: the book's LeNet (D2L 6.6) at 4 seeds x 3 learning rates, trained as one.

Twelve members share every batch and one compiled step (``population.strategy="auto"``: members in
turn on CPU, ``vmap`` on GPU/TPU); each has its own initialisation seed and SGD learning rate
(0.3, 0.9, 1.5). The final table reports every member, mean ± std and the best.

    python scripts/train.py --config configs/lenet_sweep.py --workdir runs/lenet_sweep

Only seeds and learning rates vary per member: a field that changes the model's computation
(activation, pooling, widths) cannot, since all members run one compiled step.

Expected: final test acc by learning rate over the 4 seeds about 0.72 (0.3), 0.81 (0.9) and
0.81-0.84 (1.5): the book's 0.9 is not the best rate for 10 epochs. 1.6 s of training on one
H100. Every measured run: BENCHMARKS.md.
"""

import itertools

import ml_collections

from cnnjax.train import default_config

SEEDS = (0, 1, 2, 3)
LEARNING_RATES = (0.3, 0.9, 1.5)


def get_config() -> ml_collections.ConfigDict:
    config = default_config()
    members = list(itertools.product(SEEDS, LEARNING_RATES))
    config.population.size = len(members)
    config.population.seeds = tuple(seed for seed, _ in members)
    config.population.learning_rates = tuple(lr for _, lr in members)
    return config
