"""A population: the book's LeNet (D2L 6.6) at 4 seeds x 3 learning rates, trained as one.

Twelve members share every batch and one compiled step (``population.strategy="auto"``: members in
turn on CPU, ``vmap`` on GPU/TPU); each has its own initialisation seed and SGD learning rate
(0.3, 0.9, 1.5). The final table reports every member, mean ± std and the best.

    python scripts/train.py --config configs/lenet_sweep.py --workdir runs/lenet_sweep

Seeds and optimizer hyper-parameters (learning rate, momentum, weight decay) vary per member; a
field that changes the model's computation (activation, pooling, widths) cannot, since all
members run one compiled step: ``scripts/sweep.py`` groups such variants into populations.

What each learning rate reaches, measured with date and machine: BENCHMARKS.md ("Training
results").
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
