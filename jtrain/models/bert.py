"""A BERT encoder (Devlin et al. 2019) in Flax Linen, its Hugging Face weight layout, and a classifier over it.

    tokens (B, T) int -> embeddings: word + position + token type (all type 0), LayerNorm, dropout
                      -> num_layers x post-LN blocks: x = LN(x + Attn(x));  x = LN(x + FFN(x))   (gelu, erf form)
                      -> hidden (B, T, E)
    pooling:  mean  - mean of the hidden states over real tokens (sentence-transformers, e.g. all-MiniLM-L6-v2)
              cls   - the hidden state of the first token ([CLS])
              pooler - BERT's pooler: tanh(Dense(hidden[:, 0]))
    head:     Dense(num_outputs) on the pooled vector, after dropout (the fine-tuning classifier)

Padding is token id 0 ([PAD] in BERT vocabularies): the attention mask is `tokens != 0`, so the model keeps
jtrain's contract of one input array. jtrain's data pipelines deliver tokens as float32 (exact below 2**24).

`HF_TABLE` is the one mapping between Hugging Face `BertModel` / `BertForSequenceClassification` parameter names
and jtrain paths; `from_hf` (import) and `to_hf` / `export_hf` (export) both read it, and neither changes a
value (only transposes), so import -> export -> import is bitwise identical.
"""

from __future__ import annotations

import json
import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jtrain.errors import ConfigError
from jtrain.models import hf_layout
from jtrain.models.decoder import TRANSFORMER_FIELDS
from jtrain.models.family import Family, HFNames

POOLINGS = ("mean", "cls", "pooler")
PAD_ID = 0


def _init(names: tuple, stddev: float = 0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _dense(features: int, names: tuple, name: str, dtype) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, name=name, kernel_init=_init(names), bias_init=_zeros(names[-1:]))


def _layer_norm(eps: float, name: str, dtype) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x - mean)^2] as PyTorch computes it, not E[x^2] - mean^2.
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                        bias_init=_zeros(("embed",)))


class Layer(nn.Module):
    num_heads: int
    mlp_dim: int
    eps: float
    dropout: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        b, t, e = x.shape  # (B, T, E)
        h, d = self.num_heads, e // self.num_heads
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        # Query/key/value kernels are (E, E); their output columns are head-major, so splitting "heads" splits heads.
        q, k, v = (_dense(e, ("embed", "heads"), n, self.dtype)(x).reshape(b, t, h, d) for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)  # (B, H, T, T)
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)  # padded keys get no weight
        weights = drop(jax.nn.softmax(scores, axis=-1).astype(self.dtype))  # (B, H, T, T)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, e)  # (B, T, E)
        y = _dense(e, ("heads", "embed"), "attention_out", self.dtype)(y)
        x = _layer_norm(self.eps, "attention_norm", self.dtype)(x + drop(y))  # post-LN
        y = nn.gelu(_dense(self.mlp_dim, ("embed", "mlp"), "intermediate", self.dtype)(x), approximate=False)  # (B, T, M)
        y = _dense(e, ("mlp", "embed"), "output", self.dtype)(y)  # (B, T, E)
        return _layer_norm(self.eps, "output_norm", self.dtype)(x + drop(y))


