"""Pure functional CNN ops: correlation, convolution, pooling, and the chapter's formulas.

D2L 6.1-6.5 as functions. Two levels:
  - the book's single-example, channels-first functions: ``corr2d``, ``convolve2d``,
    ``corr2d_multi_in``, ``corr2d_multi_in_out``, ``corr2d_multi_in_out_1x1``, ``pool2d``;
  - the batched research API in JAX layout (channels last) with PyTorch numerics: ``conv``,
    ``conv1d``/``conv2d``/``conv3d``, ``max_pool``/``avg_pool`` and their 1d/2d/3d forms.
Shape and cost helpers (``conv_output_shape``, ``receptive_field``, ``conv_cost``, ...) need no
arrays. ``cnnjax.ops.reference`` holds loop versions of every op, for tests and teaching.

Spatial hyper-parameters (window, stride, padding, dilation, output_padding, output_size) follow
torch's int-or-tuple rule: an int or a one-element tuple/list (``3``, ``(3,)``) applies to every
spatial dim, r values give one per dim, any other length is an error.

Every op validates its arguments while tracing (so under ``jit`` too) and is jit-, grad- and
vmap-safe.
"""

from cnnjax.ops.adaptive import (
    adaptive_avg_pool,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    global_avg_pool,
    global_max_pool,
)
from cnnjax.ops.conv import IMPLS, PADDING_MODES, conv, conv1d, conv2d, conv3d
from cnnjax.ops.conv_transpose import (
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from cnnjax.ops.correlation import (
    convolve2d,
    corr2d,
    corr2d_as_matmul,
    corr2d_kernel_matrix,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
)
from cnnjax.ops.pool import (
    POOL_IMPLS,
    avg_pool,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    max_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
    pool2d,
)
from cnnjax.ops.shapes import (
    ConvCost,
    PoolCost,
    ReceptiveField,
    conv_cost,
    conv_output_shape,
    pool_cost,
    pool_output_shape,
    receptive_field,
)

__all__ = [
    # The book's functions (D2L 6.2, 6.4, 6.5), channels first, one example.
    "corr2d",
    "convolve2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "corr2d_as_matmul",
    "corr2d_kernel_matrix",
    "pool2d",
    # Batched research API, channels last.
    "IMPLS",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "PADDING_MODES",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "POOL_IMPLS",
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_unpool",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "global_avg_pool",
    "global_max_pool",
    # Formulas.
    "conv_output_shape",
    "pool_output_shape",
    "ReceptiveField",
    "receptive_field",
    "ConvCost",
    "conv_cost",
    "PoolCost",
    "pool_cost",
]
