"""A table of user mistakes through the real CLI: each is one line on stderr, no traceback, exit code 2, and the
workdir is left as it was (here: never created)."""

from __future__ import annotations

import os

import pytest

from _cli import SMOKE_OVERRIDES, run_jtrain

MLP = ["--config", "experiments/digits_mlp_l2.py", *SMOKE_OVERRIDES, "--config.train.early_stopping_patience=0"]


def _files(tmp_path):
    (tmp_path / "dict_config.py").write_text("def get_config():\n    return {'seed': 1}\n")
    (tmp_path / "no_arg.py").write_text("from jtrain.config import default_config\n\n"
                                        "def get_config():\n    return default_config()\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "a_file").write_text("")


CASES = [  # (argv after `jtrain`, extra env, what the line says)
    (["train", *MLP, "--config.data.batch_size=5000"], {}, "'data.batch_size': 5000 exceeds the 1258 training"),
    (["train", "--config", "{tmp}/dict_config.py"], {}, "get_config() returned a dict"),
    (["train", "--config", "{tmp}/no_arg.py:5"], {}, "get_config() takes 0 positional arguments"),
    (["train", "--config", "{tmp}/bad.json"], {}, "bad.json: not JSON"),
    (["train", "--config", "{tmp}"], {}, "config file not found"),
    (["train", *MLP, "--num_processes", "0", "--coordinator", "127.0.0.1:9", "--process_id", "0"], {},
     "--num_processes 0: must be >= 1"),
    (["train", *MLP], {"JTRAIN_DATA_DIR": "{tmp}/a_file"}, "JTRAIN_DATA_DIR names a file"),
    (["train", *MLP, "--config.eval.top_k=10"], {}, "'eval.top_k': 10 of 10 classes"),
    (["train", *MLP, "--config.loss.name=mse"], {}, "mse regresses numbers, but digits has class labels"),
    (["plan", "--config", "experiments/digits_mlp_l2.py", "--devices", "0"], {}, "--devices 0: must be >= 1"),
    (["train", *MLP, "--config.eval.best_metric=acuracy"], {}, "'acuracy' is not a val metric"),
    (["train", *MLP, "--config.train.step=5"], {}, "did you mean 'train.steps'"),
    (["train", *MLP, "--config.optim.learning_rate=fast"], {}, "optim.learning_rate"),
    (["train", *MLP, "--config.data.name=digitz"], {}, "did you mean 'digits'"),
    (["train", *MLP, "--config.data.name=csv:{tmp}/nothing.csv"], {}, "nothing.csv: no such file"),
    (["eval", "--workdir", "{tmp}/no_run"], {}, "is '{tmp}/no_run' a jtrain workdir"),
    (["predict", "--workdir", "{tmp}/no_run", "--input", "x.csv", "--output", "p.csv"], {}, "jtrain workdir"),
    (["cv", *MLP, "--folds", "1"], {}, "--folds 1"),
    (["sweep", *MLP, "--space", "optim.learning_rate=loguniform(1e-1,1e-4)"], {}, "optim.learning_rate"),
]


@pytest.mark.parametrize("argv, env, says", CASES, ids=[c[2][:40] for c in CASES])
def test_a_mistake_is_one_line_and_exit_2(argv, env, says, tmp_path, digits_data_dir):
    _files(tmp_path)
    tmp = str(tmp_path)
    workdir = os.path.join(tmp, "run")
    argv = [a.replace("{tmp}", tmp) for a in argv]
    if argv[0] in ("train", "cv", "sweep"):
        argv += ["--workdir", workdir]
    env = {k: v.replace("{tmp}", tmp) for k, v in env.items()}
    result = run_jtrain(argv, env.pop("JTRAIN_DATA_DIR", digits_data_dir), env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert says.replace("{tmp}", tmp) in lines[0], lines[0]
    assert not os.path.exists(workdir)
