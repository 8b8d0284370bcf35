"""The default experiment: a small CNN on scikit-learn's 8x8 digits (70/15/15 split); >= 97% test accuracy.

    jtrain train --config experiments/digits_cnn.py --workdir runs/digits_cnn
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 32
    config.data.augment = "shift"
    config.model.name = "cnn"
    config.model.conv_features = (32, 64)
    config.model.dense_features = 128
    config.model.dropout = 0.1
    config.train.epochs = 30.0
    config.eval.every_steps = 200
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50
    config.checkpoint.every_steps = 400
    return config
