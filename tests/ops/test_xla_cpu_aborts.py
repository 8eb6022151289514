"""Convolutions that used to abort the process in XLA:CPU's compiler now compile and are right.

XLA:CPU (jaxlib 0.10.2, 0.12.0.1) fails a CHECK, killing the interpreter, when its algebraic
simplifier swaps the operands of some convolutions with a dilated input (see
``cnnjax/ops/_dilated_input.py``). An abort cannot be caught, so the cases run in a child
process, on CPU and with XLA's optimisations on (the package's conftest turns most of them off
in this process): a crash fails these tests instead of killing the pytest worker. The child
writes its results; they are checked here against the reference loops.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from cnnjax import ops
from cnnjax.ops import reference as ref
from tests.ops import helpers as h

# name -> (op, x shape, w shape, hyper-parameters); conv's impl is "lax" unless given. Each one
# aborted the process before the fix (jaxlib 0.10.2), through lax's lhs_dilation: a transposed
# conv's forward, a strided conv's input gradient, and that gradient inside impl="auto"'s
# lax.cond (its lax branch, compiled alongside the Toeplitz one). stride_and_dilation aborted
# with a bare lax.pad dilation too: XLA folds that pad back into the conv's input dilation.
CASES = {
    "conv_transpose2d_stride2": (
        "conv_transpose",
        (1, 2, 4, 2),
        (3, 2, 2, 1),
        dict(stride=2, padding=1, output_padding=(1, 0)),
    ),
    "conv_transpose2d_stride_and_dilation": (
        "conv_transpose",
        (1, 2, 4, 2),
        (3, 2, 2, 1),
        dict(stride=(1, 2), padding=1, output_padding=(1, 0), dilation=(2, 1)),
    ),
    "conv_transpose3d_stride2": (
        "conv_transpose",
        (1, 2, 4, 2, 2),
        (3, 2, 2, 2, 1),
        dict(stride=2, padding=1, output_padding=(1, 0, 0)),
    ),
    "conv2d_grad_stride2": ("conv", (1, 4, 6, 3), (3, 2, 3, 2), dict(stride=2, padding=1)),
    "conv2d_grad_stride3x2": ("conv", (1, 4, 6, 3), (3, 2, 3, 2), dict(stride=(3, 2), padding=1)),
    "conv2d_auto_grad_stride2": (
        "conv",
        (1, 4, 6, 3),
        (3, 2, 3, 2),
        dict(stride=2, padding=1, impl="auto"),
    ),
    "conv3d_grad_stride2": (
        "conv",
        (1, 4, 6, 1, 3),
        (3, 2, 1, 3, 2),
        dict(stride=(2, 2, 1), padding=(1, 1, 0)),
    ),
}

_CHILD = textwrap.dedent(
    """
    import ast, sys
    import jax, jax.numpy as jnp, numpy as np
    from cnnjax import ops

    cases, out_dir = ast.literal_eval(sys.argv[1]), sys.argv[2]
    for name, (op, x_shape, w_shape, kw) in cases.items():
        print("case", name, flush=True)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        if op == "conv":
            f = lambda x, w: ops.conv(x, w, layout="NHWC", **{"impl": "lax", **kw})
        else:
            f = lambda x, w: ops.conv_transpose(x, w, **kw)
        y = jax.jit(f)(x, w)
        g = rng.standard_normal(y.shape).astype(np.float32)
        loss = lambda x, w: jnp.sum(f(x, w) * g)
        gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
        # vmap over a batch of weights, the way a population of models batches them.
        gx_vmap = jax.vmap(jax.grad(loss), in_axes=(None, 0))(x, np.stack([w, 2 * w]))
        np.savez(f"{out_dir}/{name}.npz", x=x, w=w, g=g, y=y, gx=gx, gw=gw, gx_vmap=gx_vmap)
    print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """Runs the cases in a child process, again after each one that kills it.

    Returns (the output dir, {case name: why its child died}).
    """
    out_dir = tmp_path_factory.mktemp("xla_cpu_aborts")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # the abort is in an optimisation pass
    remaining, deaths = list(CASES), {}
    while remaining:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, repr({n: CASES[n] for n in remaining}), str(out_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if proc.returncode == 0:
            break
        started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("case")]
        dead = started[-1] if started else remaining[0]
        # The failed CHECK's line, not the stack trace's frames that follow it.
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "@ 0x" not in ln]
        why = next((ln for ln in lines if "Check failed" in ln), "\n".join(lines[-5:]))
        deaths[dead] = f"exited with {proc.returncode}: {why}"
        remaining = remaining[remaining.index(dead) + 1 :]
    return out_dir, deaths


