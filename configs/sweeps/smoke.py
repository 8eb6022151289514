"""A tiny sweep on the bundled offline data: the template for ``configs/sweeps/*.py``.

Two structural variants of LeNet (the base, and a narrower one: other parameter shapes, so its own
compiled population) at two learning rates and two seeds, one epoch on a few hundred bundled MNIST
images; the best row by validation accuracy is retrained as the finalist and only it is evaluated
on the test set. Three populations are compiled (the compilation cache keeps them for a rerun):

    python scripts/sweep.py --config configs/sweeps/smoke.py --workdir runs/sweeps/smoke

Rerunning the command resumes (finished groups are read back). Results: ``results.md``,
``results.csv`` and ``results.png`` in the workdir; each group's run directory is
``<workdir>/<stage>/<group>/`` (open it with ``RunDir`` or point TensorBoard at the workdir).

Keys (every one, with its default: :func:`cnnjax.train.sweep.default_sweep_config`):

* ``base``: the training config file every variant starts from (a relative path is from the
  current directory; here it is found from this file's).
* ``overrides``: training config keys changed for the whole sweep, nested like the config.
* ``variants``: name -> the training config keys this variant changes (a model, data or
  optimizer-name change; ``{}`` is the base). Variants with equal configs share a population.
* ``axes``: ``learning_rate``, ``momentum``, ``weight_decay``: values (a tuple) or a grid
  (``{"start": 1e-3, "stop": 1e-1, "num": 3, "scale": "log"}``); ``()`` keeps the config's value.
  These vary per member inside a population (one compiled step for all of them).
* ``screening``: ``num_epochs`` and ``seeds`` of the screening runs (validation split only), and
  ``halving``: ``rungs`` (epochs) and ``keep`` (a fraction) for successive halving inside each
  screening population; ``()`` (the default, as here) is off.
* ``final``: ``top_k`` rows retrained for ``num_epochs`` with ``seeds`` (use >= 4 in a real
  sweep), then evaluated on the test set once.
* ``pack`` (off here): variants differing only in widths (channels, dense units, as many
  layers) share one population, each padded to the widest with its padding masked.
"""

import pathlib

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(pathlib.Path(__file__).resolve().parents[1] / "lenet.py")  # the book's LeNet
    c.overrides = {
        "batch_size": 32,
        "eval_batch_size": 100,
        "progress": False,
        # 400 bundled images: 300 to train on, 100 held out for validation; 200 test images.
        "data": {
            "source": "bundled",
            "name": "mnist_5k",
            "train_limit": 400,
            "validation_size": 100,
            "test_limit": 200,
        },
        "model": {"activation": "relu", "pooling": "max", "kernel_init": "he_uniform"},
        "optimizer": {"name": "momentum", "momentum": 0.9},
    }
    c.variants = {
        "base": {},
        "narrow": {"model": {"channels": (4, 8), "dense": (32,)}},
    }
    c.axes = ml_collections.ConfigDict()
    c.axes.learning_rate = (0.01, 0.05)
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 1
    c.screening.seeds = (0, 1)
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 1
    c.final.num_epochs = 1
    c.final.seeds = (0, 1)
    return c
