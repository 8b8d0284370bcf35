"""Start-up: `import jtrain` and `jtrain --help` load none of the heavy libraries; the public names still resolve;
JAX's persistent compilation cache is on by default in jtrain's cache directory and off with
JTRAIN_COMPILATION_CACHE=0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _cli import REPO_ROOT, SMOKE_OVERRIDES, run_jtrain

HEAVY = ("jax", "tensorflow_datasets", "orbax", "grain", "matplotlib", "flax", "optax", "tensorflow", "pandas")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_help_load_no_heavy_library():
    assert not set(HEAVY) & set(_loaded_after("import jtrain"))
    help_run = "import sys\nfrom jtrain.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass"
    assert not set(HEAVY) & set(_loaded_after(help_run))


def test_public_names_resolve_and_functions_survive_their_modules_import():
    code = ("import jtrain\nfrom jtrain.train import train as t\nimport jtrain.evaluate\n"
            "assert jtrain.train is t and callable(jtrain.evaluate) and callable(jtrain.predict)\n"
            "assert jtrain.config.default_config().data.name == 'digits'\n"
            "assert set(jtrain.__all__) <= set(dir(jtrain))\n"
            "assert all(getattr(jtrain, n) is not None for n in jtrain.__all__)")
    assert "jax" in _loaded_after(code)


def test_the_compilation_cache_is_on_by_default_and_off_on_request(tmp_path, digits_data_dir):
    args = ["train", "--config", "experiments/digits_mlp_l2.py", *SMOKE_OVERRIDES, "--config.train.steps=10",
            "--config.eval.every_steps=10", "--config.checkpoint.every_steps=0"]
    on = run_jtrain([*args, "--workdir", str(tmp_path / "on")], digits_data_dir,
                    {"JTRAIN_CACHE_DIR": str(tmp_path / "cache_on"), "JAX_COMPILATION_CACHE_DIR": ""})
    assert on.returncode == 0, on.stderr[-2000:]
    assert os.listdir(tmp_path / "cache_on" / "jax_compilation_cache")  # the programs of the run
    off = run_jtrain([*args, "--workdir", str(tmp_path / "off")], digits_data_dir,
                     {"JTRAIN_CACHE_DIR": str(tmp_path / "cache_off"), "JTRAIN_COMPILATION_CACHE": "0",
                      "JAX_COMPILATION_CACHE_DIR": ""})
    assert off.returncode == 0, off.stderr[-2000:]
    assert not os.path.exists(tmp_path / "cache_off")
