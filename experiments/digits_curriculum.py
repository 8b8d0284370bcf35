"""A curriculum on scikit-learn's digits: the MLP of digits_active.py, ordered by a scores file.

    jtrain train --config experiments/digits_active.py --workdir runs/scorer --config.data.label_noise=0.2
    jtrain score --workdir runs/scorer --output runs/scores.csv
    jtrain train --config experiments/digits_curriculum.py --workdir runs/curriculum \
        --config.data.label_noise=0.2 --config.data.curriculum.difficulty=runs/scores.csv

scripts/curriculum_study.py runs the comparison of the README (curriculum, anti-curriculum, random order under
the same pacing, plain) over seeds.
"""

from jtrain.config import default_config


def get_config():
    config = default_config()
    config.data.name = "digits"
    config.data.batch_size = 32
    config.model.name = "mlp"
    config.model.hidden_sizes = (256,)
    config.model.dropout = 0.2
    config.train.steps = 150
    config.train.log_every_steps = 25
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.checkpoint.every_steps = 0
    config.data.curriculum.order = "easy"  # set data.curriculum.difficulty to turn it on
    config.data.curriculum.pacing = "linear"
    config.data.curriculum.start = 0.2
    config.data.curriculum.steps = 100
    return config
