r"""Preference tuning (DPO) of the Shakespeare char GPT: prefer the true next line to a line from another play.

    jtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shakespeare_char
    jtrain finetune --config experiments/shakespeare_char_dpo.py --pretrained runs/shakespeare_char \
        --workdir runs/shakespeare_dpo
    # or start from the SFT run (experiments/shakespeare_char_sft.py): --pretrained runs/shakespeare_sft

Pairs (builtin `shakespeare_pref`, jtrain/data/preference.py): prompt = a line of a speech, chosen = the next
line, rejected = a line of about the same length from another play of the same split. The pretrained weights are
both the starting policy and the frozen reference (jtrain/methods/dpo.py). Training logs the reward margin and reward
accuracy; evaluation on the validation plays' pairs adds preference_accuracy, the fraction of held-out pairs
whose true continuation the model finds more likely than the impostor - compare it with step 0's (the
pretrained model's) to see what tuning added.

Measured (2 CPU cores, from the full pretraining run), held-out preference accuracy on 861 validation pairs:
55.8% for the pretrained model; this config (300 steps, 7.2 min) 64.8% (reward accuracy 63.2%, margin 0.43;
test 65.5% of 702 pairs); 150 steps 61.2% at learning rate 3e-4 and 58.3% at 1e-4. Starting from the SFT run
is not measured yet.

Your own pairs: --config.data.jsonl.train=prefs.jsonl --config.data.jsonl.val=held_out.jsonl, one
{"prompt": ..., "chosen": ..., "rejected": ...} object per line.
"""

import os

from jtrain.config import default_config, load_experiment

PRETRAINING = os.path.join(os.path.dirname(__file__), "shakespeare_char_gpt.py")


def get_config():
    c = default_config()
    c.data.name = "shakespeare_pref"
    c.data.seq_len = 96  # pairs of two lines up to 95 characters in all (about 85% of them); longer ones are left out
    c.data.batch_size = 32  # pairs: 64 sequences, scored by the policy and the reference
    c.data.eval_batch_size = 64
    c.data.eval_examples = 1000  # evenly spaced held-out pairs

    c.model = load_experiment(PRETRAINING).model  # the model of the checkpoint this starts from

    c.method.name = "dpo"
    c.method.dpo.beta = 0.1

    c.optim.learning_rate = 3e-4  # better than 1e-4 over 150 steps (held-out preference 61.2% vs 58.3%)
    c.optim.weight_decay = 0.0
    c.schedule.name = "cosine"
    c.schedule.warmup_steps = 10
    c.schedule.end_factor = 0.1

    c.train.steps = 300
    c.train.log_every_steps = 25
    c.eval.every_steps = 100
    c.eval.best_metric = "preference_accuracy"
    c.checkpoint.every_steps = 100
    return c
