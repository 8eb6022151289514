"""Train LeNet (D2L 6.6) -- one model or a population -- from a config file.

    python scripts/train.py --config configs/lenet.py --workdir runs/lenet
    python scripts/train.py --config configs/lenet.py --config.optimizer.learning_rate=0.5 \\
        --config.num_epochs=3 --workdir runs/lenet_lr05

Re-running with the same ``--workdir`` resumes from its last checkpoint. Errors are one line
(``error: ...``); see :mod:`cnnjax.train.cli` for the exit statuses.
"""

import time

_STARTED = time.perf_counter()  # before the imports: start-up includes importing JAX

import signal  # noqa: E402
import sys  # noqa: E402


def _main() -> int:
    # A Ctrl-C while JAX's C extensions initialise would surface as an ImportError with
    # tracebacks printed from C; during the imports it is only noted, and honoured after them.
    pressed = []
    signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    from cnnjax.train import cli

    signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        print("\ninterrupted: before training started; nothing was written", file=sys.stderr)
        return cli.INTERRUPTED
    return cli.main(sys.argv, started=_STARTED)


if __name__ == "__main__":
    sys.exit(_main())
