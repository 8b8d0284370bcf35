"""`data.name = "env"`: the data source of reinforcement-learning runs, whose data is made in the train step.

An RL method (jtrain/methods/rl.py) collects its own transitions inside the jitted step (Method.collect), so the
training "batches" here are placeholders: they keep the loop, the feed and the checkpointed data position as for
any other run, and carry nothing. The spec describes the environment `env.name` (observation shape, number of
actions, examples = "env").

Evaluation splits are episodes: a split spec is POLICY:EPISODES, greedy (the most likely action) or sampled
(actions drawn from the policy), e.g. val "greedy:10" and test "greedy:100" (the defaults), or
`jtrain eval --split sampled:100`. An eval batch holds episode numbers; each episode's start and random draws are
a function of (the run's seed, its role, its number), so they do not depend on the batch size.
"""

from __future__ import annotations

import re
from typing import Iterator

import grain
import ml_collections
import numpy as np

from jtrain import envs
from jtrain.data.source import DatasetSpec, Source, Stats, eval_indices, local_batch_size, resolve_splits, to_iterator
from jtrain.errors import ConfigError, UserError

NAME = "env"
_SPLIT = re.compile(r"^(greedy|sampled):([1-9][0-9]*)$")
ROLE_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}  # episode numbers of each role, apart


class EnvSource(Source):
    def __init__(self, config: ml_collections.ConfigDict, env_config: ml_collections.ConfigDict):
        env = envs.make(env_config.name)
        self.env = env
        self.spec = DatasetSpec(name=env.name, input_shape=env.observation_shape, num_classes=env.num_actions,
                                splits={"train": "rollouts", "val": "greedy:10", "test": "greedy:100"},
                                target_dtype="float32", examples="env")
        self.splits = resolve_splits(config, self.spec)
        self.episodes = {role: _parse(role, spec) for role, spec in self.splits.items() if role != "train"}
        self.stats = Stats(0.0, 1.0)

    def describe(self) -> str:
        return f"the environment {self.env.name} (rollouts made in the step)"

    def num_examples(self, role: str) -> int:
        """Episodes of an eval role; the training role has no examples (rollouts are made in the step)."""
        return self.episodes[role][1] if role in self.episodes else 0

    def train_dataset(self, config: ml_collections.ConfigDict, seed: int, process_index: int = 0,
                      process_count: int = 1, stack: int = 1, raw: bool = False) -> grain.IterDataset:
        rows = local_batch_size(config.batch_size, process_count, "data.batch_size") * stack
        placeholder = {"inputs": np.zeros((rows,), np.int32)}
        ds = grain.MapDataset.range(1 << 62).map(lambda _: placeholder)
        return to_iterator(ds, config, stack)

    def eval_batches(self, role: str, config: ml_collections.ConfigDict, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        if role not in self.episodes:
            raise UserError(f"split {role!r} of an environment: evaluate episodes, e.g. --split greedy:100 or "
                            f"sampled:100")
        policy, count = self.episodes[role]
        batch, chunks = eval_indices(count, config, process_index, process_count)
        for idx in chunks:
            episode = np.zeros((batch,), np.int32)
            episode[: len(idx)] = idx + ROLE_OFFSET[role]
            mask = np.zeros((batch,), bool)
            mask[: len(idx)] = True
            yield {"episode": episode, "greedy": np.full((batch,), policy == "greedy"), "mask": mask}


def _parse(role: str, spec: str) -> tuple[str, int]:
    m = _SPLIT.match(spec)
    if not m:
        raise ConfigError(f"config key 'data.splits.{role}': {spec!r} is no split of an environment; expected "
                          f"greedy:EPISODES or sampled:EPISODES, e.g. greedy:100")
    return m.group(1), int(m.group(2))


def load(config: ml_collections.ConfigDict, env_config: ml_collections.ConfigDict | None) -> EnvSource:
    if env_config is None:
        raise ConfigError("data.name='env': the environment's source needs the run's env section (env.name)")
    return EnvSource(config, env_config)
