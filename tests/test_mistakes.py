"""A table of user mistakes through the real CLI: each is one line on stderr, no traceback, exit code 2, and the
workdir is left as it was: never created for a new run; for a finished run, its checkpoints, config.json and
metrics.jsonl byte for byte."""

from __future__ import annotations

import hashlib
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
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n" * 10)


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
    (["train", *MLP, "--config.optim.learning_rate=fast"], {}, "'optim.learning_rate': expected float, got 'fast'"),
    (["train", *MLP, "--config.data.name=digitz"], {}, "did you mean 'digits'"),
    (["train", *MLP, "--config.data.name=csv:{tmp}/nothing.csv"], {}, "nothing.csv: no such file"),
    (["eval", "--workdir", "{tmp}/no_run"], {}, "is '{tmp}/no_run' a jtrain workdir"),
    (["predict", "--workdir", "{tmp}/no_run", "--input", "x.csv", "--output", "p.csv"], {}, "jtrain workdir"),
    (["cv", *MLP, "--folds", "1"], {}, "--folds 1"),
    (["sweep", *MLP, "--space", "optim.learning_rate=loguniform(1e-1,1e-4)"], {}, "reversed or empty bounds"),
    (["train", *MLP, "--config.train.steps=-5"], {}, "'train.steps': must be >= 0"),
    (["train", *MLP, "--config.data.batch_size=0"], {}, "'data.batch_size': must be > 0"),
    (["train", *MLP, "--config.optim.name=adamm"], {}, "unknown optimizer 'adamm' (did you mean 'adam'?)"),
    (["train", *MLP, "--config.schedule.name=cosin"], {}, "unknown schedule 'cosin' (did you mean 'cosine'?)"),
    (["train", *MLP, "--config.model.name=mlpp"], {}, "unknown model 'mlpp' (did you mean 'mlp'?)"),
    (["train", *MLP, "--config.method.name=superviesd"], {}, "unknown method 'superviesd'"),
    (["train", *MLP, "--config.loss.name=crossentropy"], {}, "did you mean 'softmax_cross_entropy'?"),
    (["train", *MLP, "--config.mesh.data=3"], {}, "needs 3 devices, 1 are available"),
    (["train", *MLP, "--config.data.name=csv:{tmp}/t.csv", "--config.data.target=nope"], {},
     "t.csv: no target column 'nope' (data.target); columns: a, b, y"),
    (["train", *MLP, "--config.data.name=csv:{tmp}/t.csv", "--config.data.target=y",
      "--config.data.split_ratios=(0.5, 0.6)"], {}, "'data.split_ratios'"),
    (["train", *MLP, "--config.optim.learning_rate=-1"], {}, "'optim.learning_rate': must be >= 0"),
    (["train", *MLP, "--config.train.epochs=-1"], {}, "'train.epochs': must be >= 0"),
    (["train", *MLP, "--config.seed=abc"], {}, "'seed': expected int, got 'abc'"),
    (["train", *MLP, "--config.checkpoint.every_steps=-1"], {}, "'checkpoint.every_steps': must be >= 0"),
    (["train", *MLP, "--config.foo.bar=1"], {}, "unknown config key 'foo.bar'"),
    (["train", "--config", "experiments/nonexistent.py"], {}, "config file not found: experiments/nonexistent.py"),
    (["train", *MLP, "--config.init.pretrained={tmp}/nowhere"], {}, "'init.pretrained': {tmp}/nowhere does not exist"),
    (["train", *MLP, "--config.optim.policy=('((=frozen',)"], {}, "'optim.policy': rule '((=frozen': bad regex"),
    (["train", *MLP, "--config.data.name=npz:{tmp}/missing.npz"], {}, "missing.npz: no such file"),
    (["train", *MLP, "--config.data.name=images:{tmp}/a_file"], {}, "a_file: not a folder"),
    (["train", *MLP, "--config.model.lora_rank=4"], {}, "'model.lora_targets': set the regex"),
    (["train", *MLP, "--config.data.augment=rotate"], {}, "unknown augmentation 'rotate'"),
    (["train", *MLP, "--config.train.steps_per_call=0"], {}, "'train.steps_per_call': must be >= 1"),
    (["train", *MLP, "--config.train.on_nonfinite=ignore"], {}, "'train.on_nonfinite': must be halt or skip"),
    (["train", *MLP, "--config.model.dtype=float8"], {}, "'model.dtype': must be float32 or bfloat16"),
    (["train", *MLP, "--config.schedule.unit=hours"], {}, "'schedule.unit': must be one of steps, epochs"),
    (["train", *MLP, "--config.optim.accumulate_steps=0"], {}, "'optim.accumulate_steps': must be >= 1"),
    (["train", *MLP, "--config.optim.accumulate_steps=3"], {}, "3 micro-batches of data.batch_size 16"),
    (["train", *MLP, "--config.data.splits.val=bogus"], {}, "config key 'data.splits.val': 'bogus' is no split of digits, which has train"),
    (["train", *MLP, "--config.eval.best_mode=up"], {}, "'eval.best_mode': must be auto, max or min"),
    (["train", *MLP, "--config.data.cv.folds=1"], {}, "'data.cv.folds': must be 0"),
    (["inspect", "{tmp}/nowhere"], {}, "{tmp}/nowhere: no checkpoint found"),
    (["compare", "{tmp}/nowhere", "{tmp}/nowhere2"], {}, "nowhere/summary.json: no summary"),
    (["sweep", *MLP, "--space", "optim.learning_rate=loguniformm(1e-4,1e-1)"], {}, "not a distribution"),
    (["sweep", *MLP, "--space", "optim.learnin_rate=loguniform(1e-4,1e-1)"], {},
     "did you mean 'optim.learning_rate'?"),
    (["sweep", *MLP, "--space", "optim.learning_rate=loguniform(1e-4,1e-1)", "--objective", "val.nonsense"], {},
     "the run reports no val metric 'nonsense'"),
    (["cv", *MLP, "--folds", "5", "--group", "nocol"], {}, "'data.cv.group': 'nocol' names a column"),
    (["config", "--config", "experiments/digits_mlp_l2.py", "optim.learnin_rate"], {},
     "unknown config key 'optim.learnin_rate'"),
    (["plan", "--config", "experiments/digits_mlp_l2.py", "--devices", "3", "--config.mesh.data=2"], {},
     "needs 2 devices, 3 are available"),
]

