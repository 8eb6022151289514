"""The book's LeNet run (D2L 6.6) as a plain PyTorch eager script: the yardstick for
``scripts/bench_process.py``.

    python scripts/torch_train.py --data-dir ../shared/data/fashion_mnist [--epochs 10]
    python scripts/torch_train.py --data-dir DIR --epochs 0 --forward-repeats 5   # evaluation only

The recipe is ``configs/lenet.py``'s, written the way a PyTorch user would: sigmoid, 2x2 average
pooling, Xavier-uniform weights (biases 0), minibatch SGD with learning rate 0.9, batch 256, the
whole split held in memory as float32 (pixels / 255) and reshuffled every epoch
(``torch.randperm``; the last partial batch is dropped, as cnnjax does), and the test split
evaluated after every epoch in batches of ``--eval-batch-size`` (1024) under
``torch.inference_mode``. Tensors are in the book's NCHW layout unless ``--memory-format
channels_last`` (see :mod:`cnnjax.bench`). No checkpoints, metric files or plots are
written (cnnjax's trainer writes all three every epoch).

It prints lines of the same shapes as ``scripts/train.py``'s (``first step after S.SS s``,
``epoch e/E: loss L, train acc A, test acc T  [S s]``), and ``forward batch B: N examples in S s``
for each timed evaluation pass (``--forward-repeats``, after one untimed warm-up pass). Those
lines are for people; with ``--out FILE`` the same numbers, unrounded, go to a JSON file, which is
what ``scripts/bench_process.py`` reads:

* ``first_step_seconds`` -- from the first line of this script (before its imports, as
  ``scripts/train.py`` counts) to the moment the first SGD step begins; null without epochs;
* ``epochs`` -- one ``{"epoch", "seconds", "train_loss", "train_accuracy", "test_accuracy"}`` per
  epoch, ``seconds`` the epoch's training time only (as cnnjax's ``epoch_time_s``);
* ``forward_seconds`` -- each timed evaluation pass of ``num_test`` images in batches of
  ``forward_batch``;
* ``num_train``, ``num_test``, ``batch_size``, ``threads`` (PyTorch's intra-op threads),
  ``memory_format`` and ``torch`` (its version).

PyTorch is the optional ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the imports, as scripts/train.py counts its start-up

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402

from cnnjax import bench  # noqa: E402  (the yardstick; imports PyTorch only when called)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: pathlib.Path) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array of its stored unsigned bytes.

    Raises:
      ValueError: the file is not an unsigned-byte IDX file or its size does not match its
        header.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, body has {len(body)} bytes")
    return np.frombuffer(body, np.uint8).reshape(shape)


def load_split(data_dir: pathlib.Path, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` (all if 0) images (N, 1, 28, 28) float32 in [0, 1] and labels (N,)."""
    paths = []
    for base in IDX_FILES[split]:
        found = [data_dir / f"{base}.gz", data_dir / base]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise SystemExit(f"error: --data-dir {data_dir} has neither {found[0].name} nor {base}")
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if limit:
        images, labels = images[:limit], labels[:limit]
    return (images[:, None].astype(np.float32) / 255.0), labels.astype(np.int64)


def book_lenet():
    """The book's LeNet with Xavier-uniform weights and zero biases (its ``init_cnn``)."""
    from torch import nn

    net = bench.torch_lenet()
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def evaluate(net, x, y, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on (x, y), in batches of ``batch_size``."""
    import torch
    from torch.nn import functional as F

    net.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            logits = net(x[i : i + batch_size])
            yb = y[i : i + batch_size]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    net.train()
    return float(loss_sum) / x.shape[0], int(correct) / x.shape[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="directory of the four IDX files")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument(
        "--memory-format",
        choices=bench.MEMORY_FORMATS,
        default="contiguous",
        help="tensor layout: the book's NCHW, or channels-last (oneDNN's faster one on CPU)",
    )
    p.add_argument(
        "--forward-repeats", type=int, default=0, help="timed evaluation passes after training"
    )
    p.add_argument("--out", default="", help="also write the numbers, unrounded, as JSON here")
    args = p.parse_args(argv)
    for name in ("epochs", "train_limit", "test_limit", "threads", "forward_repeats"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    data_dir = pathlib.Path(args.data_dir)
    if not data_dir.is_dir():
        p.error(f"--data-dir {data_dir} is not a directory")

    import torch
    from torch.nn import functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = map(torch.from_numpy, load_split(data_dir, "train", args.train_limit))
    test_x, test_y = map(torch.from_numpy, load_split(data_dir, "test", args.test_limit))
    layout = bench.torch_memory_format(args.memory_format)
    train_x, test_x = (t.contiguous(memory_format=layout) for t in (train_x, test_x))
    num_train = train_x.shape[0]
    steps = num_train // args.batch_size
    if args.epochs and steps == 0:
        p.error(f"--batch-size {args.batch_size} exceeds the {num_train} training images")
    print(
        f"{data_dir.name} (idx): {num_train} train / {test_x.shape[0]} test images; "
        f"{bench.torch_version()}",
        flush=True,
    )
    net = bench.to_memory_format(book_lenet(), args.memory_format)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)

    record = {
        "num_train": num_train,
        "num_test": test_x.shape[0],
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "memory_format": args.memory_format,
        "torch": torch.__version__,
        "first_step_seconds": None,
        "epochs": [],
        "forward_batch": args.eval_batch_size,
        "forward_seconds": [],
    }
    train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(num_train, generator=generator)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        if epoch == 1:
            record["first_step_seconds"] = time.perf_counter() - _STARTED
            print(f"first step after {record['first_step_seconds']:.2f} s", flush=True)
        start = time.perf_counter()
        for i in range(steps):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x, y = train_x[idx].contiguous(memory_format=layout), train_y[idx]
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.argmax(1) == y).sum()
        seen = steps * args.batch_size
        train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen
        seconds = time.perf_counter() - start
        train_seconds += seconds
        _, test_acc = evaluate(net, test_x, test_y, args.eval_batch_size)
        record["epochs"].append(
            {
                "epoch": epoch,
                "seconds": seconds,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_accuracy": test_acc,
            }
        )
        print(
            f"epoch {epoch:>{len(str(args.epochs))}}/{args.epochs}: loss {train_loss:.3f}, "
            f"train acc {train_acc:.3f}, test acc {test_acc:.3f}  [{seconds:.3f} s]",
            flush=True,
        )
    if args.epochs:
        print(
            f"{args.epochs * steps * args.batch_size / train_seconds:,.0f} examples/s; "
            f"{args.epochs} epoch(s) in {train_seconds:.1f} s",
            flush=True,
        )
    if args.forward_repeats:
        evaluate(net, test_x, test_y, args.eval_batch_size)  # warm-up
        for _ in range(args.forward_repeats):
            start = time.perf_counter()
            evaluate(net, test_x, test_y, args.eval_batch_size)
            seconds = time.perf_counter() - start
            record["forward_seconds"].append(seconds)
            print(
                f"forward batch {args.eval_batch_size}: {test_x.shape[0]} examples in "
                f"{seconds:.4f} s",
                flush=True,
            )
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
