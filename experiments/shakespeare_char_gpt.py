"""A small GPT trained from scratch on Shakespeare's plays, one token per character.

    jtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shakespeare_char
    jtrain sample --workdir runs/shakespeare_char --prompt "ROMEO." --max_tokens 300

Validation and test are three plays each that training never sees (jtrain/data/shakespeare.py); the target is
validation loss <= 1.7 nats per character within 30 minutes on 2 CPU cores. The corpus is 4.3M training
characters; 3,600 steps of 32 x 128 tokens see 14.7M (3.4 epochs) - about as many tokens as a model of 0.83M
parameters can use - so no dropout.

Measured so far (a short run on a 2-core machine shared with other jobs, never the full 30 minutes; learning
rate held at 2e-3 after warmup instead of the cosine decay): validation loss (Julius Caesar) 1.935 nats/char
after 600 steps (2.5M tokens) and 1.788 (2.58 bits/char) after 900 steps (3.7M tokens); training loss 2.27 /
2.04 / 1.83 after 300 / 500 / 800 steps. The run did 1,500-6,000 tokens/s depending on the other jobs; its CPU
time (38 CPU-s per 50 steps) puts an idle 2-core machine near 10,000 tokens/s, i.e. 3,600 steps in about 25
minutes. Reaching <= 1.7 by the end of the cosine schedule is an extrapolation from that curve, not a measurement.
"""

from jtrain.config import default_config


def get_config():
    c = default_config()
    c.data.name = "shakespeare_char"
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.data.eval_batch_size = 128

    c.model.name = "decoder"
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.embed_dim = 128
    c.model.mlp_dim = 512
    c.model.max_len = 128
    c.model.position = "learned"

    c.loss.name = "masked_sequence_cross_entropy"

    c.optim.name = "adamw"
    c.optim.learning_rate = 2e-3
    c.optim.b2 = 0.99  # small batches of a fast-changing loss: a shorter second-moment memory (nanoGPT's choice)
    c.optim.weight_decay = 0.1
    c.optim.grad_clip_norm = 1.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 100
    c.schedule.end_factor = 0.1

    c.train.steps = 3600
    c.train.log_every_steps = 100
    c.eval.every_steps = 600
    c.checkpoint.every_steps = 600
    return c
