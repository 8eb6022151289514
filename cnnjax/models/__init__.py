"""Flax modules of D2L chapter 6, built on :mod:`cnnjax.ops`.

* :class:`Conv2D` - the book's learnable single-channel layer (6.2.3).
* :class:`LeNet` - LeNet-5 (6.6), configurable, on ``cnnjax.ops`` or Flax's own layers.
* :func:`summary` - the layer table (output shapes, parameters, multiply-adds).
* :func:`features` - every layer's activations for a batch.
* :mod:`cnnjax.models.packing` - LeNets of different widths embedded in the widest (zero padding
  and a gradient mask), so that one population can train them.
"""

from cnnjax.models.conv2d import Conv2D
from cnnjax.models.lenet import ACTIVATIONS, KERNEL_INITS, LeNet, Stage
from cnnjax.models.summary import features, summary

__all__ = ["ACTIVATIONS", "KERNEL_INITS", "Conv2D", "LeNet", "Stage", "features", "summary"]
