"""A GPT-style decoder: tokens (B, T) int32 -> next-token logits (B, T, vocab) float32.

Token embeddings plus learned positions (or rotary embeddings on queries and keys), `num_layers` pre-norm
blocks [norm -> causal multi-head attention -> residual; norm -> MLP -> residual], a final norm and an output
projection computed in float32. The defaults are GPT-2's layout (LayerNorm, gelu MLP, biases, untied head); the
architecture fields make it Llama's, Qwen2's, Qwen3's, Mistral's or Gemma's too: RMSNorm (scaling by 1 + w for
Gemma), SwiGLU or GeGLU MLP, rotary theta and Llama 3 frequency scaling, grouped-query attention (`num_kv_heads`),
a head size of its own, query/key norms, biases off (or on query, key and value only), tied output embeddings
scaled by sqrt(E) on input. jtrain/models/decoder_hf.py reads and writes those checkpoints. Every parameter carries logical axis names (`vocab`, `embed`, `heads`,
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
from jtrain.models import decoder_hf
from jtrain.models.family import Family, HFNames
from jtrain.sharding import constrain

POSITIONS = ("learned", "rotary")
# einsum: scores (B, H, T, T) materialised in float32 by einsums, softmax, einsum with the values; runs anywhere and
# takes sharding constraints on the weights. fused: jax.nn.dot_product_attention, which on a GPU with bfloat16 or
# float16 picks cuDNN's flash attention (scores never stored: less memory and time at long sequences) and XLA's
# einsum form elsewhere. The two give the same result up to rounding.
ATTENTION = ("einsum", "fused")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "geglu")
# What a rematerialised block keeps for the backward pass. full: only its input (recomputes the whole block, about a
# third more compute). dots: also the outputs of its products with weights (recomputes norms, gelu and attention:
# most of remat's memory saving at a fraction of its compute).
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _init(stddev: float, names: tuple):
    """A normal initializer whose parameter carries logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class UnitOffsetRMSNorm(nn.Module):
    """RMSNorm scaling by (1 + scale), the scale starting at 0, computed in float32 (Gemma's norms)."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", _zeros((self.axis_name,)), (x.shape[-1],))  # (E,)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (y * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)


def _norm(kind: str, eps: float, dtype, name: str, unit_offset: bool = False, axis: str = "embed") -> nn.Module:
    """A LayerNorm (scale and bias) or an RMSNorm (scale only), named like the other and with the same axes;
    `unit_offset` makes an RMSNorm scale by (1 + scale) (Gemma)."""
    scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), (axis,))
    if kind == "rmsnorm":
        if unit_offset:
            return UnitOffsetRMSNorm(epsilon=eps, dtype=dtype, name=name, axis_name=axis)
        return nn.RMSNorm(epsilon=eps, dtype=dtype, name=name, scale_init=scale_init)
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name, scale_init=scale_init, bias_init=_zeros(("embed",)))


def rope_frequencies(half: int, theta: float = 10000.0, scaling: tuple = ()) -> jax.Array:
    """The D/2 rotary frequencies theta^(-i / (D/2)); `scaling` = (factor, low_freq_factor, high_freq_factor,
    original_max_len) applies Llama 3's: long wavelengths divided by factor, short ones kept, smooth between."""
    freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))  # (D/2,)
    if scaling:
        factor, low, high, original = scaling
        wavelen = 2 * math.pi / freq
        smooth = (original / wavelen - low) / (high - low)  # 0 at the low-frequency end, 1 at the high one
        mid = (1 - smooth) * freq / factor + smooth * freq
        freq = jnp.where(wavelen > original / low, freq / factor, jnp.where(wavelen < original / high, freq, mid))
    return freq


