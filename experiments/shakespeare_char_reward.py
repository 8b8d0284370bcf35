r"""A reward model on the Shakespeare preference pairs: the char GPT's layers with a scalar head, Bradley-Terry loss.

    jtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shakespeare_char
    jtrain finetune --config experiments/shakespeare_char_reward.py --pretrained runs/shakespeare_char \
        --workdir runs/shakespeare_reward
    # from scratch (no pretraining): jtrain train --config experiments/shakespeare_char_reward.py --workdir ...

The pairs are DPO's (`shakespeare_pref`: chosen = the true next line, rejected = a line of about the same length
from another play). Evaluation reports reward_accuracy: the fraction of held-out pairs whose chosen line gets the
higher reward. The score head is new and the pretrained LM head is not used: init.skip names both, so strict loading
accepts the checkpoint (the load report lists them).
"""

import os

from jtrain.config import default_config, load_experiment

PRETRAINING = os.path.join(os.path.dirname(__file__), "shakespeare_char_gpt.py")


def get_config():
    c = default_config()
    c.data.name = "shakespeare_pref"
    c.data.seq_len = 96
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.eval_examples = 1000

    c.model = load_experiment(PRETRAINING).model

    c.method.name = "reward"
    c.init.skip = ("score/.*", "head/.*")  # the new score head, and the language model's head it replaces
    c.method.reward.center = 0.01

    c.optim.learning_rate = 3e-4
    c.optim.weight_decay = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 10
    c.schedule.end_factor = 0.1

    c.train.steps = 300
    c.train.log_every_steps = 25
    c.eval.every_steps = 100
    c.eval.best_metric = "reward_accuracy"
    c.checkpoint.every_steps = 100
    return c
