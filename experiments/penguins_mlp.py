"""Palmer penguins (344 birds, PyPI `palmerpenguins`): the species from bill, flipper and body measurements,
island, sex and year, read from the package's CSV file as your own data would be.

Missing measurements and sexes are imputed, the island and sex one-hot encoded and the numbers standardised,
all fitted on the 70% training split only (jtrain/data/tabular.py). Results beside scikit-learn on the same
split: README.md, `python scripts/own_data_baselines.py`.

    jtrain train --config experiments/penguins_mlp.py --workdir runs/penguins
    jtrain predict --workdir runs/penguins --input new_penguins.csv --output preds.csv
"""

import os

from jtrain.config import default_config


def penguins_csv() -> str:
    import palmerpenguins

    return os.path.join(os.path.dirname(palmerpenguins.__file__), "data", "penguins.csv")


def get_config():
    config = default_config()
    config.data.name = f"csv:{penguins_csv()}"
    config.data.target = "species"
    config.data.batch_size = 32
    config.model.name = "mlp"
    config.model.hidden_sizes = (32,)
    config.train.epochs = 40.0
    config.train.log_every_steps = 50
    config.eval.every_steps = 100
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-3
    config.optim.weight_decay = 0.01
    config.checkpoint.every_steps = 0
    return config
