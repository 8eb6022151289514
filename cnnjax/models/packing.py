"""Packing LeNets that differ only in widths into one network: zero padding and a gradient mask.

D2L 6.6.4.2 varies LeNet's channels and dense widths. Networks that differ *only* there have
different parameter shapes, so a population (one compiled step, one leading member axis) cannot
hold them as they are. They fit once each is embedded in the *widest* network (every conv's
channels and every dense width the largest of the packed networks):

* :func:`pad_params` embeds a narrow network's parameters in the wide network's shapes, zeros
  everywhere else. The wide network then computes the narrow one's function: a padded unit's
  kernel and bias are zero, so its pre-activation is 0, and every weight that reads it is zero
  too, so ``act(0)`` (0.5 for the sigmoid) never reaches a real unit. Only the summation order
  of the real terms can differ, so outputs agree to float rounding, not bit for bit.
* :func:`padding_mask` is 1 on the embedded entries and 0 on the padding. The padding's gradient
  is not zero in general (a weight reading a padded sigmoid unit sees ``act(0) = 0.5``), so a
  training step multiplies the gradient by this mask: the padding then stays exactly zero under
  every element-wise optimizer (SGD, momentum, Adam, L2 or decoupled decay of a zero weight),
  and the real entries get the narrow network's gradient and update.
* :func:`unpad_params` cuts a member's own parameters back out, e.g. to save or evaluate it as
  the narrow network it is.

The channel axis of the first dense kernel is the subtle one: the flatten before it is in
(H, W, C) order (see :mod:`cnnjax.models.lenet`), so each spatial position's block of C rows is
padded, not the end of the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.models.lenet import LeNet

__all__ = ["PACKABLE_FIELDS", "pad_params", "padding_mask", "packable", "unpad_params", "widest"]

# The fields that may differ between packed networks; every other field must be equal.
PACKABLE_FIELDS = ("channels", "dense")


def _config(model: LeNet | Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a LeNet module or config, comparable: sequences as tuples, the dtype by
    name."""
    if isinstance(model, LeNet):
        full = {name: getattr(model, name) for name in LeNet.field_names()}
    else:
        full = LeNet.default_config()
        full.update(model.to_dict() if hasattr(model, "to_dict") else dict(model))
    full = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in full.items()}
    full["dtype"] = jnp.dtype(full["dtype"]).name
    return full


