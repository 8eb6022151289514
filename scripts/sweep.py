"""Sweep LeNet variants and optimizer hyper-parameters (D2L 6.6.4), each shape one population.

    python scripts/sweep.py --config configs/sweeps/smoke.py --workdir runs/sweeps/smoke

Screens every variant on the validation split, retrains the best (``final.top_k``) and evaluates
only those on the test set; writes ``results.{csv,md,png}`` in the workdir. Re-running the same
command resumes. Errors are one line (``error: ...``); exit statuses as ``scripts/train.py``'s
(see :mod:`cnnjax.train.cli`). The sweep config's keys: :mod:`cnnjax.train.sweep`.
"""

import sys


def _main() -> int:
    try:
        from cnnjax.train import sweep
    except KeyboardInterrupt:
        print("\ninterrupted: before the sweep started; nothing was written", file=sys.stderr)
        return 130
    return sweep.main(sys.argv)


if __name__ == "__main__":
    sys.exit(_main())
