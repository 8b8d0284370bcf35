"""`jtrain export --workdir W --format hf --output DIR` / `jtrain.export()`: a run's weights in Hugging Face's layout.

The family's name table writes them (`Family.hf.export`: the decoder as a Llama / Qwen2 or GPT-2 causal LM,
BERT as BertModel or BertForSequenceClassification); LoRA adapters are merged into their kernels first, so the
export is the adapted model as plain weights.
"""

from __future__ import annotations

import re

import flax.linen as nn

from jtrain import lora, models
from jtrain import workdir as workdir_lib
from jtrain.errors import UserError

FORMATS = ("hf",)


def export(workdir: str, output: str, fmt: str = "hf", step: int | None = None, max_shard_size: str = "5GB") -> str:
    """Writes the checkpoint `step` (default: the latest) of `workdir` into `output`, in safetensors shards of at
    most `max_shard_size` ("5GB", "500MB", bytes) above it; returns `output`."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: jtrain exports {', '.join(FORMATS)}")
    shard_bytes = parse_size(max_shard_size)
    config = workdir_lib.read_config(workdir)
    family = models.family(config.model.name)
    if not family.hf or not family.hf.export:
        exporters = [n for n, f in models.families().items() if f.hf and f.hf.export]
        raise UserError(f"{workdir}: model.name={config.model.name!r} has no Hugging Face layout; jtrain exports "
                        f"{', '.join(exporters)}")
    _, state, _ = workdir_lib.restore(workdir, config, step)
    params = nn.meta.unbox(state.params)
    if config.model.lora_rank > 0:
        params = lora.merge(params, config.model.lora_rank, config.model.lora_alpha)
    family.hf.export(params, config.model, output, shard_bytes)
    return output


UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(text) -> int:
    """"5GB", "500MB", "2GiB" or a number of bytes -> bytes (> 0); else one line naming --max_shard_size."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match and match.group(2).upper()
    if not match or unit not in UNITS or float(match.group(1)) * UNITS[unit] < 1:
        raise UserError(f"--max_shard_size {text!r}: a size such as 5GB, 500MB or a number of bytes")
    return int(float(match.group(1)) * UNITS[unit])
