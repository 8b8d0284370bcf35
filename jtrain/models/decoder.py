"""A GPT-style decoder: tokens (B, T) int32 -> next-token logits (B, T, vocab) float32.

Token embeddings plus learned positions (or rotary embeddings on queries and keys), `num_layers` pre-layer-norm
blocks [LN -> causal multi-head attention -> residual; LN -> MLP (gelu) -> residual], a final LN and an untied
output projection computed in float32. Every parameter carries logical axis names (`vocab`, `embed`, `heads`,
`kv`, `mlp`, and `layers` for the scanned stack) that `mesh.rules` maps onto the device mesh (jtrain/sharding.py).

`decode=True` (`model.clone(decode=True)`, used by jtrain/sample.py) keeps each block's keys and values for
`max_len` positions in the "cache" collection, so generation feeds one new token per call; the call without it
is unchanged.

`scan_layers` traces and compiles one block and runs it over parameters stacked on a leading `layers` axis, so
compile time does not grow with depth; `remat` recomputes each block's activations in the backward pass instead
of keeping them (less memory, about a third more compute; `remat_policy="dots"` keeps the weight products and
recomputes the rest). `attention="fused"` runs cuDNN's flash attention on a GPU in half precision, and
`head_float32=False` the output projection in the compute dtype: the settings of the GPU MFU measurement in
BENCHMARKS.md.

Training it by hand, e.g. on random tokens (the language-model task wiring lives in the data and loss modules):

    model = Decoder(vocab_size=256, num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, max_len=32)
    tokens = jax.random.randint(jax.random.key(1), (8, 33), 0, 256)          # (B, T + 1)
    params = nn.unbox(model.init(jax.random.key(0), tokens[:, :-1], train=False))["params"]

    def loss_fn(params, tokens, mask):                                          # mask (B, T): 1 = counts
        logits = model.apply({"params": params}, tokens[:, :-1], train=False)  # (B, T, V)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])  # (B, T)
        return (losses * mask).sum() / mask.sum()
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jtrain.errors import ConfigError
from jtrain.models.family import Family
from jtrain.sharding import constrain

POSITIONS = ("learned", "rotary")
# einsum: scores (B, H, T, T) materialised in float32 by einsums, softmax, einsum with the values; runs anywhere and
# takes sharding constraints on the weights. fused: jax.nn.dot_product_attention, which on a GPU with bfloat16 or
# float16 picks cuDNN's flash attention (scores never stored: less memory and time at long sequences) and XLA's
# einsum form elsewhere. The two give the same result up to rounding.
ATTENTION = ("einsum", "fused")
# What a rematerialised block keeps for the backward pass. full: only its input (recomputes the whole block, about a
# third more compute). dots: also the outputs of its products with weights (recomputes norms, gelu and attention:
# most of remat's memory saving at a fraction of its compute).
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _init(stddev: float, names: tuple):
    """A normal initializer whose parameter carries logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(dtype, name: str) -> nn.LayerNorm:
    scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",))
    return nn.LayerNorm(dtype=dtype, name=name, scale_init=scale_init, bias_init=_zeros(("embed",)))


def rotary(x: jax.Array, offset=0, positions: jax.Array | None = None) -> jax.Array:
    """Rotary position embedding of queries or keys (B, T, H, D): pairs (i, i + D/2) rotate by position * freq_i.
    `offset` is the position of the first row (decoding with a cache continues where it stopped); `positions`
    (B, T), when given, are each token's own (packed sequences restart at 0 in every segment)."""
    _, t, _, d = x.shape
    half = d // 2
    freq = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))  # (D/2,)
    pos = jnp.arange(t, dtype=jnp.float32)[None] + offset if positions is None else positions.astype(jnp.float32)
    angles = pos[..., None] * freq  # (1 or B, T, D/2)
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]  # (1 or B, T, 1, D/2)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)  # (B, T, H, D/2) each
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)  # (B, T, H, D)


