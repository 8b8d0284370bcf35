"""Active learning on scikit-learn's digits: an MLP with dropout (so BALD's Monte Carlo passes have something to
sample) trained for a fixed number of steps per round, whatever the labelled set's size.

    jtrain active --config experiments/digits_active.py --workdir runs/digits_active \
        --initial 20 --query 20 --rounds 10 --strategy random,entropy,margin,least_confidence,bald --seeds 3
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 16
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.model.dropout = 0.2
    config.model.batch_norm = False
    config.train.steps = 200
    config.train.log_every_steps = 50
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.checkpoint.every_steps = 0
    return config
