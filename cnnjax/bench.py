"""What the benchmark scripts share: the PyTorch yardstick and a description of the machine.

``scripts/benchmark.py`` (in one process), ``scripts/torch_train.py`` and
``scripts/bench_process.py`` (whole processes) time cnnjax against the book's LeNet written in
PyTorch eager mode: same architecture, batch, optimiser and data placement (sigmoid, 2x2 average
pooling, SGD, images held in memory), written the plain way a PyTorch user would.

Memory format matters to PyTorch on CPU: a batch whose strides say channels-last (as a
``(N, 28, 28, 1)`` array transposed to NCHW does, since a size-1 channel axis fits both layouts)
takes oneDNN's channels-last kernels, about 2x faster for LeNet here than the standard NCHW
strides the book's data loader produces. ``memory_format`` makes the choice explicit:
"contiguous" (the book's layout, the default) or "channels_last" (input and weights, PyTorch's
advice for CPU convolutions).

PyTorch is the optional ``bench`` extra (``pip install -e '.[bench]'``). This module imports it
only inside the functions that use it, so importing ``cnnjax.bench`` (or any of cnnjax) never
imports PyTorch; :func:`torch_available` says whether it can be used.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "MEMORY_FORMATS",
    "machine",
    "make_torch_forward",
    "make_torch_train",
    "to_memory_format",
    "to_nchw",
    "torch_available",
    "torch_lenet",
    "torch_memory_format",
    "torch_version",
]

# The tensor layouts the yardstick can use (see the module docstring).
MEMORY_FORMATS = ("contiguous", "channels_last")


def machine() -> str:
    """The CPU model and core count, e.g. ``"AMD EPYC 9R14, 2 cores"`` (``platform``'s
    processor name where ``/proc/cpuinfo`` is unreadable)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def torch_available() -> bool:
    """Whether PyTorch is installed (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def torch_version() -> str:
    """E.g. ``"torch 2.13.0+cpu, 2 threads"``: PyTorch's version and intra-op threads."""
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def torch_lenet():
    """The book's LeNet (D2L 6.6) as a ``torch.nn.Sequential``, PyTorch's default initialisation."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Sigmoid(),
        nn.Linear(120, 84),
        nn.Sigmoid(),
        nn.Linear(84, 10),
    )


def torch_memory_format(memory_format: str):
    """The ``torch.memory_format`` named by ``memory_format``.

    Raises:
      ValueError: ``memory_format`` is not one of :data:`MEMORY_FORMATS`.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    import torch

    return {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[
        memory_format
    ]


def to_nchw(images: np.ndarray, memory_format: str = "contiguous"):
    """(N, H, W, C) numpy images as an (N, C, H, W) torch tensor with the strides of
    ``memory_format`` (see the module docstring).

    Raises:
      ValueError: ``memory_format`` is not one of :data:`MEMORY_FORMATS`.
    """
    import torch

    layout = torch_memory_format(memory_format)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.clone(memory_format=layout)


def to_memory_format(net, memory_format: str):
    """``net`` (a ``torch.nn.Module``) with its weights in ``memory_format``."""
    return net.to(memory_format=torch_memory_format(memory_format))


def make_torch_train(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    memory_format: str = "contiguous",
) -> Callable[[], None]:
    """A function that trains :func:`torch_lenet` for ``steps`` SGD steps (learning rate 0.9)
    over in-memory batches of ``batch_size``, in order, and waits for the device.

    Args:
      images: (N, 28, 28, 1) float32; N >= ``batch_size``.
      labels: (N,) integer classes in [0, 10).
      batch_size, steps: the batch and the steps of one call.
      device: a torch device name ("cpu", "cuda").
      memory_format: one of :data:`MEMORY_FORMATS`.
    """
    import torch

    torch.manual_seed(0)
    x = to_nchw(images, memory_format).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    net = to_memory_format(torch_lenet().to(device), memory_format)
    opt = torch.optim.SGD(net.parameters(), lr=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0] // batch_size

    def run() -> None:
        loss: Any = None
        for i in range(steps):
            j = (i % n) * batch_size
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[j : j + batch_size]), y[j : j + batch_size])
            loss.backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        loss.item()

    return run


def make_torch_forward(
    images: np.ndarray,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    memory_format: str = "contiguous",
) -> Callable[[], None]:
    """A function that runs ``steps`` inference forward passes of :func:`torch_lenet` on
    ``batch_size`` images each (``torch.inference_mode``) and waits for the result."""
    import torch

    torch.manual_seed(0)
    x = to_nchw(images, memory_format).to(device)
    net = to_memory_format(torch_lenet().to(device), memory_format).eval()
    n = x.shape[0] // batch_size

    def run() -> None:
        out: Any = None
        with torch.inference_mode():
            for i in range(steps):
                j = (i % n) * batch_size
                out = net(x[j : j + batch_size])
            float(out[0, 0])

    return run
