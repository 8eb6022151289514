"""Exercise 6.6.4.2 as one sweep: the modern LeNet's variants x learning rates, screened on the
validation split, the best two retrained with four seeds and only they tested.

The variants are ``configs/lenet_variants.py``'s structural ones (kernel size, channels,
activation, conv layers, dense layers, initialisation; its learning-rate row becomes the
``learning_rate`` axis here); its base recipe (AdamW, warmup + cosine, 15,000 training images of
which 5,000 validate) is the sweep's base. Each variant is one population of 3 rates x 2 seeds
for screening. Not run as part of the tests (hours on a CPU; see EXERCISES.md for the
hand-run results this sweep automates):

    python scripts/sweep.py --config configs/sweeps/lenet_variants.py \\
        --workdir runs/sweeps/lenet_variants

Point it at the real data with ``overrides`` (``{"data": {"source": "idx", "dir": ...}}``) or
``CNNJAX_DATA_DIR``. The keys are explained in ``configs/sweeps/smoke.py``.
"""

import importlib.util
import pathlib

import ml_collections

_HERE = pathlib.Path(__file__).resolve().parent


def _variants() -> dict:
    """``configs/lenet_variants.py``'s structural variants as nested overrides."""
    spec = importlib.util.spec_from_file_location(
        "_lenet_variants", _HERE.parent / "lenet_variants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = {}
    for name, (_, overrides) in module.VARIANTS.items():
        if any(key.startswith("population.") for key in overrides):
            continue  # a per-member value: the learning_rate axis below
        nested: dict = {}
        for key, value in overrides.items():
            section, field = key.split(".")
            nested.setdefault(section, {})[field] = value
        variants[name] = nested
    return variants


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base = str(_HERE.parent / "lenet_variants.py")
    c.overrides = {"progress": False}
    c.variants = _variants()
    c.axes = ml_collections.ConfigDict()
    c.axes.learning_rate = (3e-3, 1e-2, 3e-2)
    c.screening = ml_collections.ConfigDict()
    c.screening.num_epochs = 6
    c.screening.seeds = (0, 1)
    c.final = ml_collections.ConfigDict()
    c.final.top_k = 2
    c.final.num_epochs = 20
    c.final.seeds = (0, 1, 2, 3)
    return c
