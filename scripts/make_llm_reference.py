"""Tiny randomly initialised causal LMs made by PyTorch `transformers`, with their outputs, for tests/test_hf_llm.py.

For each supported model_type (llama with Llama 3 rope scaling, qwen2 with tied embeddings and query/key/value
biases, mistral with a head size of its own and a sharded checkpoint, qwen3 with query/key norms, gemma with its
scaled embeddings, (1 + w) norms and GeGLU, gpt2), writes tests/fixtures/hf_llm/<type>/:
config.json and safetensors from `save_pretrained`, and reference.npz with
    input_ids (B, T) int32       prompts of several lengths, right-padded with 0
    attention_mask (B, T) int32  1 = a real token
    logits (B, T, V) float32     the model's logits with that mask (float32 compute)
    prompt_<i>, generated_<i>    each prompt alone and the tokens greedy `generate` continues it with

Weights are drawn wider than transformers' init (std 0.02 gives near-uniform logits, whose argmax rounding could
flip) and, except GPT-2's, stored in bfloat16 like published checkpoints (the reference uses the rounded values);
the script checks every greedy step's top-2 logit gap is wide enough for float32 rounding never to decide it.
Only this script needs torch; the tests compare jtrain with the stored arrays.

    pip install torch==2.13.0 transformers        # exactly 2.13.0: other versions fetch a multi-GB CUDA build
    python scripts/make_llm_reference.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "hf_llm")
LENGTHS = (9, 4, 13)  # prompt lengths; the batch is right-padded to the longest
NEW_TOKENS = 8
MIN_GAP = 1e-3  # smallest top-2 logit gap allowed at a greedy step

COMMON = dict(bos_token_id=None, eos_token_id=None, pad_token_id=0)
MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "bfloat16", None, dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=16))),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "bfloat16", None, dict(
        vocab_size=80, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0), use_sliding_window=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", "bfloat16", "24KB", dict(
        vocab_size=72, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=12, max_position_embeddings=64, sliding_window=None,
        tie_word_embeddings=False)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "float32", None, dict(
        vocab_size=88, n_embd=32, n_layer=2, n_head=4, n_positions=48, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "bfloat16", None, dict(
        vocab_size=84, hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0), use_sliding_window=False)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", "bfloat16", None, dict(
        vocab_size=76, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh")),
}


def widen(model, seed: int, unit_offset: bool = False) -> None:
    """Weights ~ N(0, 0.25^2), norm scales ~ 1 + N(0, 0.1^2) (Gemma's norms scale by 1 + w, so w ~ N(0, 0.1^2)):
    logits far from uniform."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = "norm" in name or ".ln_" in name or name.startswith("transformer.ln_f")
            norm_scale = (0 if unit_offset else 1) + 0.1 * noise
            p.copy_(norm_scale if is_norm and name.endswith("weight") else 0.25 * noise)


def make(model_type: str, seed: int) -> None:
    import torch
    import transformers

    config_cls, model_cls, dtype, shard, kwargs = MODELS[model_type]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**kwargs, **COMMON)
    model = getattr(transformers, model_cls)(config).eval()
    widen(model, seed, unit_offset=model_type == "gemma")
    if dtype == "bfloat16":  # published checkpoints are bfloat16: the reference computes with the rounded values
        with torch.no_grad():  # parameters only: buffers such as the rotary frequencies stay float32
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    vocab = config.vocab_size
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, vocab, n) for n in LENGTHS]
    t = max(LENGTHS)
    ids = np.zeros((len(prompts), t), np.int64)
    mask = np.zeros((len(prompts), t), np.int64)
    for i, p in enumerate(prompts):
        ids[i, :len(p)], mask[i, :len(p)] = p, 1
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        arrays = {}
        for i, p in enumerate(prompts):
            out = model.generate(torch.from_numpy(p[None]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True, pad_token_id=0)
            for step, scores in enumerate(out.scores):
                top2 = torch.topk(scores[0], 2).values
                if float(top2[0] - top2[1]) < MIN_GAP:
                    raise SystemExit(f"{model_type}: prompt {i} step {step}: top-2 gap {float(top2[0] - top2[1])}; "
                                     f"try another seed")
            arrays[f"prompt_{i}"] = p.astype(np.int32)
            arrays[f"generated_{i}"] = out.sequences[0, len(p):].numpy().astype(np.int32)
    directory = os.path.join(OUT, model_type)
    shutil.rmtree(directory, ignore_errors=True)
    save = model.to(getattr(torch, dtype))
    save.save_pretrained(directory, safe_serialization=True, **({"max_shard_size": shard} if shard else {}))
    for extra in ("generation_config.json",):  # not read by jtrain
        if os.path.exists(os.path.join(directory, extra)):
            os.remove(os.path.join(directory, extra))
    np.savez_compressed(os.path.join(directory, "reference.npz"), input_ids=ids.astype(np.int32),
                        attention_mask=mask.astype(np.int32), logits=logits.astype(np.float32), **arrays)
    with open(os.path.join(directory, "config.json")) as f:
        saved = json.load(f)
    files = sorted(os.listdir(directory))
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in files)
    print(f"{model_type}: {size / 1024:.0f} KB ({', '.join(files)}); transformers {transformers.__version__}, "
          f"torch {torch.__version__}, dtype {saved.get('dtype', saved.get('torch_dtype'))}")


def make_tokenizer(model_type: str = "llama") -> None:
    """A sentencepiece-style BPE tokenizer.json (Metaspace, as Llama 2's) of the fixture's vocabulary size, trained
    on the Shakespeare texts, with `</s>` as end of text: experiments/llama_tiny_sft.py reads text with it."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from jtrain.data import shakespeare

    directory = os.path.join(OUT, model_type)
    with open(os.path.join(directory, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    texts = []
    for path in shakespeare.text_files():
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())
    alphabet = sorted(set("".join(texts)) - {" "})  # every character, so no text is dropped
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>"], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "</s>", "pad_token": "<pad>"}, f, indent=2)
    print(f"{model_type}: tokenizer.json, {tok.get_vocab_size()} tokens of {vocab}")


def main() -> None:
    only = sys.argv[1:]  # model types to (re)make; none = all
    for seed, model_type in enumerate(MODELS):
        if not only or model_type in only:
            make(model_type, seed)
    if not only or "llama" in only:
        make_tokenizer("llama")


if __name__ == "__main__":
    main()
