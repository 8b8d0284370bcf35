"""jtrain: a JAX training framework. The public API, flat (see README.md for the tour)."""

from jtrain.compare import compare
from jtrain.config import apply_overrides, default_config, load_experiment
from jtrain.errors import ConfigError, DataError, UserError
from jtrain.evaluate import evaluate
from jtrain.predict import predict
from jtrain.sample import sample
from jtrain.sweep import sweep
from jtrain import data
from jtrain.models import nnx_model
from jtrain.state import TrainState
from jtrain.train import train
from jtrain.version import __version__

__all__ = [
    "ConfigError",
    "DataError",
    "TrainState",
    "UserError",
    "__version__",
    "apply_overrides",
    "compare",
    "data",
    "default_config",
    "evaluate",
    "predict",
    "sample",
    "sweep",
    "load_experiment",
    "nnx_model",
    "train",
]
