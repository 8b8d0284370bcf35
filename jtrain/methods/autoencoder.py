"""Autoencoder (`method.name=autoencoder`): reconstruct the inputs through a bottleneck, no labels.

The encoder is model.name's network (MLP, CNN, or your own) with `method.autoencoder.latent_dim` outputs; the
decoder (`method.autoencoder.decoder`) maps the latent back to the input's shape: an MLP, or for images
transposed convolutions (`conv`: a small grid, doubled in size by each width of `decoder_hidden`). `method.autoencoder.loss`:

    mse   the mean squared error over input dimensions, in the units the model sees (standardised by default)
    bce   a Bernoulli likelihood of images in [0, 1]: the decoder's outputs are logits of the pixels, the targets
          the inputs with their standardisation undone (the mean binary cross-entropy per pixel)

Evaluation (every split): loss (the objective) and reconstruction_mse (in the model's input units, for either loss,
so runs with either compare). The latent is the embedding the end of the run probes (jtrain/probe.py). Pictures:
inputs over their reconstructions. The decoder and the input checks here serve the VAE too (vae.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain import metrics as metrics_lib
from jtrain.errors import ConfigError
from jtrain.methods.base import Batch, Method

annotated = nn.with_logical_partitioning  # logical axis names for jtrain/sharding.py
PICTURES = 8  # examples per picture row


@dataclasses.dataclass(frozen=True)
class Scale:
    """How the model's inputs relate to [0, 1] pixels: inputs = (pixels - mean) / std (0 and 1 unstandardised)."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, data, normalize: bool) -> Scale:
        stats = data.stats
        if not normalize or stats.mean is None or np.ndim(stats.mean) != 0:  # per-feature tables: no pixels
            return cls()
        return cls(float(stats.mean), float(stats.std))

    def to_unit(self, x: jax.Array) -> jax.Array:
        return jnp.clip(x * self.std + self.mean, 0.0, 1.0)

    def from_unit(self, p: jax.Array) -> jax.Array:
        return (p - self.mean) / self.std


def check_inputs(spec, method: str, loss_key: str = "", loss: str = "") -> None:
    """The data must be arrays of real values; a Bernoulli likelihood (`loss` bce) needs images in [0, 1]."""
    if spec.is_text or spec.examples:
        raise ConfigError(f"config key 'method.name': {method} reconstructs real-valued inputs; {spec.name} holds "
                          f"integer tokens ({spec.tokenizer or spec.examples}), which it cannot model")
    if loss == "bce" and not spec.is_image:
        raise ConfigError(f"config key {loss_key!r}: bce models pixels in [0, 1]; {spec.name} has inputs of shape "
                          f"{tuple(spec.input_shape)}, not images (use mse)")


class Decoder(nn.Module):
    """Latent (B, L) -> [Dense, ReLU] per hidden width -> Dense -> (B, *shape)."""

    hidden: Sequence[int]
    shape: tuple[int, ...]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        names = ("embed", "mlp")
        for width in self.hidden:
            z = nn.relu(nn.Dense(width, kernel_init=annotated(nn.linear.default_kernel_init, names),
                                 bias_init=annotated(nn.initializers.zeros_init(), names[1:]))(z))  # (B, width)
            names = names[::-1]
        out = nn.Dense(math.prod(self.shape), kernel_init=annotated(nn.linear.default_kernel_init, (names[0], None)),
                       bias_init=nn.initializers.zeros_init())(z)  # (B, D)
        return out.reshape((z.shape[0], *self.shape))  # (B, *shape)


class ConvDecoder(nn.Module):
    """Latent (B, L) -> Dense to a (H / 2^k, W / 2^k, widths[0]) grid -> [ConvTranspose 3x3 stride 2, ReLU] per
    width (k of them, each doubling the size) -> Conv 3x3 to the image's channels: (B, H, W, C)."""

    widths: Sequence[int]
    shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h, w, c = self.shape
        k = len(self.widths)
        grid = (h >> k, w >> k, self.widths[0])
        x = nn.relu(nn.Dense(math.prod(grid), kernel_init=annotated(nn.linear.default_kernel_init, ("embed", None)),
                             bias_init=nn.initializers.zeros_init())(z)).reshape((z.shape[0], *grid))
        for width in self.widths:
            x = nn.relu(nn.ConvTranspose(width, (3, 3), strides=(2, 2), padding="SAME")(x))  # doubles H and W
        return nn.Conv(c, (3, 3), padding="SAME")(x)  # (B, H, W, C)


DECODERS = ("mlp", "conv")


def make_decoder(kind: str, hidden: Sequence[int], shape: tuple[int, ...]) -> nn.Module:
    """The decoder of `kind` (method.*.decoder): an MLP of `hidden` widths, or transposed convolutions of them."""
    return ConvDecoder(tuple(hidden), shape) if kind == "conv" else Decoder(tuple(hidden), shape)


def check_decoder(kind: str, hidden: Sequence[int], spec, key: str) -> None:
    """A convolutional decoder needs images whose sides halve len(hidden) times."""
    if kind not in DECODERS:
        raise ConfigError(f"config key {key!r}: must be one of {', '.join(DECODERS)}, got {kind!r}")
    if kind != "conv":
        return
    shape = tuple(spec.input_shape)
    if not hidden:
        raise ConfigError(f"config key {key.rsplit('.', 1)[0]}.decoder_hidden: a conv decoder needs at least one width")
    k = len(hidden)
    if len(shape) != 3 or shape[0] % 2**k or shape[1] % 2**k:
        raise ConfigError(f"config key {key!r}: conv decodes images whose height and width divide by 2^{k} "
                          f"({k} decoder widths); {spec.name} has inputs of shape {shape} (use mlp, or fewer widths)")


