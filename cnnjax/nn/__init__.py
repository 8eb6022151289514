"""Flax layers over :mod:`cnnjax.ops`: a researcher's CNN in a few lines, with torch's numerics.

``Conv`` and ``ConvTranspose`` (any spatial rank), ``MaxPool``, ``AvgPool``, ``AdaptiveAvgPool``,
``AdaptiveMaxPool`` and ``GlobalAvgPool`` are ``flax.linen`` modules. Parameters use Flax's
layout and names (``"kernel"`` (*kernel, Ci/groups, Co), i.e. HWIO in 2-D, for Conv and
(*kernel, Ci, Co/groups) for ConvTranspose; ``"bias"`` (Co,)), so checkpoints and
initialisers carry over from ``flax.linen.Conv``; hyper-parameters use torch's names and defaults
(``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode``; pooling stride defaults to
the window). Input is channels-last (N, *spatial, C), or one unbatched example.

This package imports only :mod:`cnnjax.ops`; :mod:`cnnjax.models` may build on it.
"""

from cnnjax.nn.layers import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    Conv,
    ConvTranspose,
    GlobalAvgPool,
    MaxPool,
)

__all__ = [
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "GlobalAvgPool",
]
