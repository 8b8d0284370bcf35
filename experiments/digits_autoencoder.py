"""An autoencoder on scikit-learn's 8x8 digits, labels unused: an MLP encoder to a 16-d latent, an MLP decoder.

    jtrain train --config experiments/digits_autoencoder.py --workdir runs/digits_autoencoder

The end of the run scores the latent against the digit labels (linear probe, kNN, k-means) beside a randomly
initialised encoder's, and draws reconstructions and a PCA scatter into WORKDIR/plots/.
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 64
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.method.name = "autoencoder"
    config.method.autoencoder.latent_dim = 16
    config.method.autoencoder.loss = "mse"
    config.method.autoencoder.decoder_hidden = (256,)
    config.train.steps = 1000
    config.train.log_every_steps = 100
    config.train.steps_per_call = 10
    config.eval.every_steps = 500
    config.checkpoint.every_steps = 500
    config.optim.name = "adamw"
    config.optim.learning_rate = 2e-3
    config.optim.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 50
    return config
