"""The yardstick for scripts/benchmark.py and scripts/torch_train.py: the book's LeNet in PyTorch
eager mode.

Same architecture, batch, optimiser and data placement as cnnjax's benchmark run (sigmoid, 2x2
average pooling, SGD, random 28x28 images held in memory), written the plain way a PyTorch user
would.
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


def make_train(
    images: np.ndarray, labels: np.ndarray, batch_size: int, steps: int, device: str = "cpu"
):
    """Returns `run()` training `steps` SGD steps over in-memory batches; images (N, 28, 28, 1)."""
    import torch

    torch.manual_seed(0)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    net = lenet().to(device)
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


def make_forward(images: np.ndarray, batch_size: int, steps: int, device: str = "cpu"):
    """Returns `run()` doing `steps` inference forward passes of `batch_size` images."""
    import torch

    torch.manual_seed(0)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    net = lenet().to(device).eval()
    n = x.shape[0] // batch_size

    def run() -> None:
        with torch.inference_mode():
            for i in range(steps):
                j = (i % n) * batch_size
                out = net(x[j : j + batch_size])
            float(out[0, 0])

    return run
