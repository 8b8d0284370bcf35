"""Data sources (jtrain/data/source.py): a source from outside the package trains through the CLI and
evaluates from config.json alone; one given in Python trains and evaluates when passed again; ArraySource
batches; the prepared-data cache follows its input files' content; no import cycle in jtrain/data."""

from __future__ import annotations

import ast
import gzip
import json
import os
import struct

import numpy as np
import pytest

import jtrain
from _cli import SMOKE_OVERRIDES, run_jtrain
from jtrain import config as config_lib
from jtrain import data as data_lib
from jtrain.data import builders, indexed
from jtrain.errors import DataError

import toy_source

TOY = "tests.toy_source:factory"
# The MLP experiment shrunk; no early stopping, so the run's final test metrics are its last checkpoint's.
TOY_OVERRIDES = [*SMOKE_OVERRIDES, f"--config.data.name={TOY}", "--config.train.early_stopping_patience=0"]


def _toy_config():
    c = config_lib.load_experiment("experiments/digits_mlp_l2.py")
    config_lib.apply_overrides(c, [o.removeprefix("--config.") for o in TOY_OVERRIDES])
    c.train.progress = False
    return c


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_source_from_outside_the_package_trains_and_evaluates_through_the_cli(tmp_path):
    workdir = str(tmp_path / "run")
    result = run_jtrain(["train", "--config", "experiments/digits_mlp_l2.py", *TOY_OVERRIDES, "--workdir", workdir],
                        str(tmp_path / "tfds"))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["name"] == TOY
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    evaluated = run_jtrain(["eval", "--workdir", workdir], str(tmp_path / "tfds"))  # config.json alone
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = _last_json(evaluated.stdout)
    assert report["step"] == summary["step"] == 30
    assert 1 / 3 + 0.2 < report["accuracy"] <= 1.0  # three classes: well above chance
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)


def test_a_source_given_in_python_is_needed_again_to_evaluate(tmp_path):
    workdir = str(tmp_path / "run")
    config = _toy_config()
    source = toy_source.factory(config.data)
    summary = jtrain.train(config, workdir, data=source)
    report = jtrain.evaluate(workdir, "test", data=source)
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6) and report["accuracy"] > 0.5
    with pytest.raises(DataError, match="given in Python") as e:
        jtrain.evaluate(workdir)
    assert "data.name=" in str(e.value) and "\n" not in str(e.value)
    result = run_jtrain(["eval", "--workdir", workdir], str(tmp_path / "tfds"))
    assert result.returncode == 2 and "given in Python" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_factory_that_cannot_be_imported_is_one_line_naming_data_name():
    c = config_lib.default_config().data
    c.name = "tests.no_such_module:factory"
    with pytest.raises(DataError, match=r"data\.name='tests\.no_such_module:factory'") as e:
        data_lib.load(c)
    assert "\n" not in str(e.value)
    c.name = "tests.toy_source:no_such_factory"
    with pytest.raises(DataError, match="no 'no_such_factory'"):
        data_lib.load(c)


def test_array_source_batches_are_exact_and_resumable():
    c = config_lib.default_config().data
    c.batch_size, c.eval_batch_size, c.prefetch = 16, 25, 0
    source = toy_source.factory(c)
    assert source.splits.keys() == {"train", "val", "test"} and source.num_train == 106
    assert source.spec.input_shape == (13,) and source.spec.num_classes == 3 and source.spec.target_dtype == "int32"
    batches = list(source.eval_batches("test", c))
    mask = np.concatenate([b["mask"] for b in batches])
    assert len(batches) == 2 and mask.sum() == source.num_examples("test") == 36
    targets = np.concatenate([b["targets"] for b in batches])[mask]
    np.testing.assert_array_equal(targets, source.sources["test"].targets)  # every example once, in order
    train = np.concatenate([b["inputs"] for b in source.eval_batches("train", c)])[:106]
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)  # standardised with the training split's stats
    it = iter(source.train_dataset(c, seed=1))
    for _ in range(8):  # past the first epoch
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    resumed = iter(source.train_dataset(c, seed=1))
    resumed.set_state(state)
    for w in want:
        got = next(resumed)
        np.testing.assert_array_equal(got["inputs"], w["inputs"])
        np.testing.assert_array_equal(got["targets"], w["targets"])


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fashion(root, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", 20), ("t10k", 10)):
        out[prefix] = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", out[prefix])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)).astype(np.uint8))
    return out


def test_changed_input_files_under_the_same_names_are_prepared_again(tmp_path, monkeypatch):
    files = tmp_path / "fashion"
    files.mkdir()
    monkeypatch.setenv("JTRAIN_FASHION_MNIST_DIR", str(files))
    monkeypatch.setattr(builders, "FASHION_MNIST_DIRS", ())
    c = config_lib.default_config().data
    c.name, c.dir = "fashion_mnist", str(tmp_path / "tfds")  # in_memory_mb: the decoded .npy cache is used too

    def served() -> list[bytes]:  # the test split's images, in a canonical order (TFDS shuffles records)
        source = data_lib.load(c)
        images = indexed.read_batch(source.sources["test"], np.arange(10), source.spec, raw=True)["inputs"]
        return sorted(image.tobytes() for image in images)

    def written(images: np.ndarray) -> list[bytes]:
        return sorted(image[..., None].tobytes() for image in images)

    first = _write_fashion(files, seed=0)
    assert served() == written(first["t10k"])
    stamps = {p: os.stat(p) for p in files.iterdir()}
    second = _write_fashion(files, seed=1)  # the same names, the same sizes
    for path, st in stamps.items():
        assert os.path.getsize(path) == st.st_size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same modification times
    assert served() == written(second["t10k"])


def test_no_import_cycle_in_the_data_package():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jtrain", "data")
    modules = {f[:-3] for f in os.listdir(root) if f.endswith(".py") and f != "__init__.py"}
    graph = {}
    for name in modules:
        deps = set()
        with open(os.path.join(root, f"{name}.py")) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "jtrain.data":
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jtrain.data."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("jtrain.data.")}
        graph[name] = deps - {name}
    done, path = set(), []

    def visit(name):
        assert name not in path, "import cycle: " + " -> ".join(path[path.index(name):] + [name])
        if name in done:
            return
        path.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert graph["source"] == set()  # the protocol and shared pieces sit at the bottom