ON_A_FINISHED_RUN = [  # (argv after `jtrain`, with {run} the finished run's workdir, what the line says)
    (["train", *MLP, "--config.optim.learning_rate=0.5", "--workdir", "{run}"],
     "trained with another config (optim.learning_rate 0.001 -> 0.5)"),
    (["train", *MLP, "--config.model.features=(32,)", "--workdir", "{run}"], "did you mean 'model.conv_features'"),
    (["train", *MLP, "--config.data.batch_size=32", "--workdir", "{run}"], "data.batch_size 16 -> 32"),
    (["eval", "--workdir", "{run}", "--split", "bogus"], "--split 'bogus' is no split of digits, which has train (1,797 examples)"),
    (["train", *MLP, "--config.init.pretrained={run}", "--config.init.skip=('((',)", "--workdir", "{tmp}/new"],
     "'init.skip': bad regex '(('"),
    (["train", *MLP, "--config.init.pretrained={run}", "--config.init.rename=('abc',)", "--workdir", "{tmp}/new"],
     "'init.rename': rule 'abc' is not 'REGEX=REPLACEMENT'"),
    (["train", *MLP, "--config.init.pretrained={run}", "--config.init.skip=('nothing/.*',)", "--workdir",
      "{tmp}/new"], "'init.skip': 'nothing/.*' matches no model or checkpoint path"),
    (["train", *MLP, "--config.init.pretrained={run}", "--config.model.hidden_sizes=(64, 128)", "--workdir",
      "{tmp}/new"], "shape mismatch"),
    (["eval", "--workdir", "{run}", "--step", "999"], "--step 999: {run}/checkpoints has checkpoints at steps"),
    (["sample", "--workdir", "{run}"], "sampling needs a model family that generates"),
    (["export", "--workdir", "{run}", "--format", "hf", "--output", "{tmp}/hf"], "has no Hugging Face layout"),
    (["export", "--workdir", "{run}", "--format", "onnx", "--output", "{tmp}/hf"], "--format 'onnx'"),
    (["predict", "--workdir", "{run}", "--input", "{tmp}/missing.csv", "--output", "{tmp}/p.csv"],
     "missing.csv: no such file or folder"),
    (["predict", "--workdir", "{run}", "--input", "{tmp}/t.csv", "--output", "{tmp}/p.csv"],
     "t.csv: not a readable image"),
    (["inspect", "{run}/checkpoints", "--diff", "{tmp}/nowhere"], "nowhere: no checkpoint found"),
    (["export", "--workdir", "{run}", "--format", "hf", "--output", "{tmp}/hf", "--max_shard_size", "5XB"],
     "--max_shard_size '5XB'"),
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


def _fingerprint(workdir: str) -> dict[str, str]:
    """sha256 of every checkpoint file, config.json and metrics.jsonl."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, workdir)
            if rel.startswith("checkpoints") or rel in ("config.json", "metrics.jsonl"):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_data_dir):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    result = run_jtrain(["train", *MLP, "--workdir", workdir], digits_data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


@pytest.mark.parametrize("argv, says", ON_A_FINISHED_RUN, ids=[c[1][:40] for c in ON_A_FINISHED_RUN])
def test_a_mistake_on_a_finished_run_is_one_line_exit_2_and_loses_nothing(argv, says, finished_run, tmp_path,
                                                                           digits_data_dir):
    _files(tmp_path)
    fill = lambda a: a.replace("{tmp}", str(tmp_path)).replace("{run}", finished_run)
    before = _fingerprint(finished_run)
    assert any(k.startswith("checkpoints") for k in before) and "metrics.jsonl" in before
    result = run_jtrain([fill(a) for a in argv], digits_data_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert fill(says) in lines[0], lines[0]
    assert _fingerprint(finished_run) == before
    assert not os.path.exists(tmp_path / "new")  # a run that does not start writes nothing


def test_the_table_holds_at_least_60_distinct_mistakes():
    says = [c[2] for c in CASES] + [c[1] for c in ON_A_FINISHED_RUN]
    assert len(says) >= 60 and len(set(says)) == len(says)