def rotary(x: jax.Array, offset=0, positions: jax.Array | None = None, freq: jax.Array | None = None) -> jax.Array:
    """Rotary position embedding of queries or keys (B, T, H, D): pairs (i, i + D/2) rotate by position * freq_i.
    `offset` is the position of the first row (decoding with a cache continues where it stopped); `positions`
    (B, T), when given, are each token's own (packed sequences restart at 0 in every segment); `freq` (D/2,)
    defaults to rope_frequencies with theta 10000."""
    _, t, _, d = x.shape
    half = d // 2
    if freq is None:
        freq = rope_frequencies(half)  # (D/2,)
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
    norm: str = "layernorm"  # see NORMS
    norm_eps: float = 1e-6
    mlp: str = "gelu"  # see MLPS
    num_kv_heads: int = 0  # grouped-query attention: key/value heads, each shared by num_heads / num_kv_heads; 0 = all
    head_dim: int = 0  # 0 = embed_dim / num_heads
    rope_theta: float = 10000.0
    rope_scaling: tuple = ()  # see rope_frequencies
    bias: bool = True  # biases of the attention and MLP projections
    qkv_bias: bool = False  # query/key/value biases even without `bias` (Qwen2)
    qk_norm: bool = False  # an RMSNorm over each head's queries and keys before the rotation (Qwen3)
    norm_unit_offset: bool = False  # RMSNorms scale by (1 + scale) (Gemma)

    @nn.compact
    def __call__(self, x: jax.Array, packing: tuple[jax.Array, jax.Array] | None) -> tuple[jax.Array, None]:
        # packing: None, or (segment_ids, positions) (B, T) each for packed sequences (see Decoder)
        _, t, e = x.shape  # (B, T, E)
        h, d = self.num_heads, self.head_dim or e // self.num_heads
        kv = self.num_kv_heads or h
        out_std = 0.02 / math.sqrt(2 * self.num_layers)

        # Causal self-attention.
        y = _norm(self.norm, self.norm_eps, self.dtype, "ln_attn", self.norm_unit_offset)(x)  # (B, T, E)
        qkv = [nn.DenseGeneral((n_heads, d), dtype=self.dtype, name=n, use_bias=self.bias or self.qkv_bias,
                               kernel_init=_init(0.02, ("embed", "heads", "kv")), bias_init=_zeros(("heads", "kv")))(y)
               for n, n_heads in (("query", h), ("key", kv), ("value", kv))]
        q, k, v = (constrain(a, ("batch", None, "heads", "kv")) for a in qkv)  # (B, T, H, D), k and v (B, T, KV, D)
        if self.qk_norm:  # over each head's D features
            q = _norm("rmsnorm", self.norm_eps, self.dtype, "query_norm", self.norm_unit_offset, "kv")(q)
            k = _norm("rmsnorm", self.norm_eps, self.dtype, "key_norm", self.norm_unit_offset, "kv")(k)
        offset = 0
        if self.decode:  # the new rows sit at positions index .. index + T - 1
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            offset = index.value
        positions = None if packing is None else packing[1]
        if self.position == "rotary":
            freq = rope_frequencies(d // 2, self.rope_theta, self.rope_scaling)  # (D/2,)
            q, k = rotary(q, offset, positions, freq), rotary(k, offset, positions, freq)
        if self.decode:
            k, v, causal = self._cached(k, v, offset)  # (B, L, KV, D) keys/values of every position so far
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
            if kv != h:  # query head i reads key/value head i // (H / KV), as in grouped-query attention
                k, v = jnp.repeat(k, h // kv, axis=2), jnp.repeat(v, h // kv, axis=2)  # (B, T or L, H, D)
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)  # (B, H, T, T or L)
            scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # (B, H, T, T), softmax in float32
            weights = constrain(weights, ("batch", "heads", None, None))
            y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)  # (B, T, H, D)
        y = nn.DenseGeneral(e, axis=(-2, -1), dtype=self.dtype, name="out", use_bias=self.bias,
                            bias_init=_zeros(("embed",)), kernel_init=_init(out_std, ("heads", "kv", "embed")))(y)  # (B, T, E)
        x = constrain(x + nn.Dropout(self.dropout, deterministic=self.deterministic)(y), ("batch", None, "embed"))

        # MLP.
        y = _norm(self.norm, self.norm_eps, self.dtype, "ln_mlp", self.norm_unit_offset)(x)
        dense = lambda name: nn.Dense(self.mlp_dim, dtype=self.dtype, name=name, use_bias=self.bias,
                                      kernel_init=_init(0.02, ("embed", "mlp")), bias_init=_zeros(("mlp",)))
        if self.mlp == "swiglu":
            y = nn.silu(dense("mlp_gate")(y)) * dense("mlp_in")(y)  # (B, T, M)
        elif self.mlp == "geglu":  # gelu's tanh form on the gate (Gemma)
            y = nn.gelu(dense("mlp_gate")(y)) * dense("mlp_in")(y)  # (B, T, M)
        else:
            y = nn.gelu(dense("mlp_in")(y))  # (B, T, M), gelu's tanh form (GPT-2's)
        y = constrain(y, ("batch", None, "mlp"))
        y = nn.Dense(e, dtype=self.dtype, name="mlp_out", kernel_init=_init(out_std, ("mlp", "embed")),
                     use_bias=self.bias, bias_init=_zeros(("embed",)))(y)  # (B, T, E)
        x = constrain(x + nn.Dropout(self.dropout, deterministic=self.deterministic)(y), ("batch", None, "embed"))
        return x, None

    def _cached(self, k: jax.Array, v: jax.Array, offset: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Writes the new keys/values (B, T, KV, D) at `offset` into the cache (B, L, KV, D); returns the whole cache
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
    # Architecture options (the FAMILY fields below say what each does); the defaults are GPT-2's layout.
    norm: str = "layernorm"
    norm_eps: float = 1e-6
    mlp: str = "gelu"
    num_kv_heads: int = 0
    head_dim: int = 0
    rope_theta: float = 10000.0
    rope_scaling: tuple = ()
    bias: bool = True
    qkv_bias: bool = False
    head_bias: bool = True
    tie_embeddings: bool = False
    qk_norm: bool = False
    norm_unit_offset: bool = False
    embed_scale: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool, segment_ids: jax.Array | None = None,
                 hidden: bool = False) -> jax.Array:
        """`segment_ids` (B, T) marks packed examples (SFT): attention stays inside a segment and positions restart
        at 0 in each one. None (pretraining) lets a row attend across documents. `hidden` returns the final
        normalised states (B, T, E) in float32 instead of logits, without the head (a reward model's score head
        reads them, jtrain/methods/reward.py)."""
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
        embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="embed",
                         embedding_init=_init(0.02, ("vocab", "embed")))
        x = embed(tokens)  # (B, T, E)
        if self.embed_scale:  # Gemma: embeddings times sqrt(E), the factor rounded to the compute dtype
            x = x * jnp.asarray(math.sqrt(self.embed_dim), self.dtype)
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
                      deterministic=not train, dtype=self.dtype, norm=self.norm, norm_eps=self.norm_eps,
                      mlp=self.mlp, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim, rope_theta=self.rope_theta,
                      rope_scaling=tuple(self.rope_scaling), bias=self.bias, qkv_bias=self.qkv_bias,
                      qk_norm=self.qk_norm, norm_unit_offset=self.norm_unit_offset)
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

        x = _norm(self.norm, self.norm_eps, self.dtype, "ln_final", self.norm_unit_offset)(x)
        if hidden:
            return x.astype(jnp.float32)
        # By default the head computes in float32 so the loss sees full-precision logits. In bfloat16 it runs at the
        # matrix units' full rate (a float32 head is a visible part of a large model's step on GPUs), and the
        # logits are cast to float32 for the loss.
        head_dtype = jnp.float32 if self.head_float32 else self.dtype
        if self.tie_embeddings:  # the output projection is the embedding table, transposed
            table = jnp.asarray(embed.embedding, head_dtype)  # (V, E)
            logits = jnp.einsum("bte,ve->btv", x.astype(head_dtype), table)  # (B, T, V)
            if self.head_bias:
                logits = logits + self.param("head_bias", _zeros(("vocab",)), (self.vocab_size,)).astype(head_dtype)
            logits = logits.astype(jnp.float32)
        else:
            logits = nn.Dense(self.vocab_size, dtype=head_dtype, name="head", use_bias=self.head_bias,
                              kernel_init=_init(0.02, ("embed", "vocab")),
                              bias_init=_zeros(("vocab",)))(x).astype(jnp.float32)  # (B, T, V)
        return constrain(logits, ("batch", None, "vocab"))


