"""Learning without labels (jtrain/methods/autoencoder.py, vae.py, contrastive.py; jtrain/probe.py): each method
trains on digits and lowers its loss, draws its pictures and probes its encoder; a trained autoencoder's probe beats
the random encoder's; NT-Xent equals a NumPy one; 8 fake devices train contrastive as 1 does; bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _cli import REPO_ROOT, run_jtrain
from jtrain import methods
from jtrain.config import apply_overrides, load_experiment
from jtrain.data.source import DatasetSpec
from jtrain.errors import ConfigError

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
SHORT = {"autoencoder": 100, "vae": 100, "contrastive": 60}  # steps: seconds each, enough for the probe to show


def _config(name: str, data_dir: str, *overrides: str):
    config = load_experiment(os.path.join(REPO_ROOT, "experiments", f"digits_{name}.py"))
    apply_overrides(config, [f"data.dir={data_dir}", f"train.steps={SHORT[name]}", "train.log_every_steps=20",
                             "train.steps_per_call=10", "eval.every_steps=0", f"checkpoint.every_steps={SHORT[name]}",
                             "schedule.name=constant", "schedule.warmup_steps=0", *overrides])
    return config


@pytest.fixture(scope="module")
def trained(digits_data_dir, tmp_path_factory):
    """method name -> (workdir, summary) of a short run, each trained once for the tests that read it."""
    from jtrain.train import train

    runs = {}

    def get(name: str):
        if name not in runs:
            workdir = str(tmp_path_factory.mktemp(name))
            runs[name] = workdir, train(_config(name, digits_data_dir, "method.vae.kl_warmup_steps=50"), workdir)
        return runs[name]

    return get


def _train_losses(workdir: str) -> list[float]:
    records = map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.parametrize("name", ["autoencoder", "vae", "contrastive"])
def test_each_method_trains_lowers_its_loss_and_reports(trained, name):
    workdir, summary = trained(name)
    losses = _train_losses(workdir)
    assert len(losses) == SHORT[name] // 20 and losses[-1] < 0.9 * losses[0], losses
    for role in ("val", "test"):  # label-free metrics per split
        assert summary[role]["num_examples"] > 0 and np.isfinite(summary[role]["loss"])
        if name != "contrastive":
            assert 0 < summary[role]["reconstruction_mse"] < 1
    if name == "vae":
        assert summary["test"]["elbo"] == pytest.approx(-summary["test"]["loss"])
        assert summary["test"]["kl"] > 0
        assert summary["test"]["elbo"] == pytest.approx(-summary["test"]["reconstruction_nll"] - summary["test"]["kl"])
    if name == "contrastive":
        assert summary["test"]["view_accuracy"] > 0.1  # chance is 1 / (2 * eval batch - 1)
    probe = summary["probe"]
    assert probe["split"] == "test" and probe["train_examples"] == 1258
    for encoder in ("encoder", "random_encoder"):
        assert set(probe[encoder]) == {"linear_probe_accuracy", "knn_accuracy", "kmeans_nmi", "kmeans_ari"}
        assert 0.1 < probe[encoder]["linear_probe_accuracy"] <= 1
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    written = [r for r in records if r["split"] == "probe"]  # metrics.jsonl and TensorBoard
    assert written and written[-1]["random_knn_accuracy"] == probe["random_encoder"]["knn_accuracy"]
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    pictures = {"autoencoder": {"reconstructions.png"}, "vae": {"reconstructions.png", "vae_samples.png"},
                "contrastive": set()}[name] | {"embeddings_pca.png"}
    plots = set(os.listdir(os.path.join(workdir, "plots")))
    assert pictures <= plots, plots
    for picture in pictures:
        assert os.path.getsize(os.path.join(workdir, "plots", picture)) > 2000


def test_a_trained_autoencoder_probes_better_than_its_random_encoder(trained):
    _, summary = trained("autoencoder")
    encoder, random = summary["probe"]["encoder"], summary["probe"]["random_encoder"]
    assert encoder["linear_probe_accuracy"] > random["linear_probe_accuracy"] + 0.03
    assert encoder["knn_accuracy"] > random["knn_accuracy"] + 0.02
    assert encoder["kmeans_nmi"] > random["kmeans_nmi"] + 0.05


def _numpy_nt_xent(z1: np.ndarray, z2: np.ndarray, t: float) -> np.ndarray:
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, b = len(z), len(z1)
    losses = []
    for i in range(n):
        j = (i + b) % n
        others = [k for k in range(n) if k != i]
        sims = np.array([z[i] @ z[k] / t for k in others])
        losses.append(-(z[i] @ z[j] / t) + np.log(np.exp(sims).sum()))
    return np.array(losses)


def test_nt_xent_equals_numpy_on_a_fixed_batch():
    from jtrain.methods.contrastive import nt_xent

    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    losses, hits = nt_xent(z1, z2, 0.3)
    np.testing.assert_allclose(np.asarray(losses), _numpy_nt_xent(z1, z2, 0.3), rtol=1e-5)
    # Padding rows are neither anchors nor negatives: the 4 real rows score as a batch of 4.
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    masked, _ = nt_xent(z1, z2, 0.3, mask)
    real = np.r_[np.arange(4), 6 + np.arange(4)]
    np.testing.assert_allclose(np.asarray(masked)[real], _numpy_nt_xent(z1[:4], z2[:4], 0.3), rtol=1e-5)
    same, _ = nt_xent(z1, z1, 0.3)
    assert np.asarray(same).max() < np.asarray(losses).max()  # identical views are each other's nearest


_EIGHT_VS_ONE = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jtrain import components
    from jtrain.config import apply_overrides, load_experiment
    config = load_experiment("experiments/digits_contrastive.py")
    apply_overrides(config, ["data.dir=" + sys.argv[1], "data.batch_size=32", "train.steps_per_call=1"])
    out = {}
    for n in (1, 8):
        run = components.build(config, devices=jax.devices()[:n])
        arrays = run.state_codec.flatten(run.init())
        batch = next(iter(run.data.train_dataset(config.data, config.seed)))
        step = run.train_call(1)
        losses = []
        for _ in range(3):  # the same batch: views differ by step, the loss falls
            arrays, metrics = step(arrays, run.put_batch(batch))
            losses.append(float(np.asarray(metrics)[run.metric_names.index("loss")]))
        params = jax.tree.leaves(jax.device_get(run.state_codec.unflatten(arrays).params))
        out[n] = {"losses": losses, "mesh": dict(run.mesh.shape), "param_sum": float(sum(np.abs(p).sum() for p in params))}
    print(json.dumps(out))
""")


