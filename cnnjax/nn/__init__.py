"""Flax layers over :mod:`cnnjax.ops`: a researcher's CNN in a few lines, with torch's numerics.

``Conv`` (any spatial rank), ``MaxPool``, ``AvgPool``, ``AdaptiveAvgPool``, ``AdaptiveMaxPool``
and ``GlobalAvgPool`` are ``flax.linen`` modules. Parameters use Flax's layout and names
(``"kernel"`` (*kernel, Ci/groups, Co), i.e. HWIO in 2-D, and ``"bias"`` (Co,)), so checkpoints and
initialisers carry over from ``flax.linen.Conv``; hyper-parameters use torch's names and defaults
(``stride``, ``padding``, ``dilation``, ``groups``, ``padding_mode``; pooling stride defaults to
the window). Input is channels-last (N, *spatial, C), or one unbatched example.

This package imports only :mod:`cnnjax.ops`; :mod:`cnnjax.models` may build on it. (A transposed
convolution layer waits for ``cnnjax.ops.conv_transpose``.)
"""

from cnnjax.nn.layers import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    Conv,
    GlobalAvgPool,
    MaxPool,
)

__all__ = ["Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "GlobalAvgPool"]