class BertEncoder(nn.Module):
    vocab_size: int = 30522
    num_layers: int = 12
    num_heads: int = 12
    embed_dim: int = 768
    mlp_dim: int = 3072
    max_len: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12
    dropout: float = 0.1
    with_pooler: bool = False  # BERT's tanh pooler over [CLS]; sentence-transformers models do not use it
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
        """tokens (B, T) -> {'hidden': (B, T, E), 'mask': (B, T) bool[, 'pooler': (B, E)]}."""
        tokens = tokens.astype(jnp.int32)  # (B, T)
        t = tokens.shape[1]
        if t > self.max_len:
            raise ConfigError(f"config key 'model.max_len': sequence length {t} exceeds model.max_len={self.max_len}")
        mask = tokens != PAD_ID  # (B, T)
        word = nn.Embed(self.vocab_size, self.embed_dim, name="word_embeddings", dtype=self.dtype,
                        embedding_init=_init(("vocab", "embed")))(tokens)
        position = self.param("position_embeddings", _init((None, "embed")), (self.max_len, self.embed_dim))
        token_type = self.param("token_type_embeddings", _init((None, "embed")), (self.type_vocab_size, self.embed_dim))
        x = word + (position[:t] + token_type[0])[None].astype(self.dtype)  # (B, T, E); one segment, type 0
        x = _layer_norm(self.eps, "embeddings_norm", self.dtype)(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = Layer(self.num_heads, self.mlp_dim, self.eps, self.dropout, self.dtype, name=f"layer_{i}")(
                x, mask, not train)
        out = {"hidden": x, "mask": mask}
        if self.with_pooler:
            out["pooler"] = jnp.tanh(_dense(self.embed_dim, ("embed", None), "pooler", self.dtype)(x[:, 0]))
        return out


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of hidden (B, T, E) over the real tokens of mask (B, T) -> (B, E), as sentence-transformers pools."""
    weights = mask.astype(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)


class BertClassifier(nn.Module):
    """jtrain's model contract: tokens (B, T) -> (B, num_outputs), from the pooled encoder output."""

    encoder: BertEncoder
    num_outputs: int
    pooling: str = "mean"
    dropout: float = 0.1

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
        out = self.encoder(tokens, train=train)
        if self.pooling == "mean":
            pooled = mean_pool(out["hidden"], out["mask"])  # (B, E)
        elif self.pooling == "cls":
            pooled = out["hidden"][:, 0]
        else:
            pooled = out["pooler"]
        pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
        # The head computes in float32 so the loss sees full-precision logits.
        return nn.Dense(self.num_outputs, dtype=jnp.float32, name="head", kernel_init=_init(("embed", "classes")),
                        bias_init=_zeros(("classes",)))(pooled)  # (B, C)


def build(config: ml_collections.ConfigDict, num_outputs: int) -> BertClassifier:
    """The classifier from `model.*` (vocab_size, num_layers, num_heads, embed_dim, mlp_dim, max_len, dropout,
    pooling, type_vocab_size, layer_norm_eps)."""
    if config.vocab_size <= 0:
        raise ConfigError("config key 'model.vocab_size': set the BERT vocabulary size (> 0), e.g. 30522")
    if config.pooling not in POOLINGS:
        raise ConfigError(f"config key 'model.pooling': must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
    if config.embed_dim % config.num_heads:
        raise ConfigError(f"config key 'model.embed_dim': {config.embed_dim} is not divisible by model.num_heads="
                          f"{config.num_heads}")
    encoder = BertEncoder(vocab_size=config.vocab_size, num_layers=config.num_layers, num_heads=config.num_heads,
                          embed_dim=config.embed_dim, mlp_dim=config.mlp_dim, max_len=config.max_len,
                          type_vocab_size=config.type_vocab_size, eps=config.layer_norm_eps, dropout=config.dropout,
                          with_pooler=config.pooling == "pooler", dtype=jnp.dtype(config.dtype))
    return BertClassifier(encoder=encoder, num_outputs=num_outputs, pooling=config.pooling, dropout=config.dropout)


# ---------------------------------------------------------------------------------- Hugging Face layout

LINEAR, COPY = "linear", "copy"  # torch Linear weights are (out, in): transposed both ways; everything else as is
# (jtrain path, Hugging Face name, kind); {i} is the layer index. Paths are those of BertClassifier's params.
HF_TABLE = (
    ("encoder/word_embeddings/embedding", "embeddings.word_embeddings.weight", COPY),
    ("encoder/position_embeddings", "embeddings.position_embeddings.weight", COPY),
    ("encoder/token_type_embeddings", "embeddings.token_type_embeddings.weight", COPY),
    ("encoder/embeddings_norm/scale", "embeddings.LayerNorm.weight", COPY),
    ("encoder/embeddings_norm/bias", "embeddings.LayerNorm.bias", COPY),
    ("encoder/layer_{i}/query/kernel", "encoder.layer.{i}.attention.self.query.weight", LINEAR),
    ("encoder/layer_{i}/query/bias", "encoder.layer.{i}.attention.self.query.bias", COPY),
    ("encoder/layer_{i}/key/kernel", "encoder.layer.{i}.attention.self.key.weight", LINEAR),
    ("encoder/layer_{i}/key/bias", "encoder.layer.{i}.attention.self.key.bias", COPY),
    ("encoder/layer_{i}/value/kernel", "encoder.layer.{i}.attention.self.value.weight", LINEAR),
    ("encoder/layer_{i}/value/bias", "encoder.layer.{i}.attention.self.value.bias", COPY),
    ("encoder/layer_{i}/attention_out/kernel", "encoder.layer.{i}.attention.output.dense.weight", LINEAR),
    ("encoder/layer_{i}/attention_out/bias", "encoder.layer.{i}.attention.output.dense.bias", COPY),
    ("encoder/layer_{i}/attention_norm/scale", "encoder.layer.{i}.attention.output.LayerNorm.weight", COPY),
    ("encoder/layer_{i}/attention_norm/bias", "encoder.layer.{i}.attention.output.LayerNorm.bias", COPY),
    ("encoder/layer_{i}/intermediate/kernel", "encoder.layer.{i}.intermediate.dense.weight", LINEAR),
    ("encoder/layer_{i}/intermediate/bias", "encoder.layer.{i}.intermediate.dense.bias", COPY),
    ("encoder/layer_{i}/output/kernel", "encoder.layer.{i}.output.dense.weight", LINEAR),
    ("encoder/layer_{i}/output/bias", "encoder.layer.{i}.output.dense.bias", COPY),
    ("encoder/layer_{i}/output_norm/scale", "encoder.layer.{i}.output.LayerNorm.weight", COPY),
    ("encoder/layer_{i}/output_norm/bias", "encoder.layer.{i}.output.LayerNorm.bias", COPY),
    ("encoder/pooler/kernel", "pooler.dense.weight", LINEAR),
    ("encoder/pooler/bias", "pooler.dense.bias", COPY),
    ("head/kernel", "classifier.weight", LINEAR),
    ("head/bias", "classifier.bias", COPY),
)
HF_BUFFERS = re.compile(r"(bert\.)?embeddings\.position_ids")  # saved by older transformers; not a parameter
HF_PREFIX = "bert."  # BertForSequenceClassification's encoder names start with it; BertModel's do not


def _compile(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


_TO_JTRAIN = [(_compile(hf), jt, kind) for jt, hf, kind in HF_TABLE]
_TO_HF = [(_compile(jt), hf, kind) for jt, hf, kind in HF_TABLE]


def hf_to_path(name: str) -> tuple[str, str] | None:
    """Hugging Face name -> (jtrain path, kind), or None for names the table does not know."""
    if name.startswith(HF_PREFIX):
        name = name[len(HF_PREFIX):]
    for pattern, template, kind in _TO_JTRAIN:
        m = pattern.fullmatch(name)
        if m:
            return template.format(**m.groupdict()), kind
    return None


def path_to_hf(path: str, with_prefix: bool = False) -> tuple[str, str] | None:
    """jtrain path -> (Hugging Face name, kind), or None for parameters HF BERT has no name for."""
    for pattern, template, kind in _TO_HF:
        m = pattern.fullmatch(path)
        if m:
            name = template.format(**m.groupdict())
            return (HF_PREFIX + name if with_prefix and not name.startswith("classifier.") else name), kind
    return None


def convert(array: np.ndarray, kind: str) -> np.ndarray:
    """One direction or the other: a transpose is its own inverse, and no value changes."""
    return np.ascontiguousarray(array.T) if kind == LINEAR else array


def hf_config(model_config: ml_collections.ConfigDict, num_labels: int = 0) -> dict:
    """config.json of the Hugging Face BertModel (or BertForSequenceClassification) with these sizes."""
    out = {
        "architectures": ["BertForSequenceClassification" if num_labels else "BertModel"],
        "model_type": "bert", "vocab_size": model_config.vocab_size, "hidden_size": model_config.embed_dim,
        "num_hidden_layers": model_config.num_layers, "num_attention_heads": model_config.num_heads,
        "intermediate_size": model_config.mlp_dim, "max_position_embeddings": model_config.max_len,
        "type_vocab_size": model_config.type_vocab_size, "layer_norm_eps": model_config.layer_norm_eps,
        "hidden_act": "gelu", "hidden_dropout_prob": model_config.dropout,
        "attention_probs_dropout_prob": model_config.dropout, "pad_token_id": PAD_ID,
        "position_embedding_type": "absolute",
    }
    if num_labels:
        out["num_labels"] = num_labels
    return out


def model_config_from_hf(path: str) -> dict:
    """`model.*` fields from a Hugging Face config.json (a directory or the file), for experiments to apply."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    with open(file) as f:
        hf = json.load(f)
    if hf.get("model_type") != "bert":
        raise ConfigError(f"{file}: model_type is {hf.get('model_type')!r}; jtrain reads BERT-family encoders ('bert')")
    return {"vocab_size": hf["vocab_size"], "embed_dim": hf["hidden_size"], "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"], "mlp_dim": hf["intermediate_size"],
            "max_len": hf["max_position_embeddings"], "type_vocab_size": hf.get("type_vocab_size", 2),
            "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-12))}


def export_hf(params, model_config: ml_collections.ConfigDict, outdir: str,
              max_shard_bytes: int = hf_layout.MAX_SHARD_BYTES) -> str:
    """Writes `outdir/config.json` + `outdir/model.safetensors` (Hugging Face layout; shards above
    `max_shard_bytes`) from BertClassifier params.

    With a `head`, names follow BertForSequenceClassification ("bert." prefix, "classifier.*"); else BertModel.
    """

    from jtrain.policy import param_path  # '/'-joined paths, the same the policy table and the loader use

    flat = {param_path(p): np.asarray(jax.device_get(x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    head = flat.get("head/kernel")
    tensors, unknown = {}, []
    for path, value in flat.items():
        named = path_to_hf(path, with_prefix=head is not None)
        if named is None:
            unknown.append(path)
            continue
        tensors[named[0]] = convert(value, named[1])
    if unknown:
        raise ConfigError(f"export_hf: {len(unknown)} parameters have no Hugging Face name: {', '.join(unknown[:5])}")
    hf_layout.save_tensors(tensors, outdir, max_shard_bytes)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(hf_config(model_config, 0 if head is None else head.shape[-1]), f, indent=2, sort_keys=True)
    return outdir


FAMILY = Family(build, fields=dict(
    TRANSFORMER_FIELDS,
    pooling="mean",  # bert: sentence vector for the head: mean (over real tokens), cls (first token) or pooler (tanh dense on cls)
    type_vocab_size=2,  # bert: rows of the token-type (segment) embedding table
    layer_norm_eps=1e-12,  # bert: LayerNorm epsilon (BERT's value)
), hf=HFNames(model_types=("bert",), to_path=hf_to_path, convert=convert, transposed=lambda kind: kind == LINEAR,
              is_buffer=lambda name: bool(HF_BUFFERS.fullmatch(name)), export=export_hf))
