"""The decoder's Hugging Face checkpoints: config.json -> `model.*` fields, the name tables, and export.

Two layouts cover the supported `model_type`s:
    llama, qwen2, qwen3,    RMSNorm, SwiGLU, rotary (Llama 3 scaling), grouped-query attention; torch Linear
    mistral, gemma          weights (out, in), one tensor per projection; Qwen2 adds query/key/value biases,
                            Qwen3 query/key norms; Gemma scales embeddings by sqrt(E), its norms by (1 + w),
                            and gates its MLP with gelu (GeGLU)
    gpt2                    LayerNorm, gelu (tanh form), learned positions, tied embeddings; Conv1D weights
                            (in, out) and the fused `c_attn` (query, key, value side by side), split on import
                            and joined again on export

A config.json feature the decoder does not implement (a rope-scaling type other than Llama 3's, a sliding window
shorter than the context, experts, another activation) is refused in one line naming the field, never dropped.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from jtrain.errors import ConfigError
from jtrain.models.hf_layout import MAX_SHARD_BYTES, HFEntry, HFStack, save_tensors, to_tensors

LLAMA_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma")
MODEL_TYPES = LLAMA_TYPES + ("gpt2",)
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are gelu's tanh form, the decoder's gelu
# The MLP activation each llama-layout type must use: the decoder's swiglu (silu) or geglu (gelu's tanh form).
MLP_OF = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}  # Gemma's legacy "gelu" means tanh too


def _refuse(file: str, field: str, why: str) -> ConfigError:
    return ConfigError(f"{file}: {field} {why}; jtrain's decoder does not implement it")


def _rope(hf: dict, file: str) -> tuple[float, tuple]:
    """(theta, rope_scaling field) from config.json's rope_parameters (transformers 5) or rope_theta/rope_scaling."""
    params = hf.get("rope_parameters") or {}
    field = "rope_parameters" if params else "rope_scaling"
    scaling = params or hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, ()
    if kind != "llama3":
        raise _refuse(file, f"{field}.rope_type", f"is {kind!r} (jtrain reads 'default' and 'llama3')")
    return theta, (float(scaling["factor"]), float(scaling.get("low_freq_factor", 1.0)),
                   float(scaling.get("high_freq_factor", 4.0)), int(scaling["original_max_position_embeddings"]))


def model_fields(hf: dict, file: str) -> dict:
    """The `model.*` fields of a config.json (the architecture; dtype, scan_layers, dropout stay the run's)."""
    model_type = hf.get("model_type")
    for field in ("num_local_experts", "num_experts", "n_routed_experts"):
        if hf.get(field):
            raise _refuse(file, field, f"is {hf[field]} (a mixture of experts)")
    if model_type == "gpt2":
        return _gpt2_fields(hf, file)
    gemma = model_type == "gemma"
    act_field = "hidden_activation" if gemma and hf.get("hidden_activation") else "hidden_act"
    act = hf.get(act_field) or ("gelu_pytorch_tanh" if gemma else "silu")
    if MLP_OF.get("gelu_pytorch_tanh" if gemma and act == "gelu" else act) != ("geglu" if gemma else "swiglu"):
        want = "'gelu_pytorch_tanh'" if gemma else "'silu'"
        raise _refuse(file, act_field, f"is {act!r} ({model_type}'s gated MLP here uses {want})")
    if hf.get("use_bidirectional_attention"):
        raise _refuse(file, "use_bidirectional_attention", "is true (an encoder, not a causal LM)")
    for field in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(field):
            raise _refuse(file, field, f"is {hf[field]} (capped logits)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise _refuse(file, "attention_bias" if hf.get("attention_bias") else "mlp_bias", "is true")
    max_len = int(hf["max_position_embeddings"])
    window = hf.get("sliding_window")
    uses_window = hf.get("use_sliding_window", True) if model_type in ("qwen2", "qwen3") else True
    if window and uses_window and window < max_len:
        raise _refuse(file, "sliding_window", f"is {window}, shorter than max_position_embeddings {max_len} "
                                              f"(attention limited to a window)")
    sliding = [t for t in hf.get("layer_types") or () if t != "full_attention"]
    if sliding:
        raise _refuse(file, "layer_types", f"has {len(sliding)} {sliding[0]!r} layers (attention limited to a window)")
    theta, scaling = _rope(hf, file)
    embed, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    head_dim = int(hf.get("head_dim") or embed // heads)
    return dict(vocab_size=int(hf["vocab_size"]), num_layers=int(hf["num_hidden_layers"]), num_heads=heads,
                embed_dim=embed, mlp_dim=int(hf["intermediate_size"]), max_len=max_len, position="rotary",
                norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="geglu" if gemma else "swiglu",
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=0 if head_dim * heads == embed else head_dim, rope_theta=theta, rope_scaling=scaling,
                bias=False, qkv_bias=model_type == "qwen2", head_bias=False,
                tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)), qk_norm=model_type == "qwen3",
                norm_unit_offset=gemma, embed_scale=gemma)


