"""Transfer within jtrain through the real CLI (experiments/fashion_transfer_cnn.py, shrunk): a small CNN trained by
`jtrain train` on Fashion-MNIST's garments, then `jtrain finetune` onto its footwear and bags with the conv backbone
frozen and a new 4-class head; the load report in the workdir; one-line errors for a pretrained model that does
not fit (8x8 inputs) and a skip pattern that names nothing."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest

from jtrain.checkpoint import load_arrays

from _cli import SMOKE_OVERRIDES, run_jtrain

CNN = ["--config.model.name=cnn", "--config.model.conv_features=(4, 8)", "--config.model.dense_features=16",
       "--config.model.dropout=0.0", "--config.data.augment="]
FROZEN = ("Conv_0/kernel", "Conv_0/bias", "Conv_1/kernel", "Conv_1/bias")  # the experiment's policy: conv frozen
LOADED = (*FROZEN, "Dense_0/kernel", "Dense_0/bias")  # the dense layer starts pretrained and keeps training
FINETUNE = ["--config", "experiments/fashion_transfer_cnn.py", *SMOKE_OVERRIDES, *CNN,
            "--config.data.eval_batch_size=64"]


def _write_idx(path: str, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion_env(tmp_path_factory) -> dict:
    """The first 512 training and 128 test images of the real Fashion-MNIST, as IDX files of their own."""
    from jtrain.data import builders
    from jtrain.errors import DataError

    try:
        root = builders.find_fashion_mnist_dir()
    except DataError as e:  # a failure, not a skip: a suite without these files has not tested transfer
        pytest.fail(f"the transfer tests need the real Fashion-MNIST files: {e}", pytrace=False)
    small = tmp_path_factory.mktemp("fashion_idx")
    for prefix, n in (("train", 512), ("t10k", 128)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            images = builders.read_idx(os.path.join(root, f"{prefix}-{kind}.gz"))[:n]
            _write_idx(str(small / f"{prefix}-{kind}.gz"), images)
    return {"JTRAIN_FASHION_MNIST_DIR": str(small)}


@pytest.fixture(scope="module")
def data_dir(fashion_env, tmp_path_factory) -> str:
    """A private TFDS dir with the datasets prepared here, so the CLI runs print no build progress."""
    from jtrain.data import registry

    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    with pytest.MonkeyPatch.context() as m:
        m.setenv("JTRAIN_FASHION_MNIST_DIR", fashion_env["JTRAIN_FASHION_MNIST_DIR"])
        for name in ("digits", "fashion_mnist_clothing", "fashion_mnist_accessories"):
            registry.prepare(name, path)
    return path


@pytest.fixture(scope="module")
def fashion_run(fashion_env, data_dir, tmp_path_factory) -> str:
    """A tiny CNN trained by `jtrain train` on the small Fashion-MNIST's garments (30 steps, 6 classes)."""
    workdir = str(tmp_path_factory.mktemp("fashion_run"))
    result = run_jtrain(["train", "--config", "experiments/fashion_transfer_cnn.py:pretrain", *SMOKE_OVERRIDES, *CNN,
                         "--config.data.eval_batch_size=64", "--workdir", workdir], data_dir, fashion_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow  # two CLI training runs (pretrain, finetune): about 35 s
def test_finetune_onto_accessories_freezes_the_backbone_and_trains_a_new_head(fashion_env, fashion_run, data_dir,
                                                                            tmp_path):
    workdir = str(tmp_path / "accessories")
    # The small IDX files the datasets were prepared from: prepared data is keyed by its input files' content.
    result = run_jtrain(["finetune", *FINETUNE, "--pretrained", fashion_run, "--workdir", workdir], data_dir,
                        fashion_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 loaded, 2 newly initialised (2 skipped by init.skip)" in result.stderr

    before = load_arrays(os.path.join(fashion_run, "checkpoints", "30", "state"))
    middle = load_arrays(os.path.join(workdir, "checkpoints", "20", "state"))
    after = load_arrays(os.path.join(workdir, "checkpoints", "30", "state"))
    for path in FROZEN:  # frozen: bitwise the garment run's
        np.testing.assert_array_equal(after[f"params/{path}"], before[f"params/{path}"], err_msg=path)
    assert not np.array_equal(after["params/Dense_0/kernel"], before["params/Dense_0/kernel"])  # loaded, trained
    assert before["params/Dense_1/kernel"].shape == (16, 6)
    head = after["params/Dense_1/kernel"]
    assert head.shape == (16, 4)  # a new head: dense features -> the four accessories
    assert not np.array_equal(head, middle["params/Dense_1/kernel"])  # and it trains

    # The load report, also in the workdir: the head skipped and newly initialised, every other path loaded.
    report = json.load(open(os.path.join(workdir, "load_report.json")))
    assert sorted(report["loaded"]) == sorted(LOADED)
    assert sorted(report["initialised"]) == sorted(report["skipped"]) == ["Dense_1/bias", "Dense_1/kernel"]
    assert report["unused"] == report["mismatched"] == report["problems"] == []
    assert report["format"] == "orbax" and report["source"].startswith(fashion_run)
    text = open(os.path.join(workdir, "load_report.txt")).read()
    assert "skipped by init.skip: Dense_1/kernel" in text and "loaded: Conv_0/kernel" in text


@pytest.mark.slow  # one pretraining run plus two failing starts: about 25 s
def test_a_pretrained_cnn_that_does_not_fit_is_a_one_line_error(fashion_env, fashion_run, data_dir, tmp_path):
    # 8x8 digits: the convolutions fit any image size, the dense layer after them does not (7x7 vs 2x2 maps).
    result = run_jtrain(["finetune", *FINETUNE, "--config.data.name=digits", "--config.data.splits.train=",
                         "--pretrained", fashion_run, "--workdir", str(tmp_path / "small")], data_dir)
    line = _one_line_error(result)
    assert "init.pretrained" in line
    assert "shape mismatch: Dense_0/kernel: checkpoint (392, 16) -> model (32, 16)" in line

    result = run_jtrain(["finetune", *FINETUNE, "--config.init.skip=('Head/.*',)", "--pretrained", fashion_run,
                         "--workdir", str(tmp_path / "typo")], data_dir, fashion_env)
    line = _one_line_error(result)
    assert "'init.skip'" in line and "'Head/.*' matches no model or checkpoint path" in line
    assert not os.path.exists(os.path.join(tmp_path / "typo", "checkpoints", "20"))
