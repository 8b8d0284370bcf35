r"""Supervised instruction tuning of the Shakespeare char GPT: given a line of a speech, write the next line.

    jtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shakespeare_char
    jtrain finetune --config experiments/shakespeare_char_sft.py --pretrained runs/shakespeare_char \
        --workdir runs/shakespeare_sft
    jtrain sample --workdir runs/shakespeare_sft --max_tokens 60 \
        --prompt $'But soft, what light through yonder window breaks?\n'

Pairs (builtin `shakespeare_sft`, jtrain/data/sft.py): prompt = a line plus its newline, response = the next
line of the same speech, then the end token; the loss counts response tokens only, and examples are packed into
rows of 128 tokens that never attend across examples. Held-out pairs come from the validation plays, so the val
loss (nats per response character) measures the skill on plays neither pretraining nor tuning saw. The model
section is the pretraining experiment's, which `--pretrained` needs to load every parameter.

Measured (2 CPU cores, from the full pretraining run, val 1.448 nats/char): after 150 of the 400 steps (2 min),
the response loss over 2,000 held-out pairs fell from 1.692 to 1.422 nats/char (2.44 -> 2.05 bits); "before" is
the same command with --config.optim.learning_rate=0 --config.train.steps=1.

Your own pairs instead: --config.data.jsonl.train=train.jsonl --config.data.jsonl.val=val.jsonl, one
{"prompt": ..., "response": ...} object per line, in the characters of the Shakespeare tokenizer.
"""

import os

from jtrain.config import default_config, load_experiment

PRETRAINING = os.path.join(os.path.dirname(__file__), "shakespeare_char_gpt.py")


def get_config():
    c = default_config()
    c.data.name = "shakespeare_sft"
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.data.eval_batch_size = 128
    c.data.eval_examples = 2000  # evenly spaced held-out pairs: an exact, quick val loss

    c.model = load_experiment(PRETRAINING).model  # the model of the checkpoint this starts from

    c.loss.name = "masked_sequence_cross_entropy"  # over response tokens only: the mask leaves prompts out

    c.optim.learning_rate = 5e-4  # a quarter of pretraining's: the model already writes verse, it learns a format
    c.optim.weight_decay = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 20
    c.schedule.end_factor = 0.1

    c.train.steps = 400
    c.train.log_every_steps = 50
    c.eval.every_steps = 100
    c.checkpoint.every_steps = 200
    return c