def _gpt2_fields(hf: dict, file: str) -> dict:
    if hf.get("activation_function", "gelu_new") not in GPT2_ACTIVATIONS:
        raise _refuse(file, "activation_function", f"is {hf['activation_function']!r} (jtrain: "
                                                   f"{', '.join(GPT2_ACTIVATIONS)})")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise _refuse(file, "scale_attn_by_inverse_layer_idx", "is true")
    if not hf.get("scale_attn_weights", True):
        raise _refuse(file, "scale_attn_weights", "is false")
    if hf.get("add_cross_attention"):
        raise _refuse(file, "add_cross_attention", "is true")
    embed = int(hf["n_embd"])
    return dict(vocab_size=int(hf["vocab_size"]), num_layers=int(hf["n_layer"]), num_heads=int(hf["n_head"]),
                embed_dim=embed, mlp_dim=int(hf.get("n_inner") or 4 * embed), max_len=int(hf["n_positions"]),
                position="learned", norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
                mlp="gelu", num_kv_heads=0, head_dim=0, rope_theta=10000.0, rope_scaling=(), bias=True,
                qkv_bias=False, head_bias=False, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                qk_norm=False, norm_unit_offset=False, embed_scale=False)


# ---------------------------------------------------------------------------------------------- name tables


def _sizes(fields: dict) -> tuple[int, int, int, int, int, int, int]:
    e, h = fields["embed_dim"], fields["num_heads"]
    d = fields["head_dim"] or e // h
    return fields["vocab_size"], e, h, fields["num_kv_heads"] or h, d, fields["mlp_dim"], fields["num_layers"]


def _llama_block(i: int, fields: dict) -> dict[str, HFEntry]:
    _, e, h, kv, d, m, _ = _sizes(fields)
    p = f"model.layers.{i}."
    out = {
        "ln_attn/scale": HFEntry(p + "input_layernorm.weight", ((e,),)),
        "query/kernel": HFEntry(p + "self_attn.q_proj.weight", ((e,), (h, d)), transpose=True),
        "key/kernel": HFEntry(p + "self_attn.k_proj.weight", ((e,), (kv, d)), transpose=True),
        "value/kernel": HFEntry(p + "self_attn.v_proj.weight", ((e,), (kv, d)), transpose=True),
        "out/kernel": HFEntry(p + "self_attn.o_proj.weight", ((h, d), (e,)), transpose=True),
        "ln_mlp/scale": HFEntry(p + "post_attention_layernorm.weight", ((e,),)),
        "mlp_gate/kernel": HFEntry(p + "mlp.gate_proj.weight", ((e,), (m,)), transpose=True),
        "mlp_in/kernel": HFEntry(p + "mlp.up_proj.weight", ((e,), (m,)), transpose=True),
        "mlp_out/kernel": HFEntry(p + "mlp.down_proj.weight", ((m,), (e,)), transpose=True),
    }
    if fields.get("qk_norm"):
        out["query_norm/scale"] = HFEntry(p + "self_attn.q_norm.weight", ((d,),))
        out["key_norm/scale"] = HFEntry(p + "self_attn.k_norm.weight", ((d,),))
    if fields["qkv_bias"]:
        for name, proj, heads in (("query", "q", h), ("key", "k", kv), ("value", "v", kv)):
            out[f"{name}/bias"] = HFEntry(p + f"self_attn.{proj}_proj.bias", ((heads, d),))
    return out