def build(config: ml_collections.ConfigDict, num_outputs: int) -> Decoder:
    """The decoder from `model.*`; its vocabulary is model.vocab_size, else the dataset's number of classes."""
    vocab = config.vocab_size or num_outputs
    if vocab <= 0:
        raise ConfigError("config key 'model.vocab_size': set the decoder's vocabulary size (> 0)")
    if config.vocab_size and num_outputs > config.vocab_size:
        raise ConfigError(f"config key 'model.vocab_size': {config.vocab_size} rows cannot embed the data's "
                          f"{num_outputs} token ids (data.tokenizer)")
    if config.position not in POSITIONS:
        raise ConfigError(f"config key 'model.position': must be one of {', '.join(POSITIONS)}, "
                          f"got {config.position!r}")
    for key in ("num_layers", "num_heads", "embed_dim", "mlp_dim", "max_len"):
        if config[key] <= 0:
            raise ConfigError(f"config key 'model.{key}': must be > 0, got {config[key]}")
    if config.embed_dim % config.num_heads and not config.head_dim:
        raise ConfigError(f"config key 'model.embed_dim': {config.embed_dim} is not divisible by model.num_heads="
                          f"{config.num_heads} (or set model.head_dim)")
    for key, allowed in (("attention", ATTENTION), ("remat_policy", REMAT_POLICIES), ("norm", NORMS), ("mlp", MLPS)):
        if config[key] not in allowed:
            raise ConfigError(f"config key 'model.{key}': must be one of {', '.join(allowed)}, got {config[key]!r}")
    kv = config.num_kv_heads or config.num_heads
    if config.num_kv_heads < 0 or config.num_heads % kv:
        raise ConfigError(f"config key 'model.num_kv_heads': must divide model.num_heads={config.num_heads}, "
                          f"got {config.num_kv_heads}")
    if config.head_dim < 0:
        raise ConfigError(f"config key 'model.head_dim': must be >= 0, got {config.head_dim}")
    if config.position == "rotary" and _head_dim(config) % 2:
        raise ConfigError("config key 'model.position': rotary needs an even head size "
                          "(model.head_dim, or model.embed_dim / model.num_heads)")
    scaling = tuple(config.rope_scaling)
    if scaling and (len(scaling) != 4 or scaling[0] <= 0 or scaling[2] <= scaling[1]):
        raise ConfigError("config key 'model.rope_scaling': () or (factor, low_freq_factor, high_freq_factor, "
                          f"original_max_len) with factor > 0 and high > low, got {scaling}")
    return Decoder(vocab_size=vocab, num_layers=config.num_layers, num_heads=config.num_heads,
                   embed_dim=config.embed_dim, mlp_dim=config.mlp_dim, max_len=config.max_len, position=config.position,
                   attention=config.attention,
                   dropout=config.dropout, scan_layers=config.scan_layers, remat=config.remat,
                   remat_policy=config.remat_policy, dtype=jnp.dtype(config.dtype), head_float32=config.head_float32,
                   norm=config.norm, norm_eps=config.norm_eps, mlp=config.mlp, num_kv_heads=config.num_kv_heads,
                   head_dim=config.head_dim, rope_theta=config.rope_theta, rope_scaling=scaling, bias=config.bias,
                   qkv_bias=config.qkv_bias, head_bias=config.head_bias, tie_embeddings=config.tie_embeddings,
                   qk_norm=config.qk_norm, norm_unit_offset=config.norm_unit_offset, embed_scale=config.embed_scale)


