"""A variational autoencoder on scikit-learn's 8x8 digits, labels unused: Bernoulli pixels, an 8-d latent, KL
warm-up over the first 300 steps.

    jtrain train --config experiments/digits_vae.py --workdir runs/digits_vae

Evaluation reports the ELBO per split; the end of the run probes the posterior means against the labels beside
a randomly initialised encoder's, and draws reconstructions, samples from the prior and a PCA scatter.
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 64
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.method.name = "vae"
    config.method.vae.latent_dim = 8
    config.method.vae.loss = "bce"
    config.method.vae.kl_warmup_steps = 300
    config.method.vae.decoder_hidden = (256,)
    config.train.steps = 1500
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