def _gpt2_block(i: int, fields: dict) -> dict[str, HFEntry]:
    _, e, h, _, d, m, _ = _sizes(fields)
    p = f"h.{i}."
    out = {
        "ln_attn/scale": HFEntry(p + "ln_1.weight", ((e,),)),
        "ln_attn/bias": HFEntry(p + "ln_1.bias", ((e,),)),
        "out/kernel": HFEntry(p + "attn.c_proj.weight", ((h, d), (e,))),  # Conv1D: stored (in, out)
        "out/bias": HFEntry(p + "attn.c_proj.bias", ((e,),)),
        "ln_mlp/scale": HFEntry(p + "ln_2.weight", ((e,),)),
        "ln_mlp/bias": HFEntry(p + "ln_2.bias", ((e,),)),
        "mlp_in/kernel": HFEntry(p + "mlp.c_fc.weight", ((e,), (m,))),
        "mlp_in/bias": HFEntry(p + "mlp.c_fc.bias", ((m,),)),
        "mlp_out/kernel": HFEntry(p + "mlp.c_proj.weight", ((m,), (e,))),
        "mlp_out/bias": HFEntry(p + "mlp.c_proj.bias", ((e,),)),
    }
    for j, name in enumerate(("query", "key", "value")):  # c_attn (E, 3 E): query, key, value side by side
        out[f"{name}/kernel"] = HFEntry(p + "attn.c_attn.weight", ((e,), (h, d)), offset=j * h * d)
        out[f"{name}/bias"] = HFEntry(p + "attn.c_attn.bias", ((h, d),), offset=j * h * d)
    return out


def layouts(model_type: str, fields: dict, scanned: bool) -> dict[str, HFEntry | HFStack]:
    """{jtrain path: layout} of a decoder with these `model.*` fields, as `model_type` names its tensors."""
    v, e, *_, layers = _sizes(fields)
    if model_type == "gpt2":
        block, top = _gpt2_block, {"embed/embedding": HFEntry("wte.weight", ((v,), (e,))),
                                   "pos_embed": HFEntry("wpe.weight", ((fields["max_len"],), (e,))),
                                   "ln_final/scale": HFEntry("ln_f.weight", ((e,),)),
                                   "ln_final/bias": HFEntry("ln_f.bias", ((e,),))}
    else:
        block, top = _llama_block, {"embed/embedding": HFEntry("model.embed_tokens.weight", ((v,), (e,))),
                                    "ln_final/scale": HFEntry("model.norm.weight", ((e,),))}
        if not fields["tie_embeddings"]:
            top["head/kernel"] = HFEntry("lm_head.weight", ((e,), (v,)), transpose=True)
    out = dict(top)
    per_layer = [block(i, fields) for i in range(layers)]
    for key in per_layer[0]:
        if scanned:
            out[f"layers/{key}"] = HFStack(tuple(b[key] for b in per_layer))
        else:
            out.update({f"block_{i}/{key}": b[key] for i, b in enumerate(per_layer)})
    return out


GPT2_PREFIX = "transformer."  # GPT2LMHeadModel's names; GPT2Model's have none


def layout(hf: dict, names: dict, scanned: bool) -> tuple[dict, set]:
    """The loader's hook (family.HFNames.layout): layouts named as this checkpoint names its tensors, and the
    tensors that are no parameter (GPT-2's causal-mask buffers, an output copy of tied embeddings)."""
    model_type = hf.get("model_type", "")
    out = layouts(model_type, model_fields(hf, "config.json"), scanned)
    ignored = set()
    if model_type == "gpt2":
        if any(n.startswith(GPT2_PREFIX) for n in names):
            out = {p: _renamed(x, GPT2_PREFIX) for p, x in out.items()}
        ignored = {n for n in names if n.endswith((".attn.bias", ".attn.masked_bias")) or n == "lm_head.weight"}
    elif hf.get("tie_word_embeddings"):
        ignored = {"lm_head.weight"} & set(names)
    return out, ignored


def _renamed(x: HFEntry | HFStack, prefix: str) -> HFEntry | HFStack:
    if isinstance(x, HFStack):
        return HFStack(tuple(_renamed(e, prefix) for e in x.layers))
    return HFEntry(prefix + x.name, x.groups, x.transpose, x.offset)


# ---------------------------------------------------------------------------------------------- export

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "mistral": "MistralForCausalLM", "gemma": "GemmaForCausalLM", "gpt2": "GPT2LMHeadModel"}