def _reference_vjp(fn, args, argnum, g) -> np.ndarray:
    """d/d args[argnum] of sum(fn(*args) * g), entry by entry: fn is linear in each argument."""
    arg = np.asarray(args[argnum], np.float64)
    out = np.zeros(arg.size)
    for i in range(arg.size):
        basis = np.zeros(arg.size)
        basis[i] = 1.0
        shifted = list(args)
        shifted[argnum] = basis.reshape(arg.shape)
        out[i] = np.sum(fn(*shifted) * g)
    return out.reshape(arg.shape)


@pytest.mark.parametrize("name", list(CASES))
def test_compiles_without_aborting_and_matches_the_reference(child, name):
    out_dir, deaths = child
    assert name not in deaths, f"the child process running {name} {deaths[name]}"
    op, _, _, kw = CASES[name]
    kw = {k: v for k, v in kw.items() if k != "impl"}
    fn = functools.partial(ref.conv if op == "conv" else ref.conv_transpose, **kw)
    res = np.load(out_dir / f"{name}.npz")
    x, w, g = res["x"], res["w"], res["g"]
    ax, aw, ag = np.abs(x), np.abs(w), np.abs(g)
    h.assert_close_to_reference(res["y"], fn(x, w), fn(ax, aw), jnp.float32)
    # Error bounds for the gradients: the same products and sums with every factor made >= 0.
    gx, gx_bound = _reference_vjp(fn, (x, w), 0, g), _reference_vjp(fn, (ax, aw), 0, ag)
    h.assert_close_to_reference(res["gx"], gx, gx_bound, jnp.float32)
    gw, gw_bound = _reference_vjp(fn, (x, w), 1, g), _reference_vjp(fn, (ax, aw), 1, ag)
    h.assert_close_to_reference(res["gw"], gw, gw_bound, jnp.float32)
    h.assert_close_to_reference(res["gx_vmap"][0], gx, gx_bound, jnp.float32)
    h.assert_close_to_reference(res["gx_vmap"][1], 2 * gx, 2 * gx_bound, jnp.float32)


def _lowered(fn, platform, *args) -> str:
    return export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()


@pytest.mark.parametrize("name", ["conv_transpose2d_stride2", "conv2d_grad_stride2"])
def test_only_the_cpu_program_avoids_input_dilation(name):
    # Lowered, not compiled, so it runs on any machine: CPU gets the explicit dilation; GPU and
    # TPU get lax's lhs_dilation and nothing added (no pad, no optimisation barrier).
    op, x_shape, w_shape, kw = CASES[name]
    if op == "conv":
        f = functools.partial(ops.conv, layout="NHWC", impl="lax", **kw)
    else:
        f = functools.partial(ops.conv_transpose, **kw)
    grads = jax.grad(lambda x, w: jnp.sum(f(x, w)), argnums=(0, 1))
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    cpu = _lowered(grads, "cpu", x, w)
    assert "lhs_dilate" not in cpu
    assert "stablehlo.optimization_barrier" in cpu
    for platform in ("cuda", "tpu"):
        native = _lowered(grads, platform, x, w)
        assert re.search(r"lhs_dilate = \[2, 2\]", native), platform
        assert "stablehlo.pad" not in native and "optimization_barrier" not in native, platform
