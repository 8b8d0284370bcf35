"""Active learning on Fashion-MNIST (Debian dataset-fashion-mnist): the 60k training images as the pool, an MLP
with dropout trained for a fixed number of steps per round.

    jtrain active --config experiments/fashion_active.py --workdir runs/fashion_active \
        --initial 100 --query 100 --rounds 10 --strategy random,entropy,margin,least_confidence --seeds 3
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "fashion_mnist"
    config.data.batch_size = 32
    config.data.eval_batch_size = 1000
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.model.dropout = 0.2
    config.model.batch_norm = False
    config.train.steps = 300
    config.train.log_every_steps = 100
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.checkpoint.every_steps = 0
    return config
