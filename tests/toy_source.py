"""A data source from outside the jtrain package, as a user writes one (tests/test_sources.py trains on it):
scikit-learn's wine measurements, 178 wines of three cultivars, 13 features, split 60 / 20 / 20 in one fixed
shuffled order.

    jtrain train --config experiments/digits_mlp_l2.py --config.data.name=tests.toy_source:factory
"""

import numpy as np
from sklearn.datasets import load_wine

from jtrain.data import ArraySource


def factory(config):
    wine = load_wine()
    order = np.random.default_rng(0).permutation(len(wine.target))  # the same split on every machine
    x, y = wine.data[order].astype(np.float32), wine.target[order]
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return ArraySource("wine", {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}, config,
                       class_names=tuple(wine.target_names))