class AutoEncoder(nn.Module):
    encoder: nn.Module  # model.name's network with latent_dim outputs
    decoder_hidden: Sequence[int]
    shape: tuple[int, ...]  # one example's input shape
    scale: Scale = Scale()  # the inputs' relation to [0, 1] pixels (bce, pictures)
    decoder_kind: str = "mlp"  # mlp or conv (method.autoencoder.decoder)

    def setup(self):
        self.decoder = make_decoder(self.decoder_kind, self.decoder_hidden, self.shape)

    def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.encoder(x, train=train).astype(jnp.float32)  # (B, L)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)  # (B, *shape): inputs (mse) or pixel logits (bce)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.decode(self.encode(x, train))


def reconstruction_loss(loss: str, scale: Scale):
    """(decoder outputs, inputs) -> (per-example objective (B,), reconstruction in input units (B, ...))."""

    def fn(out: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        axes = tuple(range(1, x.ndim))
        if loss == "bce":
            target = scale.to_unit(x)  # (B, ...) pixels in [0, 1]
            per_dim = jnp.maximum(out, 0) - out * target + jnp.log1p(jnp.exp(-jnp.abs(out)))  # BCE with logits
            return per_dim.mean(axes), scale.from_unit(jax.nn.sigmoid(out))
        return ((out - x) ** 2).mean(axes), out

    return fn


def build(config: ml_collections.ConfigDict) -> Method:
    c = config.method.autoencoder
    return method(c.latent_dim, c.loss, tuple(c.decoder_hidden), config.data.normalize, c.decoder)


def method(latent_dim: int, loss_name: str = "mse", decoder_hidden: Sequence[int] = (256,),
           normalize: bool = True, decoder: str = "mlp") -> Method:
    def wrap_model(model, data) -> AutoEncoder:
        return AutoEncoder(model, tuple(decoder_hidden), tuple(data.spec.input_shape), Scale.of(data, normalize),
                           decoder)

    def check_data(spec) -> None:
        check_inputs(spec, "autoencoder", "method.autoencoder.loss", loss_name)
        check_decoder(decoder, decoder_hidden, spec, "method.autoencoder.decoder")

    def recon(model, out, x):
        return reconstruction_loss(loss_name, model.scale)(out, x)

    def loss(model, state, params, batch: Batch, model_state, rng, mutable):
        del state
        out, new_model_state = model.apply({"params": params, **model_state}, batch["inputs"], train=True,
                                           rngs={"dropout": rng}, mutable=mutable)  # (B, ...)
        per_example, _ = recon(model, out, batch["inputs"])  # (B,)
        return per_example.mean(), per_example, new_model_state

    def eval_sums(model, state, batch: Batch) -> dict:
        x = batch["inputs"]
        out = model.apply({"params": state.params, **state.model_state}, x, train=False)
        per_example, reconstruction = recon(model, out, x)  # (B,), (B, ...)
        return recon_sums(per_example, reconstruction, x, batch["mask"])

    def pictures(model, state, batch: Batch, key) -> dict:
        del key
        x = batch["inputs"][:PICTURES]  # (N, H, W, C)
        out = model.apply({"params": state.params, **state.model_state}, x, train=False)
        _, reconstruction = recon(model, out, x)
        scale = model.scale
        return {"reconstructions": jnp.stack([scale.to_unit(x), scale.to_unit(reconstruction)])}  # (2, N, H, W, C)

    return Method(
        name="autoencoder", check_data=check_data,
        output_width=lambda spec: latent_dim, loss=loss,
        train_metrics=lambda per_example, batch, loss_value: {"loss": loss_value}, eval_sums=eval_sums,
        report=lambda totals, data, role: recon_report(totals), log_keys=("loss", "reconstruction_mse"),
        wrap_model=wrap_model, embed=embed, pictures=image_pictures(pictures))


def recon_sums(per_example: jax.Array, reconstruction: jax.Array, x: jax.Array, mask: jax.Array) -> dict:
    """A batch's sums: count, objective and squared reconstruction error (mean over dims), padding masked."""
    weight = mask.astype(jnp.float32)  # (B,)
    sq = ((reconstruction - x) ** 2).mean(tuple(range(1, x.ndim)))  # (B,)
    return {"count": weight.sum(), "loss_sum": (per_example * weight).sum(), "sq_err_sum": (sq * weight).sum()}


def recon_report(totals: dict) -> dict:
    out = metrics_lib.report({k: totals[k] for k in ("count", "loss_sum")})
    out["reconstruction_mse"] = float(totals["sq_err_sum"]) / max(float(totals["count"]), 1.0)
    return out


def embed(model, state, inputs: jax.Array) -> jax.Array:
    """The latent code: the encoder's outputs (B, L)."""
    return model.apply({"params": state.params, **state.model_state}, inputs, method="encode")


def image_pictures(fn):
    """`fn` for image batches; other data (tables) has nothing to draw."""
    return lambda model, state, batch, key: fn(model, state, batch, key) if batch["inputs"].ndim == 4 else {}
