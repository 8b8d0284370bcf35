"""Regularisation together on scikit-learn's digits: an MLP with an L2 penalty on its kernels, dropout, and
early stopping on validation accuracy (the run is deliberately too long; it stops and reports the best step).

Adam rather than AdamW, so the L2 term in the loss is the only weight regulariser.

    jtrain train --config experiments/digits_mlp_l2.py --workdir runs/digits_mlp_l2
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 32
    config.model.name = "mlp"
    config.model.hidden_sizes = (256, 128)
    config.model.dropout = 0.2
    config.loss.l2 = 1e-4
    config.train.epochs = 200.0  # far more than needed: early stopping ends it
    config.eval.every_steps = 100
    config.eval.best_metric = "accuracy"
    config.train.early_stopping_patience = 5
    config.train.early_stopping_min_delta = 0.0
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.checkpoint.every_steps = 0
    return config
