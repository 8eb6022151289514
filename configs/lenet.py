"""The book's LeNet run (D2L 6.6): sigmoid, average pooling, Xavier-uniform init, SGD.

Minibatch SGD with learning rate 0.9, batch 256, 10 epochs on Fashion-MNIST; the book reports
loss 0.469, train acc 0.823, test acc 0.779.

    python scripts/train.py --config configs/lenet.py --workdir runs/lenet

Eight seeds as one population (the quality bar: mean test acc >= 0.78, none below 0.70):

    python scripts/train.py --config configs/lenet.py --config.population.size=8 \\
        --workdir runs/lenet_8seeds

As in the book, epoch 1 stays at chance and learning starts in epoch 2. What it reaches and how
long it takes, measured with date and machine: BENCHMARKS.md ("Training results").
"""

import ml_collections

from cnnjax.train import default_config


def get_config() -> ml_collections.ConfigDict:
    config = default_config()  # The defaults are the book's recipe; spelt out here to be read.
    config.seed = 0
    config.num_epochs = 10
    config.batch_size = 256
    config.data.name = "fashion_mnist"
    config.model.activation = "sigmoid"
    config.model.pooling = "avg"
    config.model.kernel_init = "xavier_uniform"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.9
    config.optimizer.schedule = "constant"
    return config
