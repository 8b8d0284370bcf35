"""SimCLR on scikit-learn's 8x8 digits, labels unused: two views per image (shifts of a pixel, Gaussian noise) made
inside the step, an MLP encoder to a 64-d embedding, a projection head, NT-Xent over the global batch.

    jtrain train --config experiments/digits_contrastive.py --workdir runs/digits_contrastive

The end of the run probes the encoder's embeddings (before the head) against the labels beside a randomly
initialised encoder's, and draws a PCA scatter.
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 128
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.method.name = "contrastive"
    config.method.contrastive.embed_dim = 64
    config.method.contrastive.projection_dim = 32
    config.method.contrastive.temperature = 0.2
    config.method.contrastive.augment = "shift,noise"
    config.train.steps = 600
    config.train.log_every_steps = 100
    config.train.steps_per_call = 10
    config.eval.every_steps = 300
    config.checkpoint.every_steps = 300
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50
    return config