def model_type_of(config: ml_collections.ConfigDict) -> str:
    """The model_type whose layout these fields are, or a ConfigError naming the field no layout has."""
    c = config
    gemma_parts = (c.mlp == "geglu", c.norm_unit_offset, c.embed_scale)
    if c.position == "learned" and c.norm == "layernorm" and c.mlp == "gelu" and c.bias and c.tie_embeddings \
            and not c.head_bias and not c.num_kv_heads and not c.head_dim and not c.qkv_bias and not c.qk_norm \
            and not c.norm_unit_offset and not c.embed_scale:
        return "gpt2"
    if c.position == "rotary" and c.norm == "rmsnorm" and not c.bias and not c.head_bias:
        if all(gemma_parts) and c.tie_embeddings and not c.qkv_bias and not c.qk_norm:
            return "gemma"
        if c.mlp == "swiglu" and not any(gemma_parts) and not (c.qkv_bias and c.qk_norm):
            return "qwen2" if c.qkv_bias else "qwen3" if c.qk_norm else "llama"
    raise ConfigError("export --format hf: the decoder's model.* architecture fields match none of GPT-2's "
                      "(learned, layernorm, gelu, biases, tied, no head bias), Llama's / Qwen's (rotary, rmsnorm, "
                      "swiglu, no biases, no head bias) or Gemma's (rotary, rmsnorm with unit offset, geglu, "
                      "embed_scale, tied)")


def hf_config(config: ml_collections.ConfigDict, vocab: int, model_type: str) -> dict:
    """config.json of the transformers model with these `model.*` fields."""
    c = config
    common = {"architectures": [ARCHITECTURES[model_type]], "model_type": model_type, "vocab_size": vocab,
              "tie_word_embeddings": bool(c.tie_embeddings), "torch_dtype": "float32"}
    if model_type == "gpt2":
        no_gpt2_tokens = {"bos_token_id": None, "eos_token_id": None} if vocab <= 50256 else {}  # not GPT-2's vocabulary
        return {**common, **no_gpt2_tokens, "n_embd": c.embed_dim, "n_layer": c.num_layers, "n_head": c.num_heads,
                "n_inner": c.mlp_dim, "n_positions": c.max_len, "layer_norm_epsilon": c.norm_eps,
                "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    act = "gelu_pytorch_tanh" if model_type == "gemma" else "silu"
    out = {**common, "hidden_size": c.embed_dim, "num_hidden_layers": c.num_layers,
           "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads or c.num_heads,
           "head_dim": c.head_dim or c.embed_dim // c.num_heads, "intermediate_size": c.mlp_dim,
           "max_position_embeddings": c.max_len, "rms_norm_eps": c.norm_eps, "hidden_act": act,
           "rope_theta": c.rope_theta, "attention_bias": False, "mlp_bias": False}
    if model_type == "gemma":
        out["hidden_activation"] = act
    scaling = tuple(c.rope_scaling)
    if scaling:
        out["rope_scaling"] = {"rope_type": "llama3", "factor": scaling[0], "low_freq_factor": scaling[1],
                               "high_freq_factor": scaling[2], "original_max_position_embeddings": scaling[3]}
    return out


def export(params, config: ml_collections.ConfigDict, outdir: str, max_shard_bytes: int = MAX_SHARD_BYTES) -> str:
    """config.json + model.safetensors (transformers' names and layout; shards above `max_shard_bytes`) of a
    decoder's params (LoRA merged first)."""
    import jax

    from jtrain.policy import param_path  # the '/'-joined paths the layouts use

    flat = {param_path(p): np.asarray(jax.device_get(x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    model_type = model_type_of(config)
    vocab = flat["embed/embedding"].shape[0]
    fields = {k: config[k] for k in ("embed_dim", "num_heads", "head_dim", "num_kv_heads", "mlp_dim", "num_layers",
                                     "max_len", "qkv_bias", "qk_norm", "tie_embeddings")}
    fields["vocab_size"] = vocab
    tables = layouts(model_type, fields, scanned=any(p.startswith("layers/") for p in flat))
    unknown = sorted(set(flat) - set(tables))
    if unknown:
        raise ConfigError(f"export --format hf: {len(unknown)} parameters have no {model_type} name: "
                          f"{', '.join(unknown[:5])}")
    tensors = to_tensors(tables, flat)
    if model_type == "gpt2":
        tensors = {GPT2_PREFIX + n: t for n, t in tensors.items()}
    save_tensors(tensors, outdir, max_shard_bytes)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(hf_config(config, vocab, model_type), f, indent=2, sort_keys=True)
    return outdir
