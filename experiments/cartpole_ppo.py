"""PPO on gymnax's CartPole-v1: 8 environments, rollouts of 128 steps, 480 train steps = 491,520 environment steps.

Each train step is a rollout then 4 passes of 4 minibatches over its 1,024 transitions; 16 steps run per jitted call.
The test split plays 100 greedy episodes (CartPole-v1 counts as solved at a mean return of 475 of at most 500);
WORKDIR/plots/episode.png shows frames of one of them.

    jtrain train --config experiments/cartpole_ppo.py --workdir runs/cartpole_ppo
    jtrain eval --workdir runs/cartpole_ppo --split sampled:100
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "env"  # batches are placeholders: the step collects its own transitions
    config.data.batch_size = 8  # the placeholder's rows
    config.data.eval_batch_size = 100  # evaluation episodes played at once
    config.data.splits.val = "greedy:20"
    config.data.splits.test = "greedy:100"
    config.env.name = "gymnax:CartPole-v1"
    config.env.num_envs = 8
    config.method.name = "ppo"
    config.rl.num_steps = 128
    config.rl.hidden_sizes = (64, 64)
    config.optim.name = "adam"
    config.optim.learning_rate = 2.5e-3
    config.optim.eps = 1e-5
    config.schedule.name = "warmup_linear"  # the learning rate falls linearly to 0 over the run
    config.train.steps = 480
    config.train.steps_per_call = 16
    config.train.log_every_steps = 48
    config.eval.every_steps = 0
    config.checkpoint.every_steps = 240
    return config
