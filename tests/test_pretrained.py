"""Pretrained weights: the dry-run report (loaded, missing, unused, mismatched, renamed), strict and non-strict
loading, Flax msgpack and jtrain/Orbax sources, and `jtrain finetune` (init order, frozen backbone)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import serialization

import jtrain
from jtrain import config as config_lib
from jtrain import pretrained
from jtrain.checkpoint import load_arrays
from jtrain.errors import ConfigError

from _cli import run_jtrain


def init_section(path: str, **fields):
    init = config_lib.default_config().init
    with init.unlocked():
        init.pretrained = path
        for k, v in fields.items():
            init[k] = v
    return init


def tree(**shapes):
    """{'a/b': (2, 3)} -> nested dict of arange arrays, so values tell where they came from."""
    out = {}
    for i, (path, shape) in enumerate(shapes.items()):
        node = out
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 100 * i
    return out


@pytest.fixture
def msgpack_file(tmp_path):
    """A checkpoint with an encoder the model has under another name, a head of another width, and an extra."""
    saved = tree(enc__Dense_0__kernel=(4, 8), enc__Dense_0__bias=(8,), head__kernel=(8, 10), head__bias=(10,),
                 aux__kernel=(3, 3))
    path = tmp_path / "weights.msgpack"
    path.write_bytes(serialization.msgpack_serialize(saved))
    return str(path), saved


def model_params():
    zeros = lambda *s: np.zeros(s, np.float32)
    return {"backbone": {"Dense_0": {"kernel": zeros(4, 8), "bias": zeros(8)}},
            "head": {"kernel": zeros(8, 3), "bias": zeros(3)}, "extra": {"scale": zeros(8)}}


def test_dry_run_report_before_any_array_is_read(msgpack_file):
    path, _ = msgpack_file
    source = pretrained.open_source(path)
    report, load_map = pretrained.plan(source, {"params": model_params()}, rename=("enc/(.*)=backbone/\\1",))
    assert source.format == "msgpack"
    assert sorted(report.loaded) == ["backbone/Dense_0/bias <- enc/Dense_0/bias",
                                     "backbone/Dense_0/kernel <- enc/Dense_0/kernel"]
    assert sorted(load_map) == ["backbone/Dense_0/bias", "backbone/Dense_0/kernel"]
    assert report.initialised == ["extra/scale"]  # mismatched paths are listed apart (and also keep their init)
    assert report.unused == ["aux/kernel"]
    assert sorted(report.mismatched) == ["head/bias: checkpoint (10,) -> model (3,)",
                                         "head/kernel: checkpoint (8, 10) -> model (8, 3)"]
    text = report.format_text()
    assert "2 loaded" in text and "unused in checkpoint: aux/kernel" in text


def test_strict_fails_listing_every_problem_in_one_line(msgpack_file):
    path, _ = msgpack_file
    with pytest.raises(ConfigError) as e:
        pretrained.load(init_section(path, rename=("enc/(.*)=backbone/\\1",)), {"params": model_params()}, log=False)
    message = str(e.value)
    assert "\n" not in message and message.count(";") == 3 and "4 problems" in message
    for item in ("missing in checkpoint: extra/scale", "unused in checkpoint: aux/kernel",
                 "shape mismatch: head/kernel: checkpoint (8, 10) -> model (8, 3)"):
        assert item in message


def test_skip_and_rename_make_a_strict_load_pass(msgpack_file):
    path, saved = msgpack_file
    init = init_section(path, rename=("enc/(.*)=backbone/\\1",), skip=("head/.*", "extra/.*", "aux/.*"))
    variables, report = pretrained.load(init, {"params": model_params()}, log=False)
    params = variables["params"]
    np.testing.assert_array_equal(params["backbone"]["Dense_0"]["kernel"], saved["enc"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(params["head"]["kernel"], np.zeros((8, 3)))  # skipped: as initialised
    assert report.problems() == [] and "aux/kernel" in report.skipped


def test_non_strict_loads_what_matches_and_logs_the_report(msgpack_file, capsys):
    path, saved = msgpack_file
    init = init_section(path, rename=("enc/(.*)=backbone/\\1",), strict=False)
    variables, report = pretrained.load(init, {"params": model_params()})
    assert len(report.problems()) == 4
    np.testing.assert_array_equal(variables["params"]["backbone"]["Dense_0"]["bias"], saved["enc"]["Dense_0"]["bias"])
    assert "shape-mismatched: head/kernel" in capsys.readouterr().err


def test_nothing_matching_and_bad_paths_are_one_line_errors(msgpack_file, tmp_path):
    path, _ = msgpack_file
    with pytest.raises(ConfigError, match="no array matches the model"):
        pretrained.load(init_section(path, strict=False), {"params": {"x": np.zeros(2)}}, log=False)
    with pytest.raises(ConfigError, match="does not exist"):
        pretrained.load(init_section(str(tmp_path / "nope")), {"params": model_params()}, log=False)
    with pytest.raises(ConfigError, match="init.rename"):
        pretrained.load(init_section(path, rename=("no equals sign",)), {"params": model_params()}, log=False)
    # A skip pattern naming neither a model nor a checkpoint path (renamed or not) is a typo: say which one.
    with pytest.raises(ConfigError, match=r"config key 'init.skip': 'hed/\.\*' matches no model or checkpoint path"):
        pretrained.load(init_section(path, skip=("hed/.*",), strict=False), {"params": model_params()}, log=False)
    init = init_section(path, rename=("enc/(.*)=backbone/\\1",), skip=("enc/Dense_0/bias", "aux/.*", "extra/.*"),
                        strict=False)
    assert pretrained.load(init, {"params": model_params()}, log=False)[1].skipped  # each names something


def test_the_load_report_is_written_as_json_and_text(msgpack_file, tmp_path):
    path, _ = msgpack_file
    source = pretrained.open_source(path)
    report, _ = pretrained.plan(source, {"params": model_params()}, rename=("enc/(.*)=backbone/\\1",),
                                skip=("extra/.*",))
    report.write(str(tmp_path))
    written = json.load(open(tmp_path / "load_report.json"))
    assert written["loaded"] == report.loaded and written["skipped"] == ["extra/scale"]
    assert written["problems"] == report.problems() and len(written["problems"]) == 3
    text = (tmp_path / "load_report.txt").read_text()
    assert text.splitlines()[0].startswith(f"pretrained weights from {source.path} (msgpack): 2 loaded")
    for line in ("loaded: backbone/Dense_0/kernel <- enc/Dense_0/kernel", "newly initialised: extra/scale",
                 "skipped by init.skip: extra/scale", "unused in checkpoint: aux/kernel",
                 "shape-mismatched: head/bias: checkpoint (10,) -> model (3,)"):
        assert line in text.splitlines()


# ------------------------------------------------------------------------------- jtrain checkpoints, the CLI


def digits_mlp(data_dir: str, steps: int):
    c = jtrain.default_config()
    c.data.name, c.data.dir, c.data.batch_size = "digits", data_dir, 32
    c.model.name, c.model.hidden_sizes = "mlp", (32,)
    c.train.steps, c.train.log_every_steps, c.train.progress = steps, 10, False
    c.checkpoint.every_steps = 0
    return c


@pytest.fixture(scope="module")
def pretrained_run(digits_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    jtrain.train(digits_mlp(digits_data_dir, 20), workdir)
    return workdir


def test_orbax_workdir_step_dir_and_state_dir_load_the_same_params(pretrained_run):
    saved = load_arrays(os.path.join(pretrained_run, "checkpoints", "20", "state"))
    target = {"params": {"Dense_0": {"kernel": np.zeros((64, 32), np.float32), "bias": np.zeros(32, np.float32)},
                         "Dense_1": {"kernel": np.zeros((32, 10), np.float32), "bias": np.zeros(10, np.float32)}}}
    for path in (pretrained_run, os.path.join(pretrained_run, "checkpoints", "20"),
                 os.path.join(pretrained_run, "checkpoints", "20", "state")):
        variables, report = pretrained.load(init_section(path), target, log=False)
        assert report.problems() == [] and report.format == "orbax"
        np.testing.assert_array_equal(variables["params"]["Dense_0"]["kernel"], saved["params/Dense_0/kernel"])


@pytest.mark.slow  # two training runs, one through the CLI: about 20 s
def test_finetune_cli_freezes_the_backbone_and_then_resumes_before_pretrained(pretrained_run, digits_data_dir,
                                                                              tmp_path):
    workdir = str(tmp_path / "finetune")
    common = ["--config", "experiments/digits_mlp_l2.py", "--config.model.hidden_sizes=(32,)",
              "--config.model.dropout=0.0", "--config.train.steps=10", "--config.train.epochs=0",
              "--config.train.early_stopping_patience=0", "--config.eval.best_metric=", "--config.eval.every_steps=0",
              "--config.init.skip=('Dense_1/.*',)",
              "--config.optim.policy=('Dense_0/.*=frozen',)", "--workdir", workdir]
    result = run_jtrain(["finetune", "--pretrained", pretrained_run, *common], digits_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 loaded, 2 newly initialised (2 skipped by init.skip)" in result.stderr
    before = load_arrays(os.path.join(pretrained_run, "checkpoints", "20", "state"))
    after = load_arrays(os.path.join(workdir, "checkpoints", "10", "state"))
    np.testing.assert_array_equal(after["params/Dense_0/kernel"], before["params/Dense_0/kernel"])  # frozen, bitwise
    np.testing.assert_array_equal(after["params/Dense_0/bias"], before["params/Dense_0/bias"])
    assert not np.array_equal(after["params/Dense_1/kernel"], before["params/Dense_1/kernel"])  # the new head trained

    # Init order: the run's own checkpoint wins; the pretrained path is not even opened.
    config = config_lib.config_from_json(open(os.path.join(workdir, "config.json")).read())
    config.train.steps = 12
    config.init.pretrained = str(tmp_path / "gone")
    summary = jtrain.train(config, workdir)
    assert summary["step"] == 12 and json.load(open(os.path.join(workdir, "summary.json")))["step"] == 12


ANY_MESH_SCRIPT = r'''
import sys
import jax, numpy as np, orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P
from jtrain import config as config_lib, pretrained

auto = lambda n: (jax.sharding.AxisType.Auto,) * n
written = jax.make_mesh((4,), ("fsdp",), axis_types=auto(1))  # the mesh that saves
w = np.arange(48, dtype=np.float32).reshape(8, 6)
saved = {"params": {"w": jax.device_put(w, NamedSharding(written, P("fsdp", None)))}, "step": np.int32(7)}
ckpt = ocp.StandardCheckpointer()
ckpt.save(sys.argv[1], saved)
ckpt.wait_until_finished()

reading = jax.make_mesh((2, 2), ("data", "tensor"), axis_types=auto(2))  # another mesh loads
target_sharding = NamedSharding(reading, P(None, "tensor"))
target = {"params": {"w": jax.device_put(np.zeros((8, 6), np.float32), target_sharding)}}
init = config_lib.default_config().init
init.pretrained = sys.argv[1]
variables, report = pretrained.load(init, target, log=False)
loaded = variables["params"]["w"]
assert report.problems() == [], report.problems()
assert loaded.sharding == target_sharding, loaded.sharding
np.testing.assert_array_equal(np.asarray(loaded), w)
print("loaded onto", tuple(loaded.sharding.spec))
'''


def test_orbax_weights_saved_on_one_mesh_load_onto_another(tmp_path):
    import subprocess
    import sys

    from _cli import REPO_ROOT

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", ANY_MESH_SCRIPT, str(tmp_path / "state")], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded onto (None, 'tensor')" in result.stdout


def test_finetune_with_a_missing_path_is_one_line_exit_2(digits_data_dir, tmp_path):
    result = run_jtrain(["finetune", "--config", "experiments/digits_mlp_l2.py", "--pretrained",
                         str(tmp_path / "nowhere"), "--workdir", str(tmp_path / "run")], digits_data_dir)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "init.pretrained" in lines[0] and "does not exist" in lines[0], result.stderr
