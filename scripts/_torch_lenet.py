"""The yardstick for scripts/benchmark.py and scripts/torch_train.py: the book's LeNet in PyTorch
eager mode.

Same architecture, batch, optimiser and data placement as cnnjax's benchmark run (sigmoid, 2x2
average pooling, SGD, random 28x28 images held in memory), written the plain way a PyTorch user
would.

Memory format matters to PyTorch on CPU: a batch whose strides say channels-last (as a
``(N, 28, 28, 1)`` array transposed to NCHW does, since a size-1 channel axis fits both layouts)
takes oneDNN's channels-last kernels, about 2x faster for LeNet here than the standard NCHW
strides the book's data loader produces. ``memory_format`` makes the choice explicit: "contiguous"
(the book's layout, the default) or "channels_last" (input and weights, PyTorch's advice for CPU
convolutions).
PyTorch is an optional extra (`pip install -e '.[bench]'`); the benchmark skips it when absent.
"""

from __future__ import annotations

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def lenet():
    """The book's LeNet (D2L 6.6) as an ``nn.Sequential``, PyTorch's default initialisation."""
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


MEMORY_FORMATS = ("contiguous", "channels_last")


def torch_format(memory_format: str):
    """The ``torch.memory_format`` named by ``memory_format`` (one of ``MEMORY_FORMATS``)."""
    import torch

    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    return {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[
        memory_format
    ]


def to_nchw(images: np.ndarray, memory_format: str = "contiguous"):
    """(N, H, W, C) numpy images as an (N, C, H, W) torch tensor with the strides of
    ``memory_format`` (see the module docstring)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.clone(memory_format=torch_format(memory_format))


def place(net, memory_format: str):
    """``net`` with its weights in ``memory_format``."""
    return net.to(memory_format=torch_format(memory_format))


def make_train(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    memory_format: str = "contiguous",
):
    """Returns `run()` training `steps` SGD steps over in-memory batches; images (N, 28, 28, 1)."""
    import torch

    torch.manual_seed(0)
    x = to_nchw(images, memory_format).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    net = place(lenet().to(device), memory_format)
    opt = torch.optim.SGD(net.parameters(), lr=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0] // batch_size

    def run() -> None:
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


def make_forward(
    images: np.ndarray,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    memory_format: str = "contiguous",
):
    """Returns `run()` doing `steps` inference forward passes of `batch_size` images."""
    import torch

    torch.manual_seed(0)
    x = to_nchw(images, memory_format).to(device)
    net = place(lenet().to(device), memory_format).eval()
    n = x.shape[0] // batch_size

    def run() -> None:
        with torch.inference_mode():
            for i in range(steps):
                j = (i % n) * batch_size
                out = net(x[j : j + batch_size])
            float(out[0, 0])

    return run