def _mismatch(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """Why the LeNet configs ``a`` and ``b`` cannot be packed, or None if they can."""
    ca, cb = _config(a), _config(b)
    for name in LeNet.field_names():
        va, vb = ca[name], cb[name]
        if name in PACKABLE_FIELDS:
            if len(va) != len(vb):
                return f"{name} has {len(va)} entries in one and {len(vb)} in the other"
        elif va != vb:
            return f"{name} differs ({va!r} vs {vb!r})"
    return None


def packable(a: LeNet | Mapping[str, Any], b: LeNet | Mapping[str, Any]) -> bool:
    """Whether two LeNets (modules or config mappings) differ only in the values of
    :data:`PACKABLE_FIELDS` (as many conv and dense layers, every other field equal)."""
    return _mismatch(a, b) is None


def widest(models: Sequence[LeNet | Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """The widths that hold every one of ``models``: ``{"channels": ..., "dense": ...}``, each
    the element-wise maximum.

    Raises:
      ValueError: ``models`` is empty, or two of them are not :func:`packable` (the message
        says which field differs).
    """
    if not models:
        raise ValueError("widest: models must not be empty")
    first = _config(models[0])
    for other in models[1:]:
        why = _mismatch(first, other)
        if why is not None:
            raise ValueError(f"widest: the models cannot be packed: {why}")
    configs = [_config(m) for m in models]
    return {
        name: tuple(int(max(vs)) for vs in zip(*(c[name] for c in configs), strict=True))
        for name in PACKABLE_FIELDS
    }


def _axis_sizes(
    narrow: LeNet, wide: LeNet, params: Mapping[str, Any], *, of_wide: bool = False
) -> dict[str, dict]:
    """For each layer, how to embed its kernel: the narrow and wide size of its (in, out) axes
    and, for a dense kernel read right after the flatten, the number of spatial positions
    (0 otherwise). ``params`` are ``narrow``'s (or ``wide``'s, with ``of_wide``); only the
    shapes of their kernels are read."""
    why = _mismatch(narrow, wide)
    if why is not None:
        raise ValueError(f"packing: the narrow and wide LeNet differ in more than widths: {why}")
    plan: dict[str, dict] = {}
    in_n = in_w = None  # input channels/units of the next layer (None: the image's)
    after_flatten = False
    for sn, sw in zip(narrow.stages(), wide.stages(), strict=True):
        if sn.kind not in ("conv", "dense"):
            after_flatten = after_flatten or sn.kind == "flatten"
            continue
        if sw.size < sn.size:
            unit = "channels" if sn.kind == "conv" else "units"
            raise ValueError(
                f"packing: {sn.name} has {sn.size} {unit}, more than the wide network's {sw.size}"
            )
        kernel = params[sn.name]["kernel"]
        rows = kernel.shape[-2]
        spatial = 0
        if in_n is None:  # reads the image (conv1, or a dense layer of a conv-less LeNet)
            in_n = in_w = rows
        elif sn.kind == "dense" and after_flatten:
            spatial = rows // (in_w if of_wide else in_n)
        plan[sn.name] = {"kernel": ((in_n, in_w), (sn.size, sw.size)), "spatial": spatial}
        in_n, in_w = sn.size, sw.size
        after_flatten = False
    return plan


def _embed(x: jax.Array, sizes: tuple[tuple[int, int], tuple[int, int]], spatial: int):
    """Pads the last two axes (in, out) of a kernel from narrow to wide sizes with zeros; a
    flattened dense kernel (``spatial`` > 0) is padded per spatial position."""
    (i_n, i_w), (o_n, o_w) = sizes
    lead = x.shape[:-2]
    if spatial:
        x = x.reshape(spatial, i_n, o_n)
        x = jnp.pad(x, ((0, 0), (0, i_w - i_n), (0, o_w - o_n)))
        return x.reshape(spatial * i_w, o_w)
    return jnp.pad(x, [(0, 0)] * len(lead) + [(0, i_w - i_n), (0, o_w - o_n)])


def _cut(x: jax.Array, sizes: tuple[tuple[int, int], tuple[int, int]], spatial: int):
    (i_n, i_w), (o_n, _) = sizes
    if spatial:
        return x.reshape(spatial, i_w, -1)[:, :i_n, :o_n].reshape(spatial * i_n, o_n)
    return x[..., :i_n, :o_n]


def pad_params(narrow: LeNet, params: Mapping[str, Any], wide: LeNet) -> dict[str, Any]:
    """``params`` of the LeNet ``narrow``, embedded with zeros in the shapes of ``wide``.

    Args:
      narrow: the network ``params`` belong to.
      params: its parameters (``{"conv1": {"kernel", "bias"}, ...}``, no member axis).
      wide: a network at least as wide as ``narrow`` in every conv and dense layer and equal in
        every other field (e.g. ``narrow.clone(**widest([narrow, other]))``).

    Returns:
      ``wide``'s parameter tree: ``narrow``'s values in the leading channels/units of each layer
      (for the first dense kernel, of each spatial position's channels), zeros elsewhere; the
      dtype of ``params``. ``wide.apply`` computes ``narrow.apply``'s logits up to float
      rounding.

    Raises:
      ValueError: ``wide`` is narrower somewhere, or differs in another field.

    Example::

        narrow, wide = LeNet(channels=(4, 8)), LeNet()
        params = narrow.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
        padded = pad_params(narrow, params, wide)  # runs in LeNet(), same logits
    """
    plan = _axis_sizes(narrow, wide, params)
    out: dict[str, Any] = {}
    for name, layer in params.items():
        p = plan[name]
        out[name] = {
            "kernel": _embed(layer["kernel"], p["kernel"], p["spatial"]),
            "bias": jnp.pad(layer["bias"], (0, p["kernel"][1][1] - p["kernel"][1][0])),
        }
    return out


def padding_mask(narrow: LeNet, params: Mapping[str, Any], wide: LeNet) -> dict[str, Any]:
    """1 where :func:`pad_params` puts ``narrow``'s entries, 0 on the padding (same tree, shapes
    and dtype as its result). Multiplying a gradient of ``wide`` by it gives ``narrow``'s
    gradient, embedded."""
    return pad_params(narrow, jax.tree.map(jnp.ones_like, params), wide)


def unpad_params(wide: LeNet, params: Mapping[str, Any], narrow: LeNet) -> dict[str, Any]:
    """The inverse of :func:`pad_params`: ``narrow``'s parameters cut out of ``wide``'s
    ``params``.

    Raises:
      ValueError: as :func:`pad_params`.
    """
    plan = _axis_sizes(narrow, wide, params, of_wide=True)
    return {
        name: {
            "kernel": _cut(layer["kernel"], plan[name]["kernel"], plan[name]["spatial"]),
            "bias": layer["bias"][: plan[name]["kernel"][1][0]],
        }
        for name, layer in params.items()
    }
