"""Shared test setup: real Fashion-MNIST from ../shared when present, fast XLA on 2 cores."""

import os
import pathlib

_SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion_mnist"
if "CNNJAX_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["CNNJAX_DATA_DIR"] = str(_SHARED)
