"""The book's learnable single-channel convolution layer (D2L 6.2.3).

A weight of shape ``kernel_size`` and a scalar bias; the forward pass is the valid
cross-correlation :func:`cnnjax.ops.corr2d` plus the bias. D2L 6.2.4 learns the edge-detection
kernel ``[[1, -1]]`` with it.
"""

from __future__ import annotations

from numbers import Integral

import flax.linen as nn
import jax

from cnnjax import ops

__all__ = ["Conv2D"]


class Conv2D(nn.Module):
    """Learnable 2-D cross-correlation of one single-channel image.

    Attributes:
      kernel_size: (kh, kw), each a positive int.
      use_bias: add the scalar ``"bias"`` parameter (initialised to 0). D2L 6.2.4 learns the
        edge kernel without one; with a bias, gradient descent at the book's lr 3e-2 diverges.

    Parameters: ``"weight"`` (kh, kw) float32, uniform on [0, 1) like the book's ``torch.rand``;
    ``"bias"`` () float32, only when ``use_bias``.
    """

    kernel_size: tuple[int, int]
    use_bias: bool = True

    def __post_init__(self) -> None:
        ks = self.kernel_size
        if (
            not isinstance(ks, (tuple, list))
            or len(ks) != 2
            or not all(isinstance(k, Integral) and not isinstance(k, bool) and k >= 1 for k in ks)
        ):
            raise ValueError(f"Conv2D: kernel_size must be a pair of positive ints, got {ks!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (H, W) float -> (H - kh + 1, W - kw + 1).

        Raises ValueError if ``x`` is not 2-D or smaller than the kernel (via ``corr2d``).
        """
        if x.ndim != 2:
            raise ValueError(f"Conv2D: x must be 2-D (H, W), got shape {tuple(x.shape)}")
        weight = self.param("weight", nn.initializers.uniform(scale=1.0), tuple(self.kernel_size))
        y = ops.corr2d(x, weight)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), ())
        return y
