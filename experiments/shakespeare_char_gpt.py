"""A small GPT trained from scratch on Shakespeare's plays, one token per character.

    jtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shakespeare_char
    jtrain sample --workdir runs/shakespeare_char --prompt "ROMEO." --max_tokens 300

Validation and test are three plays each that training never sees (jtrain/data/shakespeare.py); the target is
validation loss <= 1.7 nats per character within 30 minutes on 2 CPU cores. The corpus is 4.3M training
characters; 3,600 steps of 32 x 128 tokens see 14.7M (3.4 epochs) - about as many tokens as a model of 0.83M
parameters can use - so no dropout.

Measured (the full config, on a 2-core machine shared with other jobs, load 3-6 after the first 600 steps):
validation loss (three held-out plays) 1.947 / 1.709 / 1.582 / 1.512 / 1.463 / 1.448 nats per character after
600 / 1,200 / 1,800 / 2,400 / 3,000 / 3,600 steps; test 1.496. The 1.7 target was met at the step-1,800
evaluation, 19 minutes into the run's training time despite the other jobs (49 minutes for all 3,600 steps).
Alone the machine runs 9,600-11,000 tokens/s (the first 600 steps), i.e. 3,600 steps in about 24 minutes.
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
    c.train.log_grad_norm = True  # a language model's first sign of trouble; its cost is lost in the step here
    c.eval.every_steps = 600
    c.checkpoint.every_steps = 600
    return c