@pytest.mark.slow  # a subprocess compiling the step for two meshes
def test_contrastive_on_eight_devices_equals_one_device(digits_data_dir):
    env = {**os.environ, **EIGHT_DEVICES, "PYTHONPATH": REPO_ROOT, "JTRAIN_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, "-c", _EIGHT_VS_ONE, digits_data_dir], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one, eight = out["1"], out["8"]
    assert eight["mesh"]["data"] == 8 and one["mesh"]["data"] == 1
    # Negatives over the whole global batch: per-device negatives (4 examples each) would give another loss.
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
    assert eight["param_sum"] == pytest.approx(one["param_sum"], rel=1e-4)
    assert one["losses"][-1] < one["losses"][0]


def test_contrastive_with_one_example_per_device_is_one_line_exit_2(digits_data_dir, tmp_path):
    result = run_jtrain(["train", "--config", "experiments/digits_contrastive.py", "--config.data.batch_size=8",
                         "--workdir", str(tmp_path)], digits_data_dir, EIGHT_DEVICES)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert "'data.batch_size': contrastive needs at least 2 examples per device, got 8 over 8" in message


def _method(name: str, *overrides: str):
    config = load_experiment(os.path.join(REPO_ROOT, "experiments", f"digits_{name}.py"))
    apply_overrides(config, list(overrides))
    return methods.build(config)


TEXT = DatasetSpec(name="shakespeare_char", input_shape=(0,), tokenizer="char")
TABLE = DatasetSpec(name="breast_cancer", input_shape=(30,), num_classes=2)


def test_augmentations_that_do_not_apply_name_themselves():
    with pytest.raises(ConfigError, match=r"^config key 'method.contrastive.augment': shift need images \(H, W, C\); "
                                          r"breast_cancer has inputs of shape \(30,\)"):
        _method("contrastive").check_data(TABLE)
    _method("contrastive", "method.contrastive.augment=noise").check_data(TABLE)  # noise applies to features
    with pytest.raises(ConfigError, match="cannot make views of shakespeare_char's integer tokens"):
        _method("contrastive").check_data(TEXT)
    with pytest.raises(ConfigError, match="config key 'method.contrastive.augment': unknown augmentation 'rotate'"):
        _method("contrastive", "method.contrastive.augment=shift,rotate")


def test_vae_on_tokens_and_bernoulli_on_tables_are_one_line():
    with pytest.raises(ConfigError, match=r"^config key 'method.name': vae reconstructs real-valued inputs; "
                                          r"shakespeare_char holds integer tokens \(char\)") as info:
        _method("vae").check_data(TEXT)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="config key 'method.vae.loss': bce models pixels in"):
        _method("vae").check_data(TABLE)
    _method("vae", "method.vae.loss=mse").check_data(TABLE)


