"""LeNet with today's defaults: ReLU, max pooling, He init, AdamW with warmup + cosine decay.

Same network shape as the book's (D2L 6.6), trained for 10 epochs at batch 256: AdamW (peak
learning rate 1e-2, decoupled weight decay 0.05), one epoch of linear warmup then cosine decay to
zero, inputs standardised. Target: test accuracy >= 0.90 in 10 epochs.

    python scripts/train.py --config configs/lenet_modern.py --workdir runs/lenet_modern

How the rate and decay were chosen, and every measured run: BENCHMARKS.md.
"""

import ml_collections

from cnnjax.train import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()
    config.num_epochs = 10
    config.batch_size = 256
    config.data.normalize = "standardize"
    config.model.activation = "relu"
    config.model.pooling = "max"
    config.model.kernel_init = "he_uniform"
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-2
    config.optimizer.weight_decay = 0.05
    config.optimizer.schedule = "warmup_cosine"
    config.optimizer.warmup_epochs = 1
    return config
