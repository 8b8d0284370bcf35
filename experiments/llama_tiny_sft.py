r"""Fine-tuning a Hugging Face Llama checkpoint: the tiny random Llama of the tests, with its tokenizer.json, taught
to continue Shakespeare's lines (the builtin `shakespeare_sft` pairs).

    jtrain train --config experiments/llama_tiny_sft.py --workdir runs/llama_tiny_sft
    jtrain sample --workdir runs/llama_tiny_sft --max_tokens 40 --temperature 0 \
        --prompt $'But soft, what light through yonder window breaks?\n'
    jtrain export --workdir runs/llama_tiny_sft --format hf --output runs/llama_tiny_sft/hf

init.pretrained is tests/fixtures/hf_llm/llama (config.json, model.safetensors, tokenizer.json; made by
scripts/make_llm_reference.py): the model section comes from its config.json and text is read with its
tokenizer.json (`data.tokenizer`, set from the checkpoint). For a checkpoint you downloaded, run
`jtrain finetune --config experiments/llama_tiny_sft.py --pretrained DIR --workdir W` (and
--config.model.dtype=bfloat16 and a data.seq_len of your choice for a large one): the same path, name tables and
tokenizer. The random model knows nothing, so the loss falls fast; the point is the path, from Hugging Face
weights in to Hugging Face weights out.

Measured (2 CPU cores, 17 s in all): val loss over 2,000 held-out pairs' response tokens 5.32 -> 2.76 nats per
token in 300 steps ("before": --config.optim.learning_rate=0 --config.train.steps=1).
"""

import os

from jtrain.config import default_config

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "hf_llm",
                       "llama")


def get_config():
    c = default_config()
    c.init.pretrained = FIXTURE  # jtrain finetune --pretrained DIR replaces it

    c.data.name = "shakespeare_sft"
    c.data.seq_len = 64  # the fixture's context (max_position_embeddings)
    c.data.batch_size = 32
    c.data.eval_batch_size = 128
    c.data.eval_examples = 2000

    c.loss.name = "masked_sequence_cross_entropy"  # response tokens only
    c.optim.learning_rate = 3e-3
    c.optim.weight_decay = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 20
    c.schedule.end_factor = 0.1

    c.train.steps = 300
    c.train.log_every_steps = 50
    c.eval.every_steps = 100
    c.checkpoint.every_steps = 300
    return c
