"""Contrastive self-supervision (`method.name=contrastive`): SimCLR's NT-Xent between two augmented views.

Each training step makes two views of every image of the batch inside the jitted step, from the step's key
(`method.contrastive.augment`, in jnp: shift, flip, noise, erase), encodes both with model.name's network
(`method.contrastive.embed_dim` outputs: the embedding) and a projection head (Dense, ReLU, Dense to
`method.contrastive.projection_dim`), and scores each view against all 2B - 1 others at temperature t:

    loss_i = -log( exp(s(i, pos(i)) / t) / sum_{k != i} exp(s(i, k) / t) ),   s = cosine similarity

averaged over the 2B views. The negatives are the whole global batch: under jit the batch is one array sharded
over the mesh's data axis, and the (2B, 2B) similarity matrix is computed over all of it (XLA gathers the
projections across devices), so 8 devices train as one does (tests/test_unsupervised.py). With
optim.accumulate_steps > 1 the negatives are a micro-batch's. Labels are never read.

Evaluation (every split): loss, NT-Xent of two views of each eval batch drawn from a fixed key (padding is neither
an anchor nor a negative), and view_accuracy, the fraction of views whose most similar other view is their
partner. The embedding the probe scores is the encoder's output, before the projection head.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrain import metrics as metrics_lib
from jtrain.errors import ConfigError
from jtrain.methods.autoencoder import Scale, annotated
from jtrain.methods.base import Batch, Method

AUGMENTATIONS = ("shift", "flip", "noise", "erase")
IMAGE_ONLY = ("shift", "flip", "erase")  # these move or hide pixels: they need (H, W, C) inputs
NOISE_STD = 0.2  # Gaussian noise in the model's input units (standardised by default)


class Contrastive(nn.Module):
    encoder: nn.Module  # model.name's network with embed_dim outputs
    projection_dim: int
    background: float = 0.0  # the model-input value of a blank pixel: what shifts and erasing fill with

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        h = self.embed(x, train)  # (B, E)
        h = nn.relu(nn.Dense(h.shape[-1], kernel_init=annotated(nn.linear.default_kernel_init, ("embed", "mlp")),
                             bias_init=annotated(nn.initializers.zeros_init(), ("mlp",)), name="head_hidden")(h))
        return nn.Dense(self.projection_dim, kernel_init=annotated(nn.linear.default_kernel_init, ("mlp", None)),
                        name="head_out")(h)  # (B, P)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.encoder(x, train=train).astype(jnp.float32)  # (B, E)


def parse_augmentations(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in names:
        if n not in AUGMENTATIONS:
            raise ConfigError(f"config key 'method.contrastive.augment': unknown augmentation {n!r}; "
                              f"known: {', '.join(AUGMENTATIONS)}")
    if not names:
        raise ConfigError("config key 'method.contrastive.augment': two views need at least one augmentation")
    return names


def augment(x: jax.Array, key: jax.Array, names: tuple[str, ...], background: float = 0.0) -> jax.Array:
    """A random view of each example of `x` (B, ...), each with its own draws."""
    b = x.shape[0]
    for i, name in enumerate(names):
        k = jax.random.fold_in(key, i)
        if name == "shift":  # translate by up to an eighth of the size, filling with the background
            h, w = x.shape[1:3]
            ph, pw = max(1, h // 8), max(1, w // 8)
            padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=background)
            dy = jax.random.randint(jax.random.fold_in(k, 0), (b,), 0, 2 * ph + 1)  # (B,)
            dx = jax.random.randint(jax.random.fold_in(k, 1), (b,), 0, 2 * pw + 1)
            crop = lambda img, y0, x0: jax.lax.dynamic_slice(img, (y0, x0, 0), (h, w, img.shape[-1]))
            x = jax.vmap(crop)(padded, dy, dx)  # (B, H, W, C)
        elif name == "flip":  # left-right
            flip = jax.random.bernoulli(k, 0.5, (b, 1, 1, 1))
            x = jnp.where(flip, x[:, :, ::-1], x)
        elif name == "noise":
            x = x + NOISE_STD * jax.random.normal(k, x.shape, x.dtype)
        elif name == "erase":  # blank a random rectangle of a quarter of each side (cutout)
            h, w = x.shape[1:3]
            sh, sw = max(1, h // 4), max(1, w // 4)
            y0 = jax.random.randint(jax.random.fold_in(k, 0), (b, 1, 1, 1), 0, h - sh + 1)
            x0 = jax.random.randint(jax.random.fold_in(k, 1), (b, 1, 1, 1), 0, w - sw + 1)
            rows = jnp.arange(h)[None, :, None, None]
            cols = jnp.arange(w)[None, None, :, None]
            inside = (rows >= y0) & (rows < y0 + sh) & (cols >= x0) & (cols < x0 + sw)  # (B, H, W, 1)
            x = jnp.where(inside, background, x)
    return x


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float, mask: jax.Array | None = None):
    """NT-Xent of the projections of two views (B, P) each. Returns (per-view losses (2B,), hits (2B,): a view's
    most similar other view is its partner). `mask` (B,) drops padding as anchors and as negatives."""
    b = z1.shape[0]
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)  # (2B, P)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    logits = z @ z.T / temperature  # (2B, 2B)
    real = jnp.ones((2 * b,), bool) if mask is None else jnp.concatenate([mask, mask]).astype(bool)  # (2B,)
    excluded = jnp.eye(2 * b, dtype=bool) | ~real[None, :]  # itself and padding are no candidates
    logits = jnp.where(excluded, -jnp.inf, logits)
    partner = jnp.concatenate([jnp.arange(b) + b, jnp.arange(b)])  # (2B,)
    positive = jnp.take_along_axis(logits, partner[:, None], axis=-1)[:, 0]  # (2B,)
    losses = jax.nn.logsumexp(logits, axis=-1) - positive  # (2B,)
    hits = (jnp.argmax(logits, axis=-1) == partner).astype(jnp.float32)
    return losses, hits


def build(config: ml_collections.ConfigDict) -> Method:
    c = config.method.contrastive
    return method(c.embed_dim, c.projection_dim, c.temperature, parse_augmentations(c.augment), config.data.normalize)


def method(embed_dim: int, projection_dim: int = 32, temperature: float = 0.2,
           augmentations: Sequence[str] = ("shift", "noise"), normalize: bool = True) -> Method:
    names = tuple(augmentations)

    def check_data(spec) -> None:
        if spec.is_text or spec.examples:
            raise ConfigError(f"config key 'method.contrastive.augment': {', '.join(names)} cannot make views of "
                              f"{spec.name}'s integer tokens ({spec.tokenizer or spec.examples})")
        moving = [n for n in names if n in IMAGE_ONLY]
        if moving and not spec.is_image:
            raise ConfigError(f"config key 'method.contrastive.augment': {', '.join(moving)} need images (H, W, C); "
                              f"{spec.name} has inputs of shape {tuple(spec.input_shape)} (noise alone applies)")

    def check_batch(global_batch: int, data_parallel: int) -> None:
        if global_batch // data_parallel < 2:
            raise ConfigError(f"config key 'data.batch_size': contrastive needs at least 2 examples per device, got "
                              f"{global_batch} over {data_parallel} data-parallel devices")

    def wrap_model(model, data) -> Contrastive:
        return Contrastive(model, projection_dim, Scale.of(data, normalize).from_unit(0.0))

    def views(model, x, key):
        return augment(x, jax.random.fold_in(key, 0), names, model.background), \
            augment(x, jax.random.fold_in(key, 1), names, model.background)

    def loss(model, state, params, batch: Batch, model_state, rng, mutable):
        del state
        x = batch["inputs"]
        b = x.shape[0]
        v1, v2 = views(model, x, jax.random.fold_in(rng, 1))  # the views' key apart from the dropout key
        z, new_model_state = model.apply({"params": params, **model_state}, jnp.concatenate([v1, v2]), train=True,
                                         rngs={"dropout": rng}, mutable=mutable)  # (2B, P)
        losses, hits = nt_xent(z[:b], z[b:], temperature)
        return losses.mean(), jnp.stack([losses[:b] + losses[b:], hits[:b] + hits[b:]], -1) / 2, new_model_state

    def train_metrics(aux, batch, loss_value) -> dict:
        return {"loss": loss_value, "view_accuracy": aux[:, 1].mean()}

    def eval_sums(model, state, batch: Batch) -> dict:
        x = batch["inputs"]
        b = x.shape[0]
        v1, v2 = views(model, x, jax.random.key(0))
        z = model.apply({"params": state.params, **state.model_state}, jnp.concatenate([v1, v2]), train=False)
        losses, hits = nt_xent(z[:b], z[b:], temperature, batch["mask"])
        weight = batch["mask"].astype(jnp.float32)  # (B,)
        per_example = jnp.where(weight > 0, (losses[:b] + losses[b:]) / 2, 0.0)  # padding rows are inf
        return {"count": weight.sum(), "loss_sum": (per_example * weight).sum(),
                "hits_sum": ((hits[:b] + hits[b:]) / 2 * weight).sum()}

    def report(totals: dict, data, role: str) -> dict:
        out = metrics_lib.report({k: totals[k] for k in ("count", "loss_sum")})
        out["view_accuracy"] = float(totals["hits_sum"]) / max(float(totals["count"]), 1.0)
        return out

    def embed(model, state, inputs):
        return model.apply({"params": state.params, **state.model_state}, inputs, method="embed")

    return Method(name="contrastive", check_data=check_data, output_width=lambda spec: embed_dim, loss=loss,
                  train_metrics=train_metrics, eval_sums=eval_sums, report=report,
                  log_keys=("loss", "view_accuracy"), wrap_model=wrap_model, check_batch=check_batch, embed=embed)
