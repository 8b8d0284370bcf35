"""jtrain: a JAX training framework. The public API, flat (see README.md for the tour).

Names are imported on first use, so `import jtrain` and `jtrain --help` load neither JAX nor TFDS, grain, Orbax
or matplotlib; `jtrain.train` pulls in what training needs when it is first called.

Several public functions share their module's name (`jtrain.train` is the function in jtrain/train.py). The
package keeps the function under that name even after the module is imported; reach a module with
`from jtrain.train import ...`, never `import jtrain.train as m`.
"""

from __future__ import annotations

import importlib
import sys
import types

from jtrain.errors import ConfigError, DataError, UserError
from jtrain.version import __version__

# public name -> (module, attribute); attribute None = the module itself
_LAZY = {
    "TrainState": ("jtrain.state", "TrainState"),
    "active": ("jtrain.active", "active"),
    "apply_overrides": ("jtrain.config", "apply_overrides"),
    "compare": ("jtrain.compare", "compare"),
    "cv": ("jtrain.cv", "cv"),
    "data": ("jtrain.data", None),
    "default_config": ("jtrain.config", "default_config"),
    "evaluate": ("jtrain.evaluate", "evaluate"),
    "export": ("jtrain.export", "export"),
    "load_experiment": ("jtrain.config", "load_experiment"),
    "nnx_model": ("jtrain.models", "nnx_model"),
    "predict": ("jtrain.predict", "predict"),
    "sample": ("jtrain.sample", "sample"),
    "score": ("jtrain.score", "score"),
    "sweep": ("jtrain.sweep", "sweep"),
    "train": ("jtrain.train", "train"),
}
_FUNCTIONS_NAMED_LIKE_MODULES = frozenset(name for name, (module, attr) in _LAZY.items()
                                          if attr and module == f"jtrain.{name}")


def __getattr__(name: str):
    if name not in _LAZY:  # a submodule, as `jtrain.config` was reachable when the package imported everything
        if name.startswith("_"):
            raise AttributeError(f"module 'jtrain' has no attribute {name!r}")
        try:
            return importlib.import_module(f"jtrain.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"jtrain.{name}":
                raise
            raise AttributeError(f"module 'jtrain' has no attribute {name!r}") from None
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing jtrain/train.py would otherwise bind the module over the function `jtrain.train`.
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["ConfigError", "DataError", "UserError", "__version__", *sorted(_LAZY)]
