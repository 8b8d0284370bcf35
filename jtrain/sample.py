"""Autoregressive sampling from a trained decoder with a key-value cache: `jtrain sample` / `jtrain.sample()`.

The prompt is run through the model once (prefill), filling each block's cache of `model.max_len` keys and
values; then every new token is one jitted call on a single position that attends over the cache, inside one
`lax.scan`. Greedy decoding (temperature 0) gives the same tokens as recomputing the full forward pass for every
token (tests/test_sample.py).

A generation longer than the context continues in windows: when the cache is full, the last half of the text
becomes the new prompt, so any `max_tokens` works with a learned position table of `max_len` rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jtrain.errors import UserError


def init_cache(model, batch: int = 1):
    """An empty cache (zeros, position 0) for `model` (a Decoder with decode=True), from shapes alone."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, 1), jnp.int32), train=False))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def choose(logits: jax.Array, key: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """Next tokens (B,) from logits (B, V): greedy when temperature is 0, else sampled from the softmax at that
    temperature over the top_k most likely tokens (0 = all) and the smallest set whose probability reaches top_p."""
    if temperature <= 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature  # (B, V)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1) the k-th largest logit
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        ordered = jnp.sort(logits, -1)[:, ::-1]  # (B, V) descending
        probs = jax.nn.softmax(ordered, -1)
        before = jnp.cumsum(probs, -1) - probs  # (B, V) probability of the tokens ranked above
        cutoff = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), -1, keepdims=True)  # (B, 1) smallest kept
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, -1).astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _generate_fn(model, prompt_len: int, steps: int, temperature: float, top_k: int, top_p: float):
    decoder = model.clone(decode=True)

    @jax.jit
    def run(params, prompt: jax.Array, key: jax.Array) -> jax.Array:
        # prompt (B, P) -> (B, steps) new tokens
        cache = init_cache(decoder, prompt.shape[0])
        logits, mutated = decoder.apply({"params": params, "cache": cache}, prompt, train=False, mutable=["cache"])

        def one_token(carry, step_key):
            cache, last = carry  # last: (B, V) logits of the newest position
            token = choose(last, step_key, temperature, top_k, top_p)  # (B,)
            logits, mutated = decoder.apply({"params": params, "cache": cache}, token[:, None], train=False,
                                            mutable=["cache"])  # (B, 1, V)
            return (mutated["cache"], logits[:, -1]), token

        _, tokens = jax.lax.scan(one_token, (mutated["cache"], logits[:, -1]), jax.random.split(key, steps))
        return tokens.T  # (B, steps)

    return run


def generate(model, params, prompt: np.ndarray, max_tokens: int, key: jax.Array, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Tokens (max_tokens,) continuing `prompt` (P,) int32, with the key-value cache."""
    context = model.max_len
    tokens = list(np.asarray(prompt, np.int32).tolist())
    if not tokens:
        tokens = [0]  # an empty prompt starts a new document
    start = len(tokens)
    while len(tokens) - start < max_tokens:
        keep = context // 2 if len(tokens) >= context else len(tokens)  # a full window restarts from its half
        window = tokens[-keep:]
        steps = min(max_tokens - (len(tokens) - start), context - len(window))
        fn = _generate_fn(model, len(window), steps, float(temperature), int(top_k), float(top_p))
        key, sub = jax.random.split(key)
        new = fn(params, jnp.asarray([window], jnp.int32), sub)  # (1, steps)
        tokens += np.asarray(new[0]).tolist()
    return np.asarray(tokens[start:], np.int32)


def load_run(workdir: str, step: int | None = None):
    """(run, params) of a workdir's checkpoint (the latest unless `step`)."""
    from jtrain import workdir as workdir_lib

    from jtrain import models

    config = workdir_lib.read_config(workdir)
    if not models.family(config.model.name).samples or not getattr(config.data, "name", ""):
        raise UserError(f"{workdir}: sampling needs a model family that generates with a key-value cache, such "
                        f"as the decoder (model.name={config.model.name!r})")
    run, state, _ = workdir_lib.restore(workdir, config, step)
    if getattr(run.data, "tokenizer", None) is None:
        raise UserError(f"{workdir}: data.name={config.data.name!r} is not a text dataset; nothing to decode with")
    return run, state.params


def sample(workdir: str, prompt: str = "", max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, step: int | None = None) -> str:
    """The prompt and its continuation by the run's latest checkpoint (generation stops at end of document)."""
    if max_tokens < 1:
        raise UserError(f"--max_tokens {max_tokens}: must be >= 1")
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise UserError("--temperature and --top_k must be >= 0, --top_p in (0, 1]")
    run, params = load_run(workdir, step)
    tokenizer = run.data.tokenizer
    if top_k > tokenizer.vocab_size:
        raise UserError(f"--top_k {top_k}: larger than the vocabulary ({tokenizer.vocab_size})")
    prompt_ids = tokenizer.encode(prompt)
    ids = generate(run.model, params, prompt_ids, max_tokens, jax.random.key(seed), temperature, top_k, top_p)
    ends = np.flatnonzero(ids == tokenizer.eos_id)  # end-of-document token
    if len(ends):
        ids = ids[: ends[0]]
    # Decoded after the prompt's ids: a word-start token alone would lose its space (sentencepiece's decoders).
    head, whole = tokenizer.decode(prompt_ids), tokenizer.decode(np.concatenate([prompt_ids, ids]))
    return prompt + (whole[len(head):] if whole.startswith(head) else tokenizer.decode(ids))
