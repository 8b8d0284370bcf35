"""`jtrain export --workdir W --format hf --output DIR` / `jtrain.export()`: a run's weights in Hugging Face's layout.

The family's name table writes them (`Family.hf.export`: the decoder as a Llama / Qwen2 or GPT-2 causal LM,
BERT as BertModel or BertForSequenceClassification); LoRA adapters are merged into their kernels first, so the
export is the adapted model as plain weights.
"""

from __future__ import annotations

import flax.linen as nn

from jtrain import lora, models
from jtrain import workdir as workdir_lib
from jtrain.errors import UserError

FORMATS = ("hf",)


def export(workdir: str, output: str, fmt: str = "hf", step: int | None = None) -> str:
    """Writes the checkpoint `step` (default: the latest) of `workdir` into `output`; returns `output`."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: jtrain exports {', '.join(FORMATS)}")
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
    family.hf.export(params, config.model, output)
    return output
