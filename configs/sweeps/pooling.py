"""Exercise 6.6.4.1 as a matched comparison: the book's LeNet with average or max pooling.

Both variants are ``configs/lenet.py``'s recipe (sigmoid, Xavier-uniform init, SGD at learning
rate 0.9, batch 256, 10 epochs) on the same data (the training split less the same 5,000
validation images), with the same seeds (0-3); they differ only in ``model.pooling``. The
screening (one epoch, one seed) only orders them: ``final.top_k = 2`` sends both to the final
stage, so the comparison is the final stage's rows, both evaluated on the test set once.

    CNNJAX_DATA_DIR=../shared/data/fashion_mnist \\
        python scripts/sweep.py --config configs/sweeps/pooling.py --workdir runs/sweeps/pooling

Results: ``results/chapter6/pooling/`` and EXERCISES.md (6.6.4.1).
"""

import pathlib

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(pathlib.Path(__file__).resolve().parents[1] / "lenet.py")  # the book's recipe
    c.overrides = {"progress": False, "data": {"validation_size": 5000}}
    c.variants = {"avg_pool": {}, "max_pool": {"model": {"pooling": "max"}}}
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 1
    c.screening.seeds = (0,)
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 2
    c.final.num_epochs = 10
    c.final.seeds = (0, 1, 2, 3)
    return c
