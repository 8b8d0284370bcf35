"""The model family record (jtrain/models/__init__.py explains the contract); imports nothing of jtrain's."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class HFNames:
    """A family's Hugging Face weight layout: which checkpoints it reads and how their names map to jtrain paths.

    Either a one-to-one table (`to_path`, `convert`, `transposed`, `is_buffer`: BERT), or `layout`, for layouts
    that depend on config.json (heads, fused projections, stacked layers: the decoder's)."""

    model_types: tuple[str, ...]  # config.json `model_type` values this table reads
    to_path: Callable[[str], tuple[str, str] | None] | None = None  # HF name -> (jtrain path, kind), None = unknown
    convert: Callable[[Any, str], Any] | None = None  # (array, kind) -> array, either direction
    transposed: Callable[[str], bool] | None = None  # kind -> the HF array is the transpose of jtrain's
    is_buffer: Callable[[str], bool] | None = None  # HF name saved beside the weights that is not a parameter
    # (config.json, {HF name: shape}, scanned layers) -> ({jtrain path: hf_layout.HFEntry or HFStack},
    # HF names that are no parameter of the model, e.g. a tied output copy)
    layout: Callable[[dict, dict, bool], tuple[dict, set]] | None = None
    # (config.json, its path) -> the model.* fields it sets (ConfigError naming a config.json field jtrain lacks)
    model_fields: Callable[[dict, str], dict] | None = None
    # (params, model config, output directory, max shard bytes) -> config.json + safetensors written there
    export: Callable[[Any, ml_collections.ConfigDict, str, int], Any] | None = None


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: `build` plus the optional hooks the rest of jtrain looks up instead of the model's name."""

    build: Callable[[ml_collections.ConfigDict, int], Any]  # (model config, num_outputs) -> module
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # its own model.* fields and defaults
    # (model config, built module, sequence length) -> model FLOPs per token (jtrain/throughput.py MFU)
    flops_per_token: Callable[[ml_collections.ConfigDict, Any, int], float] | None = None
    samples: bool = False  # autoregressive generation with a key-value cache (jtrain/sample.py)
    # model config -> (vocabulary, sequence length) of the token inputs `jtrain plan` shapes without reading data
    plan_tokens: Callable[[ml_collections.ConfigDict], tuple[int, int]] | None = None
    hf: HFNames | None = None  # Hugging Face weights in (jtrain/pretrained.py)