def _head_dim(config: ml_collections.ConfigDict) -> int:
    return config.head_dim or config.embed_dim // config.num_heads


def flops_per_token(config: ml_collections.ConfigDict, model: Decoder, seq_len: int) -> float:
    """Model FLOPs per trained token, 6 N + 12 L T E (the derivation is in jtrain/throughput.py)."""
    return matmul_flops_per_token(config, model.vocab_size, seq_len)


def matmul_flops_per_token(config: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> float:
    e, m, layers = config.embed_dim, config.mlp_dim, config.num_layers
    h, d, kv = config.num_heads, _head_dim(config), config.num_kv_heads or config.num_heads
    mlp_matrices = 3 if config.mlp in ("swiglu", "geglu") else 2  # (gate,) in, out
    # (q, out) + (k, v) + MLP; head. Attention's T x T products: 2 x 2 T (H D) per layer and token, forward.
    matmul_weights = layers * (2 * e * h * d + 2 * e * kv * d + mlp_matrices * e * m) + e * vocab_size
    return 6.0 * matmul_weights + 12.0 * layers * seq_len * h * d


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
    norm="layernorm",  # decoder: layernorm (scale and bias) or rmsnorm (scale only: Llama, Qwen, Mistral)
    norm_eps=1e-6,  # decoder: epsilon of every norm (GPT-2 1e-5, Llama 1e-5 or 1e-6)
    mlp="gelu",  # decoder: gelu (in -> gelu -> out), swiglu (silu(gate) * in -> out: Llama, Qwen, Mistral) or geglu (gelu(gate) * in: Gemma)
    num_kv_heads=0,  # decoder: key/value heads for grouped-query attention (divides num_heads); 0 = num_heads
    head_dim=0,  # decoder: size of each attention head; 0 = embed_dim / num_heads
    rope_theta=10000.0,  # decoder, rotary: base of the rotation frequencies (Llama 3: 500000)
    rope_scaling=(),  # decoder, rotary: () or Llama 3's (factor, low_freq_factor, high_freq_factor, original_max_len)
    bias=True,  # decoder: biases on the attention and MLP projections (GPT-2 yes; Llama, Qwen, Mistral no)
    qkv_bias=False,  # decoder: query/key/value biases even when bias=False (Qwen2)
    head_bias=True,  # decoder: a bias on the output projection
    tie_embeddings=False,  # decoder: the output projection is the transposed token embedding (GPT-2), no head kernel
    qk_norm=False,  # decoder: RMSNorm over each head's queries and keys before the rotation (Qwen3)
    norm_unit_offset=False,  # decoder, rmsnorm: scale by (1 + w), w starting at 0 (Gemma)
    embed_scale=False,  # decoder: token embeddings times sqrt(embed_dim) (Gemma)
), flops_per_token=flops_per_token, samples=True, plan_tokens=plan_tokens,
   hf=HFNames(model_types=decoder_hf.MODEL_TYPES, layout=decoder_hf.layout, model_fields=decoder_hf.model_fields,
              export=decoder_hf.export))
