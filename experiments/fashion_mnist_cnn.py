"""Fashion-MNIST (60k/10k 28x28 clothing images) with a small CNN; >= 90% test accuracy in a few minutes on CPU.

Data: Debian's dataset-fashion-mnist IDX files (`make data` installs them), built once into TFDS array_record.

    jtrain train --config experiments/fashion_mnist_cnn.py --workdir runs/fashion_mnist_cnn
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "fashion_mnist"
    config.data.batch_size = 128
    config.data.eval_batch_size = 1000
    config.model.name = "cnn"
    config.model.conv_features = (32, 64)
    config.model.dense_features = 256
    config.model.dropout = 0.25
    config.train.epochs = 4.0
    config.train.log_every_steps = 100
    config.eval.every_steps = 500
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 100
    config.checkpoint.every_steps = 1000
    return config