class Block(nn.Module):
    """One pre-LN transformer block. Called as `(x, None) -> (x, None)` so that `nn.scan` can carry x."""

    num_heads: int
    mlp_dim: int
    num_layers: int  # scales the residual projections' init (GPT-2: 0.02 / sqrt(2 * layers))
    position: str = "learned"
    attention: str = "einsum"  # see ATTENTION
    dropout: float = 0.0
    deterministic: bool = True
    dtype: jnp.dtype = jnp.float32
    decode: bool = False  # key-value cache of max_len positions in the "cache" collection (jtrain/sample.py)
    max_len: int = 0  # cache length when decode

    @nn.compact
    def __call__(self, x: jax.Array, packing: tuple[jax.Array, jax.Array] | None) -> tuple[jax.Array, None]:
        # packing: None, or (segment_ids, positions) (B, T) each for packed sequences (see Decoder)
        _, t, e = x.shape  # (B, T, E)
        h, d = self.num_heads, e // self.num_heads
        out_std = 0.02 / math.sqrt(2 * self.num_layers)

        # Causal self-attention.
        y = _layer_norm(self.dtype, "ln_attn")(x)  # (B, T, E)
        qkv = [nn.DenseGeneral((h, d), dtype=self.dtype, name=n, kernel_init=_init(0.02, ("embed", "heads", "kv")),
                               bias_init=_zeros(("heads", "kv")))(y) for n in ("query", "key", "value")]
        q, k, v = (constrain(a, ("batch", None, "heads", "kv")) for a in qkv)  # (B, T, H, D) each
        offset = 0
        if self.decode:  # the new rows sit at positions index .. index + T - 1
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            offset = index.value
        positions = None if packing is None else packing[1]
        if self.position == "rotary":
            q, k = rotary(q, offset, positions), rotary(k, offset, positions)
        if self.decode:
            k, v, causal = self._cached(k, v, offset)  # (B, L, H, D) keys/values of every position so far
            index.value = offset + t
        else:
            causal = jnp.tril(jnp.ones((t, t), dtype=bool))  # (T, T): query i sees keys <= i
            if packing is not None:  # ... and only keys of its own segment: packed examples never see each other
                segments = packing[0]
                same = segments[:, None, :, None] == segments[:, None, None, :]  # (B, 1, T, T)
                causal = causal[None, None] & same
        if self.attention == "fused":
            # A plain causal mask goes in as is_causal, which cuDNN applies without reading a (T, T) mask.
            plain = not self.decode and packing is None
            mask = None if plain else causal if causal.ndim == 4 else causal[None, None]  # (B or 1, 1, T, T or L)
            # jax picks XLA's form unless told otherwise; cuDNN's flash attention takes half precision, head size
            # a multiple of 8 up to 128, and (here) the plain causal mask.
            cudnn = (plain and jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
                     and d % 8 == 0 and d <= 128)
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=plain,
                                             implementation="cudnn" if cudnn else "xla")  # (B, T, H, D)
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)  # (B, H, T, T or L)
            scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # (B, H, T, T), softmax in float32
            weights = constrain(weights, ("batch", "heads", None, None))
            y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)  # (B, T, H, D)
        y = nn.DenseGeneral(e, axis=(-2, -1), dtype=self.dtype, name="out", bias_init=_zeros(("embed",)),
                            kernel_init=_init(out_std, ("heads", "kv", "embed")))(y)  # (B, T, E)
        x = constrain(x + nn.Dropout(self.dropout, deterministic=self.deterministic)(y), ("batch", None, "embed"))

        # MLP.
        y = _layer_norm(self.dtype, "ln_mlp")(x)
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in", kernel_init=_init(0.02, ("embed", "mlp")),
                     bias_init=_zeros(("mlp",)))(y)  # (B, T, M)
        y = constrain(nn.gelu(y), ("batch", None, "mlp"))
        y = nn.Dense(e, dtype=self.dtype, name="mlp_out", kernel_init=_init(out_std, ("mlp", "embed")),
                     bias_init=_zeros(("embed",)))(y)  # (B, T, E)
        x = constrain(x + nn.Dropout(self.dropout, deterministic=self.deterministic)(y), ("batch", None, "embed"))
        return x, None

    def _cached(self, k: jax.Array, v: jax.Array, offset: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Writes the new keys/values (B, T, H, D) at `offset` into the cache (B, L, H, D); returns the whole cache
        and the (T, L) mask of the positions each new query may see (its own and earlier ones)."""
        b, t, h, d = k.shape
        cached_k = self.variable("cache", "cached_key", jnp.zeros, (b, self.max_len, h, d), k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, (b, self.max_len, h, d), v.dtype)
        cached_k.value = jax.lax.dynamic_update_slice_in_dim(cached_k.value, k, offset, axis=1)
        cached_v.value = jax.lax.dynamic_update_slice_in_dim(cached_v.value, v, offset, axis=1)
        query_pos = offset + jnp.arange(t)  # (T,)
        visible = jnp.arange(self.max_len)[None, :] <= query_pos[:, None]  # (T, L)
        return cached_k.value, cached_v.value, visible


class Decoder(nn.Module):
    vocab_size: int
    num_layers: int
    num_heads: int
    embed_dim: int
    mlp_dim: int
    max_len: int
    position: str = "learned"  # learned (a table of max_len positions) or rotary
    attention: str = "einsum"  # einsum or fused (see ATTENTION)
    dropout: float = 0.0
    scan_layers: bool = False
    remat: bool = False
    remat_policy: str = "full"  # see REMAT_POLICIES
    dtype: jnp.dtype = jnp.float32
    head_float32: bool = True  # the output projection in float32 whatever dtype says
    decode: bool = False  # incremental decoding with a key-value cache (model.clone(decode=True), jtrain/sample.py)

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool, segment_ids: jax.Array | None = None) -> jax.Array:
        """`segment_ids` (B, T) marks packed examples (SFT): attention stays inside a segment and positions restart
        at 0 in each one. None (pretraining) lets a row attend across documents."""
        tokens = tokens.astype(jnp.int32)  # (B, T); jtrain's shape-only init passes float zeros
        t = tokens.shape[1]
        if t > self.max_len:
            raise ConfigError(f"config key 'model.max_len': sequence length {t} exceeds model.max_len={self.max_len}")
        packing = None
        if segment_ids is not None:
            segment_ids = segment_ids.astype(jnp.int32)  # (B, T)
            index = jnp.broadcast_to(jnp.arange(t), segment_ids.shape)  # (B, T)
            first = jnp.ones_like(segment_ids[:, :1], bool)  # (B, 1)
            starts = jnp.concatenate([first, segment_ids[:, 1:] != segment_ids[:, :-1]], 1)  # (B, T) segment starts
            positions = index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # (B, T) offset in its segment
            packing = (segment_ids, positions)
        x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="embed",
                     embedding_init=_init(0.02, ("vocab", "embed")))(tokens)  # (B, T, E)
        if self.position == "learned":
            # Position rows are few and tied to no mesh axis: no logical name, so only "*" may split them.
            table = self.param("pos_embed", _init(0.01, (None, "embed")), (self.max_len, self.embed_dim))  # (L, E)
            if self.decode:  # rows continue at the cache's position
                index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
                x = x + jax.lax.dynamic_slice_in_dim(table, index.value, t)[None].astype(self.dtype)
                index.value = index.value + t
            else:
                x = x + (table[None, :t] if segment_ids is None else table[positions]).astype(self.dtype)
        # Pin the batch split of activations: otherwise the partitioner may follow FSDP-split weights instead.
        x = constrain(nn.Dropout(self.dropout, deterministic=not train)(x), ("batch", None, "embed"))

        block = Block
        if self.remat:
            # Inside scan, XLA cannot move the recomputation out of the loop, so CSE prevention is not needed.
            block = nn.remat(Block, prevent_cse=not self.scan_layers, policy=REMAT_POLICIES[self.remat_policy])
        kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, num_layers=self.num_layers,
                      position=self.position, attention=self.attention, dropout=self.dropout,
                      deterministic=not train, dtype=self.dtype)
        if self.decode:
            kwargs.update(decode=True, max_len=self.max_len)
        if self.scan_layers:
            stack = nn.scan(block, variable_axes={"params": 0, "cache": 0},  # cache: one per layer when decoding
                            split_rngs={"params": True, "dropout": True},
                            in_axes=nn.broadcast,  # every layer sees the same packing
                            length=self.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(**kwargs, name="layers")(x, packing)  # params stacked: (num_layers, ...)
        else:
            for i in range(self.num_layers):
                x, _ = block(**kwargs, name=f"block_{i}")(x, packing)

        x = _layer_norm(self.dtype, "ln_final")(x)
        # By default the head computes in float32 so the loss sees full-precision logits. In bfloat16 it runs at the
        # matrix units' full rate (a float32 head is a visible part of a large model's step on GPUs), and the
        # logits are cast to float32 for the loss.
        head_dtype = jnp.float32 if self.head_float32 else self.dtype
        logits = nn.Dense(self.vocab_size, dtype=head_dtype, name="head", kernel_init=_init(0.02, ("embed", "vocab")),
                          bias_init=_zeros(("vocab",)))(x).astype(jnp.float32)  # (B, T, V)
        return constrain(logits, ("batch", None, "vocab"))


def build(config: ml_collections.ConfigDict, num_outputs: int) -> Decoder:
    """The decoder from `model.*`; its vocabulary is model.vocab_size, else the dataset's number of classes."""
    vocab = config.vocab_size or num_outputs
    if vocab <= 0:
        raise ConfigError("config key 'model.vocab_size': set the decoder's vocabulary size (> 0)")
    if config.position not in POSITIONS:
        raise ConfigError(f"config key 'model.position': must be one of {', '.join(POSITIONS)}, "
                          f"got {config.position!r}")
    for key in ("num_layers", "num_heads", "embed_dim", "mlp_dim", "max_len"):
        if config[key] <= 0:
            raise ConfigError(f"config key 'model.{key}': must be > 0, got {config[key]}")
    if config.embed_dim % config.num_heads:
        raise ConfigError(f"config key 'model.embed_dim': {config.embed_dim} is not divisible by model.num_heads="
                          f"{config.num_heads}")
    if config.attention not in ATTENTION:
        raise ConfigError(f"config key 'model.attention': must be one of {', '.join(ATTENTION)}, "
                          f"got {config.attention!r}")
    if config.remat_policy not in REMAT_POLICIES:
        raise ConfigError(f"config key 'model.remat_policy': must be one of {', '.join(REMAT_POLICIES)}, "
                          f"got {config.remat_policy!r}")
    if config.position == "rotary" and (config.embed_dim // config.num_heads) % 2:
        raise ConfigError("config key 'model.position': rotary needs an even head size "
                          "(model.embed_dim / model.num_heads)")
    return Decoder(vocab_size=vocab, num_layers=config.num_layers, num_heads=config.num_heads,
                   embed_dim=config.embed_dim, mlp_dim=config.mlp_dim, max_len=config.max_len, position=config.position,
                   attention=config.attention,
                   dropout=config.dropout, scan_layers=config.scan_layers, remat=config.remat,
                   remat_policy=config.remat_policy, dtype=jnp.dtype(config.dtype), head_float32=config.head_float32)


def flops_per_token(config: ml_collections.ConfigDict, model: Decoder, seq_len: int) -> float:
    """Model FLOPs per trained token, 6 N + 12 L T E (the derivation is in jtrain/throughput.py)."""
    return matmul_flops_per_token(config, model.vocab_size, seq_len)


def matmul_flops_per_token(config: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> float:
    e, m, layers = config.embed_dim, config.mlp_dim, config.num_layers
    matmul_weights = layers * (4 * e * e + 2 * e * m) + e * vocab_size  # (q, k, v, out) + (mlp in, out); head
    return 6.0 * matmul_weights + 12.0 * layers * seq_len * e


def plan_tokens(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(vocabulary, sequence length) of the token batches `jtrain plan` shapes without reading data."""
    if config.model.vocab_size <= 0:
        raise ConfigError("config key 'model.vocab_size': jtrain plan needs the decoder's vocabulary size")
    return config.model.vocab_size, min(config.data.seq_len or config.model.max_len, config.model.max_len)


# The transformer sizes are shared with bert (jtrain/models/bert.py), which declares them with the same defaults.
TRANSFORMER_FIELDS = dict(
    vocab_size=0,  # token vocabulary; decoder: 0 = the dataset's number of classes
    num_layers=2,  # transformer blocks
    num_heads=4,  # attention heads (embed_dim must be divisible by it)
    embed_dim=128,  # width of the residual stream
    mlp_dim=512,  # hidden width of each block's MLP
    max_len=128,  # longest sequence (rows of the learned position table)
)

FAMILY = Family(build, fields=dict(
    TRANSFORMER_FIELDS,
    position="learned",  # decoder position encoding: learned (added table) or rotary (on queries/keys)
    head_float32=True,  # decoder: output projection in float32 (False: in model.dtype, logits cast after)
    attention="einsum",  # decoder: einsum (scores materialised) or fused (cuDNN flash attention on GPUs)
    scan_layers=False,  # decoder: nn.scan over the blocks (one compiled block; params stacked on 'layers')
    remat=False,  # decoder: recompute each block's activations in the backward pass (less memory)
    remat_policy="full",  # decoder, with remat: full (keep nothing) or dots (keep the weight products)
), flops_per_token=flops_per_token, samples=True, plan_tokens=plan_tokens)
