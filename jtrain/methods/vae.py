"""Variational autoencoder (`method.name=vae`): maximise the evidence lower bound (ELBO), no labels.

The encoder (model.name's network with 2 * `method.vae.latent_dim` outputs) gives each input a diagonal Gaussian
q(z | x) = N(mu, exp(logvar)); z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (the reparameterisation trick:
the gradient flows through mu and logvar, the noise comes from the step's key); the MLP decoder of
autoencoder.py gives p(x | z), `method.vae.loss`: bce (Bernoulli pixels in [0, 1], the decoder's outputs are
logits) or mse (a unit-variance Gaussian in the model's input units). Per example, in nats:

    ELBO = E_q[log p(x | z)] - KL(q(z | x) || N(0, I)),   KL = 1/2 sum(mu^2 + exp(logvar) - 1 - logvar)

Training minimises -log p(x | z) + w * KL with one sample, w rising linearly from 0 to 1 over
`method.vae.kl_warmup_steps` (KL warm-up: the decoder learns to use the latent before the prior pulls it in).
Evaluation (every split, one sample drawn from a fixed key, full KL weight): loss = -ELBO, elbo, kl,
reconstruction_nll, reconstruction_mse (the decoding of mu, in input units). The embedding the probe scores is mu.
Pictures: inputs over their reconstructions, and samples decoded from z ~ N(0, I).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrain import metrics as metrics_lib
from jtrain.methods.autoencoder import PICTURES, Scale, check_decoder, check_inputs, image_pictures, make_decoder
from jtrain.methods.base import Batch, Method

SAMPLE_ROWS = 4  # rows of PICTURES samples from the prior


class VAE(nn.Module):
    encoder: nn.Module  # model.name's network with 2 * latent_dim outputs: [mu, logvar]
    decoder_hidden: Sequence[int]
    shape: tuple[int, ...]
    scale: Scale = Scale()
    decoder_kind: str = "mlp"  # mlp or conv (method.vae.decoder)

    def setup(self):
        self.decoder = make_decoder(self.decoder_kind, self.decoder_hidden, self.shape)

    def posterior(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        h = self.encoder(x, train=train).astype(jnp.float32)  # (B, 2L)
        mu, logvar = jnp.split(h, 2, axis=-1)  # (B, L) each
        return mu, jnp.clip(logvar, -10.0, 10.0)  # bounded: exp(logvar) neither vanishes nor overflows

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)  # (B, *shape)

    def forward(self, x: jax.Array, eps: jax.Array, train: bool = False):
        mu, logvar = self.posterior(x, train)
        z = mu + jnp.exp(0.5 * logvar) * eps  # (B, L) the reparameterised sample
        return self.decode(z), mu, logvar

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.decode(self.posterior(x, train)[0])


def nll(loss: str, scale: Scale, out: jax.Array, x: jax.Array) -> jax.Array:
    """-log p(x | z) per example (B,), summed over input dimensions."""
    axes = tuple(range(1, x.ndim))
    if loss == "bce":
        target = scale.to_unit(x)
        return (jnp.maximum(out, 0) - out * target + jnp.log1p(jnp.exp(-jnp.abs(out)))).sum(axes)
    dims = math.prod(x.shape[1:])
    return 0.5 * ((out - x) ** 2).sum(axes) + 0.5 * dims * math.log(2 * math.pi)


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    return 0.5 * (mu**2 + jnp.exp(logvar) - 1.0 - logvar).sum(-1)  # (B,)


def kl_weight(step: jax.Array, warmup_steps: int) -> jax.Array:
    if not warmup_steps:
        return jnp.ones((), jnp.float32)
    return jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / warmup_steps)


def build(config: ml_collections.ConfigDict) -> Method:
    c = config.method.vae
    return method(c.latent_dim, c.loss, c.kl_warmup_steps, tuple(c.decoder_hidden), config.data.normalize, c.decoder)


def method(latent_dim: int, loss_name: str = "bce", kl_warmup_steps: int = 0, decoder_hidden: Sequence[int] = (256,),
           normalize: bool = True, decoder: str = "mlp") -> Method:

    def wrap_model(model, data) -> VAE:
        return VAE(model, tuple(decoder_hidden), tuple(data.spec.input_shape), Scale.of(data, normalize), decoder)

    def check_data(spec) -> None:
        check_inputs(spec, "vae", "method.vae.loss", loss_name)
        check_decoder(decoder, decoder_hidden, spec, "method.vae.decoder")

    def terms(model, variables, x, key, train=False, rngs=None, mutable=False):
        eps = jax.random.normal(key, (x.shape[0], latent_dim), jnp.float32)  # (B, L)
        result = model.apply(variables, x, eps, train=train, method="forward", rngs=rngs, mutable=mutable)
        (out, mu, logvar), new_state = result if mutable is not False else (result, None)
        return nll(loss_name, model.scale, out, x), kl_divergence(mu, logvar), mu, new_state  # (B,), (B,)

    def loss(model, state, params, batch: Batch, model_state, rng, mutable):
        # The sample's key and the dropout key are separate draws from the step's key.
        recon, kl, _, new_model_state = terms(model, {"params": params, **model_state}, batch["inputs"],
                                              jax.random.fold_in(rng, 1), train=True, rngs={"dropout": rng},
                                              mutable=mutable)
        weight = kl_weight(state.step, kl_warmup_steps)
        return (recon + weight * kl).mean(), jnp.stack([recon, kl], -1), new_model_state  # aux (B, 2)

    def train_metrics(aux, batch, loss_value) -> dict:
        recon, kl = aux[:, 0].mean(), aux[:, 1].mean()
        return {"loss": loss_value, "elbo": -(recon + kl), "kl": kl, "reconstruction_nll": recon}

    def eval_sums(model, state, batch: Batch) -> dict:
        x, variables = batch["inputs"], {"params": state.params, **state.model_state}
        recon, kl, mu, _ = terms(model, variables, x, jax.random.key(0))
        mean_out = model.apply(variables, mu, method="decode")  # (B, ...)
        mean_reconstruction = model.scale.from_unit(jax.nn.sigmoid(mean_out)) if loss_name == "bce" else mean_out
        weight = batch["mask"].astype(jnp.float32)  # (B,)
        sq = ((mean_reconstruction - x) ** 2).mean(tuple(range(1, x.ndim)))
        return {"count": weight.sum(), "loss_sum": ((recon + kl) * weight).sum(), "kl_sum": (kl * weight).sum(),
                "nll_sum": (recon * weight).sum(), "sq_err_sum": (sq * weight).sum()}

    def report(totals: dict, data, role: str) -> dict:
        out = metrics_lib.report({k: totals[k] for k in ("count", "loss_sum")})
        n = max(float(totals["count"]), 1.0)
        out.update(elbo=-out["loss"], kl=float(totals["kl_sum"]) / n, reconstruction_nll=float(totals["nll_sum"]) / n,
                   reconstruction_mse=float(totals["sq_err_sum"]) / n)
        return out

    def embed(model, state, inputs):
        return model.apply({"params": state.params, **state.model_state}, inputs, method="posterior")[0]  # mu

    def pictures(model, state, batch: Batch, key) -> dict:
        variables = {"params": state.params, **state.model_state}
        x = batch["inputs"][:PICTURES]  # (N, H, W, C)
        to_unit = (lambda out: jax.nn.sigmoid(out)) if loss_name == "bce" else model.scale.to_unit
        reconstruction = to_unit(model.apply(variables, x, train=False))
        z = jax.random.normal(key, (SAMPLE_ROWS * PICTURES, latent_dim), jnp.float32)  # from the prior
        samples = to_unit(model.apply(variables, z, method="decode"))  # (R * N, H, W, C)
        return {"reconstructions": jnp.stack([model.scale.to_unit(x), reconstruction]),
                "vae_samples": samples.reshape(SAMPLE_ROWS, PICTURES, *samples.shape[1:])}

    return Method(
        name="vae", check_data=check_data,
        output_width=lambda spec: 2 * latent_dim, loss=loss, train_metrics=train_metrics, eval_sums=eval_sums,
        report=report, log_keys=("loss", "elbo", "kl", "reconstruction_mse"), wrap_model=wrap_model, embed=embed,
        pictures=image_pictures(pictures))