def test_vae_on_text_through_the_cli_is_exit_2(tmp_path):
    path = tmp_path / "tokens.py"  # a text source the VAE refuses before any data is read
    path.write_text("from jtrain.data.source import DatasetSpec, SpecOnly\n\n\n"
                    "def source(config):\n    return SpecOnly(DatasetSpec(name='tokens', input_shape=(16,), "
                    "tokenizer='char'))\n")
    result = run_jtrain(["train", "--config", "experiments/digits_vae.py", "--config.data.name=tokens:source",
                         "--workdir", str(tmp_path / "w")], str(tmp_path), {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "vae reconstructs real-valued inputs; tokens holds integer tokens" in result.stderr.strip().splitlines()[-1]


def test_conv_decoder_draws_images_and_refuses_shapes_it_cannot():
    import jax
    import jax.numpy as jnp

    from jtrain.data.source import DatasetSpec
    from jtrain.errors import ConfigError
    from jtrain.methods.autoencoder import check_decoder, make_decoder

    decoder = make_decoder("conv", (32, 16), (28, 28, 1))
    params = decoder.init(jax.random.key(0), jnp.zeros((2, 8)))
    out = decoder.apply(params, jax.random.normal(jax.random.key(1), (3, 8)))
    assert out.shape == (3, 28, 28, 1)
    kernels = [v.shape for v in jax.tree.leaves(params)]
    assert (3, 3, 16, 32) in kernels or (3, 3, 32, 16) in kernels  # transposed convolutions, not an MLP
    image = DatasetSpec(name="fashion", input_shape=(28, 28, 1), num_classes=10)
    check_decoder("conv", (32, 16), image, "method.autoencoder.decoder")  # 28 halves twice
    with pytest.raises(ConfigError, match=r"divide by 2\^3"):
        check_decoder("conv", (64, 32, 16), image, "method.autoencoder.decoder")
    with pytest.raises(ConfigError, match="shape \\(10,\\)"):
        check_decoder("conv", (32,), DatasetSpec(name="diabetes", input_shape=(10,), num_classes=0),
                      "method.vae.decoder")
    with pytest.raises(ConfigError, match="must be one of mlp, conv"):
        check_decoder("deconv", (32,), image, "method.vae.decoder")
