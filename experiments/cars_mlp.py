"""Miles per gallon of 406 cars from their engine figures and origin (`cars` of PyPI `vega_datasets`, read from
its JSON file): regression with missing values in a feature (horsepower) and in the target.

Rows without a target are left out (data.missing_target=drop); horsepower is imputed, the cylinder count and
origin one-hot encoded, numbers standardised, all fitted on the training split only. The model learns log(mpg)
(data.prep.log_target); MSE, MAE and R^2 are reported in miles per gallon. Results beside scikit-learn on the same
split: README.md, `python scripts/own_data_baselines.py`.

    jtrain train --config experiments/cars_mlp.py --workdir runs/cars
"""

import os

from jtrain.config import default_config


def cars_json() -> str:
    import vega_datasets

    return os.path.join(os.path.dirname(vega_datasets.__file__), "_data", "cars.json")


def get_config():
    config = default_config()
    config.data.name = f"json:{cars_json()}"
    config.data.target = "Miles_per_Gallon"
    config.data.drop = "Name"
    config.data.categorical = "Cylinders"
    config.data.missing_target = "drop"
    config.data.prep.log_target = True
    config.data.batch_size = 32
    config.model.name = "mlp"
    config.model.hidden_sizes = (32,)
    config.loss.name = "mse"
    config.train.epochs = 60.0
    config.train.log_every_steps = 50
    config.eval.every_steps = 100
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-3
    config.optim.weight_decay = 0.01
    config.checkpoint.every_steps = 0
    return config
