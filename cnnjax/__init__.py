"""cnnjax: the convolutional-networks chapter of Dive into Deep Learning as a JAX/Flax library.

Layers, lowest first (a layer never imports one above it):
  cnnjax.ops     pure functional correlation, convolution, pooling, shape/cost formulas
  cnnjax.models  Flax modules built on the ops (Conv2D, LeNet)
  cnnjax.data    Fashion-MNIST and friends, device-resident batching
  cnnjax.train   config-driven, jit-compiled, population-vmapped training
"""

__version__ = "0.1.0"
