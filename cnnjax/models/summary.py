"""Looking inside a model: the layer table of D2L 6.6.2 and every layer's activations.

``summary`` prints what the book's ``layer_summary`` shows (each layer's output shape for one
example) plus parameter counts and forward multiply-adds per layer, the latter from
:func:`cnnjax.ops.conv_cost` / :func:`cnnjax.ops.pool_cost`. ``features`` returns the
activations behind exercise 6.6.4.4's pictures.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.lenet import Stage

__all__ = ["features", "summary"]


def features(model: nn.Module, params: Mapping[str, Any], x: jax.Array) -> dict[str, jax.Array]:
    """Every layer's output for a batch, in network order.

    Args:
      model: a module that sows ``{stage name: output}`` into the "intermediates" collection
        under "stages", as :class:`~cnnjax.models.LeNet` does.
      params: the model's params (``variables["params"]``), or the whole variables dict.
      x: the batch, in whatever layout the model takes (``LeNet``: (N, H, W, C) floating).

    Returns:
      An ``OrderedDict`` ``{stage name: activation}`` in the order the network runs (kept
      under ``jit``), e.g. for the book's LeNet "conv1" (N, 28, 28, 6), "act1", "pool1", ...,
      "output" (N, 10), in the model's compute dtype.

    Jit-compatible for a fixed model. Raises TypeError if the model sows no stages.
    """
    variables = params if "params" in params else {"params": params}
    _, state = model.apply(variables, x, mutable=["intermediates"])
    sown = state.get("intermediates", {}).get("stages")
    if sown is None:
        raise TypeError(f"features: {type(model).__name__} does not sow its stages")
    acts = sown[0]
    names = [s.name for s in model.stages()] if hasattr(model, "stages") else list(acts)
    # An OrderedDict keeps its order through jit/eval_shape; a plain dict comes back key-sorted.
    return collections.OrderedDict((name, acts[name]) for name in names)


def _chw(shape: Sequence[int]) -> str:
    """One example's shape, channels first like the book: (N, H, W, C) -> "C x H x W"."""
    dims = shape[1:]
    if len(dims) == 3:
        dims = (dims[2], dims[0], dims[1])
    return " x ".join(str(d) for d in dims)


def _describe(model: nn.Module, stage: Stage) -> str:
    if stage.kind == "conv":
        return f"Conv {stage.kernel}x{stage.kernel}, pad {stage.padding}"
    if stage.kind == "pool":
        kind = "AvgPool" if model.pooling == "avg" else "MaxPool"
        return f"{kind} {stage.kernel}x{stage.kernel}, stride {stage.kernel}"
    if stage.kind == "act":
        return model.activation
    if stage.kind == "flatten":
        return "Flatten"
    return "Dense"


def _forward_ops(model: nn.Module, stage: Stage, in_shape: Sequence[int]) -> tuple[int, int]:
    """(multiply-adds, pooling adds/comparisons) of one example entering ``stage``.

    ``in_shape`` is the batch shape of the stage's input: (N, H, W, C) or (N, F).
    """
    if stage.kind == "conv":
        cost = ops.conv_cost(
            tuple(in_shape[1:3]), in_shape[3], stage.size, stage.kernel, padding=stage.padding
        )
        return cost.forward_macs, 0
    if stage.kind == "pool":
        cost = ops.pool_cost(tuple(in_shape[1:3]), in_shape[3], stage.kernel)
        return 0, cost.forward_ops
    if stage.kind == "dense":
        return math.prod(in_shape[1:]) * stage.size, 0
    return 0, 0


def summary(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The layer-by-layer table of a ``LeNet`` (any module with ``stages()`` and the same fields).

    Args:
      model: the module; it is only traced (``jax.eval_shape``), never run.
      input_shape: one example (H, W, C) or a batch (N, H, W, C); the table is per example.

    Returns:
      A multi-line string: one row per stage with its output shape printed channels first
      (C x H x W, as in the book, though the arrays are NHWC), parameter count, forward
      multiply-adds (:func:`cnnjax.ops.conv_cost`; in x out for dense layers) and pooling
      operations (:func:`cnnjax.ops.pool_cost`) per example, then the totals. The book's
      LeNet on 28x28x1 gives 6x28x28, 6x14x14, 16x10x10, 16x5x5, 400, 120, 84, 10 and 61,706
      parameters.

    Raises:
      TypeError: ``model`` has no ``stages()``.
      ValueError: ``input_shape`` is not 3 or 4 positive ints; the input is too small for the
        network (raised by :mod:`cnnjax.ops` while tracing).
    """
    if not hasattr(model, "stages"):
        raise TypeError(
            f"summary: model must define stages() (e.g. LeNet), got {type(model).__name__}"
        )
    shape = tuple(input_shape)
    if len(shape) not in (3, 4) or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(
            "summary: input_shape must be (H, W, C) or (N, H, W, C) positive ints, "
            f"got {input_shape!r}"
        )
    example = jax.ShapeDtypeStruct((1, *shape[-3:]), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    outs = jax.eval_shape(lambda p, x: features(model, p, x), params, example)

    header = ("layer", "type", "output (C x H x W)", "params", "MACs", "pool ops")
    rows = [("input", "", _chw(example.shape), "", "", "")]
    totals = [0, 0, 0]
    in_shape: Sequence[int] = example.shape
    for stage in model.stages():
        out_shape = outs[stage.name].shape
        n_params = sum(leaf.size for leaf in jax.tree.leaves(params.get(stage.name, {})))
        counts = (n_params, *_forward_ops(model, stage, in_shape))
        totals = [t + c for t, c in zip(totals, counts)]
        rows.append(
            (
                stage.name,
                _describe(model, stage),
                _chw(out_shape),
                f"{counts[0]:,}",
                *(f"{c:,}" if c else "-" for c in counts[1:]),
            )
        )
        in_shape = out_shape
    rows.append(("total", "", "", *(f"{t:,}" for t in totals)))

    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        left = [c.ljust(w) for c, w in zip(r[:3], widths[:3])]
        right = [c.rjust(w) for c, w in zip(r[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(fmt(header))
    title = (
        f"{type(model).__name__} on one {_chw(example.shape)} input. Shapes are printed channels"
        f" first (C x H x W) like the book; the arrays are NHWC.\n"
        "Per example, forward pass: MACs = multiply-adds, "
        "pool ops = adds (avg) or comparisons (max)."
    )
    lines = [title, rule, fmt(header), rule, *map(fmt, rows[:-1]), rule, fmt(rows[-1])]
    return "\n".join(lines)
