"""The one config tree: every field defined once, here, with a one-line comment.

Experiments (`experiments/*.py`) call `default_config()` and change a few fields; the CLI applies
`--config.SECTION.KEY=VALUE` overrides on top; `validate()` checks the result before anything is built.
The returned ConfigDict is locked: assigning a key that does not exist, or a value of the wrong type,
fails at once with an error that names the key.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import json
import os
from typing import Any

import ml_collections

from jtrain.errors import ConfigError


# Logical axis rules (jtrain/sharding.py). The batch is always split over (data, fsdp); each parameter dimension
# named by the model goes to the mesh axes of its rule ("name=" leaves it to "*", "name=-" never splits it), then
# "*=fsdp" puts the largest remaining dimension that divides evenly on fsdp.
MESH_RULES = ("vocab=tensor", "heads=tensor", "mlp=tensor", "embed=", "kv=", "classes=", "conv_in=", "conv_out=",
              "conv_height=-", "conv_width=-", "layers=-", "*=fsdp")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, dropout and data shuffling; same seed -> same run

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # registered dataset: digits, fashion_mnist, diabetes, breast_cancer, shakespeare_char, ... (jtrain/data/registry.py); your own files: csv:PATH, parquet:PATH, json:PATH, npz:PATH, images:DIR, hf:NAME_OR_PATH (jtrain/data/own.py); "env" for an RL run's environment (env.*, jtrain/data/env.py); or "package.module:factory" for a source of your own (jtrain/data/source.py)
    c.data.dir = ""  # TFDS data directory; "" = $JTRAIN_DATA_DIR, else ~/.cache/jtrain/tensorflow_datasets
    c.data.batch_size = 64  # global training batch size (split over the data-parallel devices)
    c.data.eval_batch_size = 0  # global eval batch size; 0 = same as batch_size
    c.data.splits = ml_collections.ConfigDict()
    c.data.splits.train = ""  # TFDS split spec for training, e.g. "train[:70%]"; "" = the dataset's default
    c.data.splits.val = ""  # split evaluated during training; "" = the dataset's default ("none" = no val)
    c.data.splits.test = ""  # split evaluated at the end; "" = the dataset's default ("none" = no test)
    c.data.shuffle = True  # reshuffle the training split every epoch (deterministic from seed)
    c.data.normalize = True  # standardise inputs: images with the dataset's mean/std, tabular features per feature
    c.data.normalize_targets = True  # standardise regression targets with train-split mean/std; metrics in target units
    c.data.augment = ""  # comma-separated augmentations on training images: shift, flip, noise
    c.data.label_noise = 0.0  # fraction of training labels replaced by another class on purpose (noisy-label studies; `jtrain score` marks them), from data.label_noise_seed
    c.data.label_noise_seed = 0  # which labels data.label_noise replaces, apart from `seed`
    c.data.train_rows = ""  # a .npy, .txt or .csv (column index) of training-split rows to train on, e.g. active learning's labelled set; "" = every row
    c.data.curriculum = ml_collections.ConfigDict()  # the training order by difficulty (jtrain/data/curriculum.py)
    c.data.curriculum.difficulty = ""  # "" = off; a CSV with a row per training example (`jtrain score`'s, or columns index + data.curriculum.column), "column" (data.curriculum.column of your own table, left out of the features) or "package.module:function" (inputs, targets) -> (N,) difficulty
    c.data.curriculum.column = "loss"  # the column holding difficulty (of the CSV, or of your own table with difficulty="column"), higher = harder
    c.data.curriculum.order = "easy"  # easy (easiest first), hard (hardest first: anti-curriculum) or random (a random ranking under the same pacing: the control)
    c.data.curriculum.pacing = "linear"  # how the pool of allowed examples grows: linear, root, geometric or step
    c.data.curriculum.start = 0.2  # fraction of the training split in the pool at step 0
    c.data.curriculum.steps = 0  # steps until the pool holds the whole split (> 0 with a curriculum)
    c.data.curriculum.stages = 4  # pacing=step: the pool grows in this many equal jumps
    c.data.prefetch = 2  # stacks of data.transfer_batches batches prepared ahead by a background thread; 0 = none
    c.data.transfer_batches = 0  # training batches copied to the device in one transfer, then taken there one call at a time (jtrain/feed.py); 0 = auto (32 batches, or 1 MB of small ones up to 1024; at most 64 MB); a multiple of train.steps_per_call
    c.data.in_memory_mb = 2048  # decode a split once into memory (cached as .npy beside the dataset) when it fits in this many MB; 0 = read records every batch
    c.data.seq_len = 128  # text datasets (shakespeare_char, shakespeare_bpe): tokens per packed sequence, at most model.max_len
    c.data.seq_len_warmup = 0  # text datasets: steps over which the context grows from data.seq_len_warmup_start to data.seq_len (rows cut into shorter sequences by segment ids: same shapes, no recompiles); 0 = off
    c.data.seq_len_warmup_start = 16  # text datasets: tokens per sequence at step 0 of the warm-up
    c.data.tokenizer = ""  # text datasets: a pretrained model's tokenizer.json (or its directory); "" = the dataset's own (an HF init.pretrained's when it has one)
    c.data.jsonl = ml_collections.ConfigDict()  # your own post-training examples instead of a builtin's (jtrain/data/sft.py)
    c.data.jsonl.train = ""  # JSONL of {"prompt", "response"} (data.name=shakespeare_sft) or {"prompt", "chosen", "rejected"} (shakespeare_pref); "" = the builtin pairs
    c.data.jsonl.val = ""  # held-out JSONL evaluated during training (with data.jsonl.train); "" = no val
    c.data.jsonl.test = ""  # held-out JSONL evaluated at the end (with data.jsonl.train); "" = no test
    # Your own data (jtrain/data/own.py): data.name = csv:PATH, parquet:PATH, json:PATH, npz:PATH, images:DIR or hf:NAME_OR_PATH
    c.data.target = ""  # tables: the column to predict (required for csv / parquet / json / hf tables)
    c.data.features = ""  # tables: comma-separated feature columns; "" = every column but the target and data.drop
    c.data.categorical = ""  # tables: comma-separated columns to treat as categories (strings are already)
    c.data.numeric = ""  # tables: comma-separated columns to treat as numbers
    c.data.drop = ""  # tables: comma-separated columns to leave out
    c.data.task = "auto"  # auto | classification | regression; auto = regression for a float target, else classification
    c.data.missing_target = "error"  # error | drop: rows whose target is missing
    c.data.split_ratios = (0.7, 0.15, 0.15)  # train / val / test fractions when one file (or pool) holds every row; stratified for classification
    c.data.split_seed = 0  # the shuffle of that split (apart from `seed`, so runs of other seeds see the same split)
    c.data.cv = ml_collections.ConfigDict()  # one fold of a k-fold cross-validation of the training split (jtrain cv, jtrain/data/folds.py)
    c.data.cv.folds = 0  # K folds of the training split: train on the others, validate on data.cv.fold; 0 = no cross-validation
    c.data.cv.fold = 0  # the held-out fold, 0-based, < data.cv.folds
    c.data.cv.repeats = 1  # repetitions of the K folds, each shuffled anew (RepeatedStratifiedKFold / RepeatedKFold)
    c.data.cv.repeat = 0  # which repetition, 0-based, < data.cv.repeats
    c.data.cv.stratify = True  # classification: stratified folds (StratifiedKFold) on the training labels
    c.data.cv.group = ""  # a column of your own table whose groups stay in one fold (GroupKFold); "" = rows independent
    c.data.cv.seed = 0  # the folds' shuffle (scikit-learn's random_state); jtrain cv sets it to the run's seed
    c.data.image_size = (0, 0)  # images: (height, width) every image is resized to; (0, 0) = the first image's size
    c.data.image_channels = 0  # images: 1 (grayscale) or 3 (RGB); 0 = from the first image
    c.data.prep = ml_collections.ConfigDict()  # table preparation, fitted on the training split only (jtrain/data/tabular.py)
    c.data.prep.impute_numeric = "mean"  # mean | median | most_frequent | constant (data.prep.fill_value)
    c.data.prep.impute_categorical = "most_frequent"  # most_frequent | constant (the category "missing")
    c.data.prep.fill_value = 0.0  # the constant of impute_numeric=constant
    c.data.prep.missing_indicator = False  # add a 0/1 column per feature that had missing values in training
    c.data.prep.encode = "onehot"  # onehot (plus a column for categories unseen in training) | ordinal
    c.data.prep.scale = "standard"  # standard | robust | minmax | none, for numeric columns
    c.data.prep.clip_quantiles = (0.0, 1.0)  # clip numeric columns to these training quantiles first; (0, 1) = off
    c.data.prep.log_target = False  # regression: train on log(target); metrics and predictions stay in the target's units
    c.data.eval_examples = 0  # post-training datasets: evaluate at most this many val/test examples, evenly spaced; 0 = all

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"  # model family (mlp, cnn, decoder, bert) or "package.module:factory" for your own
    c.model.num_outputs = 0  # output width; 0 = number of classes (or targets) of the dataset
    c.model.dropout = 0.0  # dropout rate before each dense layer (decoder: on embeddings and residual branches); training only
    c.model.dtype = "float32"  # computation dtype (float32 or bfloat16); parameters stay float32
    # Each family's own fields, with their comments, live in its file (jtrain/models/*.py FAMILY): decoder and
    # bert read the transformer sizes (vocab_size, num_layers, num_heads, embed_dim, mlp_dim, max_len).
    for key, default in _model_fields(c.model.name, builtin=True).items():
        c.model[key] = default
    c.model.lora_rank = 0  # LoRA adapters of this rank on the kernels model.lora_targets names (jtrain/lora.py); 0 = off
    c.model.lora_targets = ""  # regex (fullmatch) of 2-D parameter paths to adapt, e.g. "encoder/layer_\d+/(query|value)/kernel"
    c.model.lora_alpha = 8.0  # LoRA scale: the update is (lora_alpha / lora_rank) * A @ B

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "softmax_cross_entropy"  # a loss in jtrain/losses.py LOSSES, or "package.module:function"
    c.loss.label_smoothing = 0.0  # label smoothing for softmax_cross_entropy and sigmoid_binary_cross_entropy
    c.loss.task = ""  # task of a "package.module:function" loss: classification, binary or regression ("" = its .task)
    c.loss.huber_delta = 1.0  # huber: quadratic for errors below delta, linear above
    c.loss.l1 = 0.0  # adds l1 * sum(|w|) over kernels (parameters with ndim > 1) to the training loss
    c.loss.l2 = 0.0  # adds l2 * sum(w^2) over kernels (parameters with ndim > 1) to the training loss

    c.method = ml_collections.ConfigDict()  # how the model learns (jtrain/methods); a user method's own fields go here too
    c.method.name = "supervised"  # supervised (outputs vs targets), dpo (preference pairs), reward (a reward model on preference pairs), autoencoder, vae, contrastive, ppo / reinforce (agents in env.name, with data.name=env), or "package.module:factory"
    c.method.dpo = ml_collections.ConfigDict()
    c.method.dpo.beta = 0.1  # dpo: scale of the implicit reward beta * (log p_policy - log p_reference) of a response
    # Learning without labels (labels, if the data has them, only score the encoder at the end: eval.probe).
    c.method.reward = ml_collections.ConfigDict()
    c.method.reward.margin = 0.0  # reward: the gap the Bradley-Terry loss asks between chosen and rejected rewards
    c.method.reward.center = 0.0  # reward: weight of (r_chosen + r_rejected)^2, keeping rewards near 0; 0 = off
    c.method.autoencoder = ml_collections.ConfigDict()
    c.method.autoencoder.latent_dim = 16  # autoencoder: the encoder's output width (model.name's network), the embedding
    c.method.autoencoder.loss = "mse"  # autoencoder: mse, or bce (Bernoulli likelihood of images in [0, 1])
    c.method.autoencoder.decoder = "mlp"  # autoencoder: mlp, or conv (images: transposed convolutions, each width doubling the size)
    c.method.autoencoder.decoder_hidden = (256,)  # autoencoder: decoder widths, latent -> ... -> the input's shape (conv: channels per doubling)
    c.method.vae = ml_collections.ConfigDict()
    c.method.vae.latent_dim = 8  # vae: the latent size (the encoder outputs its mean and log-variance)
    c.method.vae.loss = "bce"  # vae: bce (Bernoulli likelihood of images in [0, 1]) or mse (unit-variance Gaussian)
    c.method.vae.kl_warmup_steps = 0  # vae: the KL term's weight rises linearly from 0 to 1 over these steps
    c.method.vae.decoder = "mlp"  # vae: mlp, or conv (images: transposed convolutions, each width doubling the size)
    c.method.vae.decoder_hidden = (256,)  # vae: decoder widths, latent -> ... -> the input's shape (conv: channels per doubling)
    c.method.contrastive = ml_collections.ConfigDict()
    c.method.contrastive.embed_dim = 64  # contrastive: the encoder's output width, the embedding the probe scores
    c.method.contrastive.projection_dim = 32  # contrastive: the projection head's output, where NT-Xent is computed
    c.method.contrastive.temperature = 0.2  # contrastive: NT-Xent temperature
    c.method.contrastive.augment = "shift,noise"  # contrastive: the two views' augmentations: shift, flip, noise, erase
    # Reinforcement learning (data.name = "env", env.*, rl.*): the agents' own settings.
    c.method.ppo = ml_collections.ConfigDict()
    c.method.ppo.clip_eps = 0.2  # ppo: the probability ratio is clipped to [1 - clip_eps, 1 + clip_eps] (and the value change, with clip_value)
    c.method.ppo.epochs = 4  # ppo: passes over each rollout, each in method.ppo.num_minibatches updates
    c.method.ppo.num_minibatches = 4  # ppo: updates per pass; the rollout's env.num_envs x rl.num_steps transitions split evenly
    c.method.ppo.clip_value = True  # ppo: clip the value's change from the rollout's value like the ratio (the larger loss counts)

    c.env = ml_collections.ConfigDict()  # the environment of an RL run (data.name = "env"; jtrain/envs.py)
    c.env.name = ""  # gymnax:NAME (gymnax:CartPole-v1, gymnax:Acrobot-v1, ...) or package.module:make_env returning a jtrain.envs.Env
    c.env.num_envs = 8  # environments each agent steps in parallel (vmapped; split over the data-parallel devices)

    c.rl = ml_collections.ConfigDict()  # reinforcement learning: what every agent shares (method.name = ppo or reinforce)
    c.rl.num_steps = 128  # rollout length: steps of every environment collected in one train step, before its update
    c.rl.gamma = 0.99  # discount factor of rewards
    c.rl.gae_lambda = 0.95  # ppo: GAE lambda of the advantages (reinforce uses 1: discounted returns)
    c.rl.normalize_advantages = True  # standardise advantages over each (mini)batch
    c.rl.value_coef = 0.5  # weight of the value (baseline) loss
    c.rl.entropy_coef = 0.01  # weight of the entropy bonus (subtracted from the loss)
    c.rl.hidden_sizes = (64, 64)  # actor and critic MLP widths (two separate networks)
    c.rl.activation = "tanh"  # hidden activation of the actor-critic: tanh or relu
    c.rl.num_seeds = 1  # independent agents trained together as one vmapped program (own init, environments and draws); metrics per seed and mean / std
    c.rl.eval_max_steps = 1000  # an evaluation episode stops after this many steps if it has not ended
    c.rl.frames = 8  # frames of one greedy test episode drawn into WORKDIR/plots/episode.png (environments with a renderer); 0 = none

    c.train = ml_collections.ConfigDict()
    c.train.steps = 0  # total optimizer steps; 0 = derive from train.epochs
    c.train.epochs = 0.0  # epochs over the training split, converted to steps when train.steps == 0
    c.train.log_every_steps = 50  # fetch and write training metrics every k steps
    c.train.steps_per_call = 1  # optimizer steps per jitted dispatch (a scan over stacked batches); > 1 speeds up tiny models
    c.train.scan_unroll = 1  # with steps_per_call > 1: steps of the scan unrolled per loop iteration (CNNs on CPU: = steps_per_call)
    c.train.progress = True  # progress bar on a TTY (also off when JTRAIN_NO_PROGRESS is set)
    c.train.on_nonfinite = "halt"  # non-finite loss/gradients: halt (error naming the step) or skip (drop the update)
    c.train.log_grad_norm = False  # log the global gradient norm of every step (one more pass over the gradients each step)
    c.train.early_stopping_patience = 0  # stop after this many evals without improving eval.best_metric; 0 = off
    c.train.early_stopping_min_delta = 0.0  # smallest change of eval.best_metric that counts as an improvement
    c.train.peak_flops = 0.0  # one device's peak FLOP/s for MFU in the logs (decoder); 0 = its published bf16 peak (throughput.py), else a float32 matmul measured once

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0  # evaluate the val split every k steps; 0 = only at the end
    c.eval.top_k = 0  # classification: also report top-k accuracy for this k; 0 = off
    c.eval.best_metric = ""  # val metric that ranks checkpoints and drives early stopping, e.g. accuracy; "" = none
    c.eval.best_mode = "auto"  # max, min, or auto (min for loss/mse/mae, max otherwise)
    c.eval.probe = True  # methods with an encoder, labelled data: linear probe, kNN, k-means of embeddings at the end
    c.eval.probe_train_examples = 10000  # the probe fits on at most this many training examples (the split's first)
    c.eval.probe_knn_k = 10  # neighbours of the kNN classifier (cosine distance)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"  # sgd, adam, adamw, rmsprop, adagrad, lion, adafactor or lamb (optax's definitions)
    c.optim.learning_rate = 1e-3  # peak learning rate (the schedule scales it)
    c.optim.momentum = 0.0  # momentum for sgd, rmsprop, adafactor; 0 = none
    c.optim.nesterov = False  # Nesterov momentum for SGD
    c.optim.b1 = 0.9  # first-moment decay of adam, adamw, lamb, lion
    c.optim.b2 = 0.999  # second-moment decay of adam, adamw, lamb (lion's is usually 0.99)
    c.optim.eps = 1e-8  # epsilon of adam, adamw, lamb, rmsprop, adagrad
    c.optim.rmsprop_decay = 0.9  # rmsprop: decay of the squared-gradient average
    c.optim.weight_decay = 0.0  # decoupled for adamw/lion/lamb/adafactor, L2-coupled otherwise; 1-D params excluded
    c.optim.grad_clip_norm = 0.0  # clip gradients to this global norm; 0 = no clipping
    c.optim.grad_clip_value = 0.0  # clip each gradient element to [-v, v] (before the norm clipping); 0 = off
    c.optim.accumulate_steps = 1  # split each batch into k micro-batches and average their gradients (less memory)
    c.optim.policy = ()  # per-parameter rules "REGEX=frozen|lr:MULT|wd:MULT[,...]" (see jtrain/policy.py)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"  # constant, step, multistep, exponential, cosine, warmup_linear, one_cycle, piecewise
    c.schedule.unit = "steps"  # unit of step_size, milestones, boundaries and exponential decay: steps or epochs
    c.schedule.warmup_steps = 0  # linear warmup from 0 to the peak learning rate
    c.schedule.end_factor = 0.0  # final learning rate as a fraction of the peak (cosine, warmup_linear)
    c.schedule.step_size = 30  # step: multiply the learning rate by gamma every step_size units (PyTorch StepLR)
    c.schedule.gamma = 0.1  # decay factor of step, multistep, exponential (exponential: per unit)
    c.schedule.milestones = ()  # multistep: units at which the learning rate is multiplied by gamma
    c.schedule.boundaries = ()  # piecewise: units at which the learning rate changes
    c.schedule.factors = ()  # piecewise: learning rate / optim.learning_rate before, between and after boundaries
    c.schedule.pct_start = 0.3  # one_cycle: fraction of the steps spent rising to the peak
    c.schedule.div_factor = 25.0  # one_cycle: the first learning rate is peak / div_factor
    c.schedule.final_div_factor = 1e4  # one_cycle: the last learning rate is the first / final_div_factor

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500  # save a checkpoint every k steps (and always at the end); 0 = end only
    c.checkpoint.max_to_keep = 3  # newest checkpoints kept on disk
    c.checkpoint.keep_best = 1  # also keep this many best checkpoints by eval.best_metric (when set)
    c.checkpoint.async_save = True  # write checkpoints in the background while training continues

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel mesh axis size; -1 = fill with the remaining devices
    c.mesh.fsdp = 1  # fully-sharded data-parallel axis size; -1 = fill
    c.mesh.tensor = 1  # tensor-parallel axis size; -1 = fill
    c.mesh.rules = MESH_RULES  # logical axis -> mesh axes, "name=axis[,axis]" (see MESH_RULES above)
    c.mesh.replication_threshold_bytes = 1048576  # error if a parameter this big (1 MiB) stays replicated on fsdp/tensor > 1
    c.mesh.report = False  # print the sharding table at train start even when nothing is sharded

    c.init = ml_collections.ConfigDict()  # starting weights: resume own checkpoint > init.pretrained > scratch (jtrain/pretrained.py)
    c.init.pretrained = ""  # weights to start from when the workdir has no checkpoint: jtrain workdir/step dir, .msgpack file or HF dir; "" = scratch
    c.init.format = "auto"  # format of init.pretrained: auto (from what the path holds), orbax, msgpack or hf
    c.init.rename = ()  # "REGEX=REPLACEMENT" rules from checkpoint paths to model paths; first fullmatch wins, \1 = group
    c.init.skip = ()  # regexes (fullmatch) of model or checkpoint paths never loaded, e.g. a new head "head/.*"; each must match a path
    c.init.strict = True  # fail, listing every problem, if a parameter is missing, unused or mismatched; False = log and go on

    c.lock()
    return c


# ---------------------------------------------------------------- loading


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/experiment.py[:ARG]` by calling its `get_config([ARG])`, or a resolved config written as
    JSON (a run's config.json, a sweep's base_config.json)."""
    path, _, arg = spec.partition(":")
    if path.endswith(".json") and not arg:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"config file not found: {path}") from e
        try:
            return config_from_json(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not JSON: {e}") from e
    module = _experiment_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (AttributeError, KeyError, TypeError) as e:
        # A locked ConfigDict rejects unknown keys and wrong types right at the assignment.
        raise ConfigError(f"{path}: {_one_line(e)}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned a {type(config).__name__}, not an ml_collections "
                          f"ConfigDict; start from jtrain.config.default_config() and set fields on it")
    add_method_fields(config)  # an experiment may name a user's method directly
    validate(config)
    return config


def load_space(spec: str) -> dict[str, str] | None:
    """An experiment file's search space for `jtrain sweep`: its `get_space()`, {"KEY": "loguniform(1e-4, 1e-1)"};
    None when it defines none (or the config is JSON)."""
    path, _, _ = spec.partition(":")
    if path.endswith(".json"):
        return None
    module = _experiment_module(path)
    if not hasattr(module, "get_space"):
        return None
    try:
        space = module.get_space()
    except Exception as e:  # a user's function: report where, in one line
        raise ConfigError(f"{path}: get_space() failed: {type(e).__name__}: {_one_line(e)}") from e
    if not isinstance(space, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in space.items()):
        raise ConfigError(f"{path}: get_space() must return {{'KEY': 'loguniform(a, b)', ...}}, got {space!r}")
    return space


def _experiment_module(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("_jtrain_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report where, in one line
        raise ConfigError(f"{path}: failed to load: {type(e).__name__}: {e}") from e
    return module


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a resolved config (e.g. a workdir's config.json) over the defaults."""
    config = default_config()
    tree = json.loads(text)
    for section in ("model", "method"):  # first: a user's model or method declares fields of its own
        if isinstance(tree.get(section), dict) and "name" in tree[section]:
            set_value(config, f"{section}.name", tree[section]["name"])
    _assign_tree(config, tree, prefix="")
    validate(config)
    return config


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


# ---------------------------------------------------------------- overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Applies `SECTION.KEY=VALUE` strings (the part after `--config.`) in order."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"--config.{item}: expected --config.KEY=VALUE")
        set_value(config, key, _parse_value(raw))
    validate(config)


def _model_fields(name: str, builtin: bool = False) -> dict[str, Any]:
    """`model.*` fields a model family declares: every built-in family's, or those of the user's family `name`."""
    from jtrain import models  # the families import flax: only when a config is built

    if builtin:
        return models.builtin_fields()
    if ":" not in name:
        return {}
    try:
        return models.family(name).fields
    except ConfigError:  # not importable here (yet): building the model reports it; see _unknown_key
        return {}


def _unknown_key(config: ml_collections.ConfigDict, key: str, valid: dict[str, Any]) -> ConfigError:
    if key.startswith("model.") and ":" in config.model.name:
        from jtrain import models

        models.family(config.model.name)  # the user model's own fields are unknown when it cannot be imported
    return ConfigError(f"unknown config key {key!r}{_suggest(key, valid)}")


def _known(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every valid dotted key of `config` with its default: the defaults plus its user model's and user
    method's own fields."""
    flat = flatten(default_config())
    flat.update({f"model.{k}": v for k, v in _model_fields(config.model.name).items()})
    flat.update({f"method.{k}": v for k, v in method_fields(config.method.name).items()})
    return flat


def use_model(config: ml_collections.ConfigDict, name: str) -> None:
    """Selects model.name and adds the `model.*` fields its family declares (a user factory's `config_fields`),
    so an experiment file can set them: `use_model(c, "my_models:wide"); c.model.width = 512`."""
    set_value(config, "model.name", name)


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Sets a dotted key, with the default's type; errors name the key and the closest valid one."""
    flat = _known(config)
    if key not in flat:
        raise _unknown_key(config, key, flat)
    expected = flat[key]
    value = _coerce(key, value, expected)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    with node.unlocked():
        node[leaf] = value
        if key == "model.name":  # a user's model may declare fields of its own: they appear with their defaults
            for field, default in _model_fields(value).items():
                if field not in node:
                    node[field] = default
    if key == "method.name":
        add_method_fields(config)


def add_method_fields(config: ml_collections.ConfigDict) -> None:
    """Adds the fields `method.name`'s method declares (`method_fields`) that the config lacks, at their defaults."""
    with config.method.unlocked():
        for field, default in method_fields(config.method.name).items():
            if field not in config.method:
                config.method[field] = default


def method_fields(name: str) -> dict[str, Any]:
    """The fields a "package.module:factory" training method declares, as `method.<field>` defaults: the
    factory's `config` attribute (a dict or ConfigDict). A factory that does not import declares none here;
    building the run reports it (jtrain/methods)."""
    if ":" not in name:
        return {}
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return {}
    fields = getattr(factory, "config", None) or {}
    return dict(fields.to_dict() if isinstance(fields, ml_collections.ConfigDict) else fields)




def _parse_value(raw: str) -> Any:
    # Python literals ("1e-3", "(32, 64)", "True"); anything else stays a string ("adamw").
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _coerce(key: str, value: Any, expected: Any) -> Any:
    want = type(expected)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, (list, tuple)):
        value = tuple(value)
        if expected and not all(isinstance(v, type(expected[0])) for v in value):
            raise ConfigError(f"config key {key!r}: expected a tuple of {type(expected[0]).__name__}, got {value!r}")
        return value
    if want is tuple and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    if want is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. --config.data.augment=0 is still a string field
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r}: expected {want.__name__}, got {value!r} ({type(value).__name__})")
    return value


# ---------------------------------------------------------------- validation


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Every key known, every value of the default's type, values within range."""
    flat, defaults = flatten(config), _known(config)
    for key, value in flat.items():
        if key not in defaults:
            raise _unknown_key(config, key, defaults)
        _coerce(key, value, defaults[key])
    _check_ranges(config)


def _check_ranges(c: ml_collections.ConfigDict) -> None:
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key!r}: {msg}")

    need(c.data.batch_size > 0, "data.batch_size", f"must be > 0, got {c.data.batch_size}")
    need(c.data.eval_batch_size >= 0, "data.eval_batch_size", "must be >= 0")
    need(c.data.in_memory_mb >= 0, "data.in_memory_mb", "must be >= 0 (0 = never decode into memory)")
    choices = {"data.task": ("auto", "classification", "regression"), "data.missing_target": ("error", "drop"),
               "data.prep.impute_numeric": ("mean", "median", "most_frequent", "constant"),
               "data.prep.impute_categorical": ("most_frequent", "constant"), "data.prep.encode": ("onehot", "ordinal"),
               "data.prep.scale": ("standard", "robust", "minmax", "none")}
    for key, allowed in choices.items():
        value = c.data
        for part in key.split(".")[1:]:
            value = value[part]
        need(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    ratios = c.data.split_ratios
    need(len(ratios) in (2, 3) and all(r >= 0 for r in ratios) and ratios[0] > 0 and abs(sum(ratios) - 1) < 1e-6,
         "data.split_ratios", f"must be (train, val) or (train, val, test) fractions >= 0 summing to 1, got {ratios}")
    need(0 <= c.data.label_noise < 1, "data.label_noise", f"must be in [0, 1), got {c.data.label_noise}")
    need(c.data.seq_len_warmup >= 0, "data.seq_len_warmup", f"must be >= 0, got {c.data.seq_len_warmup}")
    need(not c.data.seq_len_warmup or 0 < c.data.seq_len_warmup_start <= c.data.seq_len,
         "data.seq_len_warmup_start", f"must be in [1, data.seq_len={c.data.seq_len}], got {c.data.seq_len_warmup_start}")
    cur = c.data.curriculum
    need(cur.order in ("easy", "hard", "random"), "data.curriculum.order",
         f"must be easy, hard or random, got {cur.order!r}")
    need(cur.pacing in ("linear", "root", "geometric", "step"), "data.curriculum.pacing",
         f"must be linear, root, geometric or step, got {cur.pacing!r}")
    need(0 < cur.start <= 1, "data.curriculum.start", f"must be in (0, 1], got {cur.start}")
    need(cur.steps >= 0, "data.curriculum.steps", f"must be >= 0, got {cur.steps}")
    need(not cur.difficulty or cur.steps > 0, "data.curriculum.steps",
         "must be > 0 with data.curriculum.difficulty: the step at which the pool holds the whole split")
    need(cur.stages >= 1, "data.curriculum.stages", f"must be >= 1, got {cur.stages}")
    cv = c.data.cv
    need(cv.folds == 0 or cv.folds >= 2, "data.cv.folds", f"must be 0 (no cross-validation) or >= 2, got {cv.folds}")
    need(0 <= cv.fold < max(cv.folds, 1), "data.cv.fold", f"must be in [0, data.cv.folds={cv.folds}), got {cv.fold}")
    need(cv.repeats >= 1, "data.cv.repeats", f"must be >= 1, got {cv.repeats}")
    need(0 <= cv.repeat < cv.repeats, "data.cv.repeat", f"must be in [0, data.cv.repeats={cv.repeats}), got {cv.repeat}")
    lo, hi = (tuple(c.data.prep.clip_quantiles) + (1.0,))[:2]
    need(len(c.data.prep.clip_quantiles) == 2 and 0 <= lo < hi <= 1, "data.prep.clip_quantiles",
         f"must be (low, high) with 0 <= low < high <= 1, got {c.data.prep.clip_quantiles}")
    need(len(c.data.image_size) == 2 and min(c.data.image_size) >= 0, "data.image_size",
         f"must be (height, width), (0, 0) = the first image's size, got {c.data.image_size}")
    need(c.data.image_channels in (0, 1, 3), "data.image_channels", f"must be 0 (from the first image), 1 or 3, got {c.data.image_channels}")
    need(c.train.steps >= 0, "train.steps", "must be >= 0")
    need(c.train.epochs >= 0, "train.epochs", "must be >= 0")
    need(c.train.log_every_steps > 0, "train.log_every_steps", "must be > 0")
    k = c.train.steps_per_call
    need(k >= 1, "train.steps_per_call", f"must be >= 1, got {k}")
    need(c.train.scan_unroll >= 1, "train.scan_unroll", f"must be >= 1, got {c.train.scan_unroll}")
    t = c.data.transfer_batches
    need(t >= 0, "data.transfer_batches", f"must be >= 0 (0 = auto), got {t}")
    need(t == 0 or k < 1 or t % k == 0, "data.transfer_batches", f"must be a multiple of train.steps_per_call={k}, got {t}")
    for key, every in (("train.log_every_steps", c.train.log_every_steps), ("eval.every_steps", c.eval.every_steps),
                       ("checkpoint.every_steps", c.checkpoint.every_steps)):
        # Logs, evals and saves happen between dispatches, so their intervals must be whole numbers of them.
        need(k < 1 or every % k == 0, key, f"must be a multiple of train.steps_per_call={k}, got {every}")
    need(c.eval.every_steps >= 0, "eval.every_steps", "must be >= 0")
    need(c.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    need(c.checkpoint.max_to_keep >= 1, "checkpoint.max_to_keep", "must be >= 1")
    need(c.checkpoint.keep_best >= 0, "checkpoint.keep_best", "must be >= 0")
    need(c.train.on_nonfinite in ("halt", "skip"), "train.on_nonfinite", f"must be halt or skip, got {c.train.on_nonfinite!r}")
    need(c.train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
    need(c.eval.best_mode in ("auto", "max", "min"), "eval.best_mode", f"must be auto, max or min, got {c.eval.best_mode!r}")
    need(not c.train.early_stopping_patience or (c.eval.best_metric and c.eval.every_steps),
         "train.early_stopping_patience", "needs eval.best_metric and eval.every_steps > 0")
    need(c.optim.learning_rate >= 0, "optim.learning_rate", "must be >= 0")
    need(c.optim.accumulate_steps >= 1, "optim.accumulate_steps", f"must be >= 1, got {c.optim.accumulate_steps}")
    need(c.eval.top_k >= 0, "eval.top_k", "must be >= 0")
    need(c.loss.l1 >= 0 and c.loss.l2 >= 0, "loss.l1" if c.loss.l1 < 0 else "loss.l2", "must be >= 0")
    need(c.loss.huber_delta > 0, "loss.huber_delta", "must be > 0")
    need(c.loss.name != "dpo", "loss.name", "dpo is a training method: use method.name=dpo (and method.dpo.beta)")
    need(c.method.dpo.beta > 0, "method.dpo.beta", f"must be > 0, got {c.method.dpo.beta}")
    need(c.method.reward.margin >= 0, "method.reward.margin", f"must be >= 0, got {c.method.reward.margin}")
    need(c.method.reward.center >= 0, "method.reward.center", f"must be >= 0, got {c.method.reward.center}")
    need(c.method.autoencoder.latent_dim > 0, "method.autoencoder.latent_dim", "must be > 0")
    need(c.method.autoencoder.loss in ("mse", "bce"), "method.autoencoder.loss",
         f"must be mse or bce, got {c.method.autoencoder.loss!r}")
    need(c.method.vae.latent_dim > 0, "method.vae.latent_dim", "must be > 0")
    need(c.method.vae.loss in ("mse", "bce"), "method.vae.loss", f"must be mse or bce, got {c.method.vae.loss!r}")
    need(c.method.vae.kl_warmup_steps >= 0, "method.vae.kl_warmup_steps", "must be >= 0")
    need(c.method.contrastive.embed_dim > 0, "method.contrastive.embed_dim", "must be > 0")
    need(c.method.contrastive.projection_dim > 0, "method.contrastive.projection_dim", "must be > 0")
    need(c.method.contrastive.temperature > 0, "method.contrastive.temperature",
         f"must be > 0, got {c.method.contrastive.temperature}")
    need(c.env.num_envs >= 1, "env.num_envs", f"must be >= 1, got {c.env.num_envs}")
    need(c.rl.num_steps >= 1, "rl.num_steps", f"must be >= 1, got {c.rl.num_steps}")
    need(0.0 < c.rl.gamma <= 1.0, "rl.gamma", f"must be in (0, 1], got {c.rl.gamma}")
    need(0.0 <= c.rl.gae_lambda <= 1.0, "rl.gae_lambda", f"must be in [0, 1], got {c.rl.gae_lambda}")
    need(c.rl.activation in ("tanh", "relu"), "rl.activation", f"must be tanh or relu, got {c.rl.activation!r}")
    need(c.rl.num_seeds >= 1, "rl.num_seeds", f"must be >= 1, got {c.rl.num_seeds}")
    need(c.rl.eval_max_steps >= 1, "rl.eval_max_steps", f"must be >= 1, got {c.rl.eval_max_steps}")
    need(c.rl.frames >= 0, "rl.frames", f"must be >= 0, got {c.rl.frames}")
    need(c.method.ppo.clip_eps > 0, "method.ppo.clip_eps", f"must be > 0, got {c.method.ppo.clip_eps}")
    need(c.method.ppo.epochs >= 1, "method.ppo.epochs", f"must be >= 1, got {c.method.ppo.epochs}")
    need(c.method.ppo.num_minibatches >= 1, "method.ppo.num_minibatches", f"must be >= 1, got {c.method.ppo.num_minibatches}")
    need(c.eval.probe_train_examples > 0, "eval.probe_train_examples", "must be > 0")
    need(c.eval.probe_knn_k > 0, "eval.probe_knn_k", "must be > 0")
    need(c.data.eval_examples >= 0, "data.eval_examples", "must be >= 0")
    need(c.data.jsonl.train or not (c.data.jsonl.val or c.data.jsonl.test),
         "data.jsonl.val" if c.data.jsonl.val else "data.jsonl.test", "held-out JSONL needs data.jsonl.train too")
    need(0.0 <= c.model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {c.model.dropout}")
    need(c.model.dtype in ("float32", "bfloat16"), "model.dtype", f"must be float32 or bfloat16, got {c.model.dtype!r}")
    need(c.init.format in ("auto", "orbax", "msgpack", "hf"), "init.format",
         f"must be auto, orbax, msgpack or hf, got {c.init.format!r}")
    need(c.mesh.replication_threshold_bytes >= 0, "mesh.replication_threshold_bytes", "must be >= 0")
    for axis in ("data", "fsdp", "tensor"):
        size = c.mesh[axis]
        need(size == -1 or size >= 1, f"mesh.{axis}", f"must be -1 (fill) or >= 1, got {size}")


def _suggest(key: str, valid: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _assign_tree(config: ml_collections.ConfigDict, tree: dict, prefix: str) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _assign_tree(config, v, f"{prefix}{k}.")
        else:
            set_value(config, f"{prefix}{k}", v)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"")
    return text.splitlines()[0] if text else type(e).__name__


__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_json",
    "default_config",
    "flatten",
    "load_experiment",
    "load_space",
    "set_value",
    "to_json",
    "use_model",
    "validate",
]


# ---------------------------------------------------------------- `jtrain config`: every field, explained


def _field_comments() -> dict[str, str]:
    """key -> its one-line comment, read from where fields are defined: this file's `c.SECTION.KEY = ...  # ...`
    lines and the model families' `name=default,  # ...` field lines (model.*)."""
    import glob
    import re

    here = os.path.dirname(os.path.abspath(__file__))
    comments: dict[str, str] = {}
    with open(os.path.join(here, "config.py")) as f:
        for line in f:
            m = re.match(r"\s*c\.([\w.]+)\s*=.*?#\s*(.+)$", line)
            if m:
                comments.setdefault(m.group(1), m.group(2).strip())
    for path in sorted(glob.glob(os.path.join(here, "models", "*.py"))):
        with open(path) as f:
            for line in f:
                m = re.match(r"\s+(\w+)=.*?,\s*#\s*(.+)$", line)
                if m:
                    comments.setdefault(f"model.{m.group(1)}", m.group(2).strip())
    return comments


def describe(config: ml_collections.ConfigDict, key: str = "") -> str:
    """`key = value  (type)  # comment` for every field of `config` under `key` (a section or one field)."""
    flat = flatten(config)
    chosen = {k: v for k, v in flat.items() if not key or k == key or k.startswith(key + ".")}
    if not chosen:
        raise _unknown_key(config, key, _known(config))
    comments = _field_comments()
    width = max(len(f"{k} = {v!r}") for k, v in chosen.items())
    return "\n".join(f"{f'{k} = {v!r}':<{width}}  ({type(v).__name__})" + (f"  # {comments[k]}" if k in comments else "")
                     for k, v in chosen.items())


SECTIONS = ("checkpoint", "data", "env", "eval", "init", "loss", "mesh", "method", "model", "optim", "rl", "schedule",
            "seed", "train")  # named in `jtrain train --help` without building the config (which loads the model families)
