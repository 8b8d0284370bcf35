"""`jtrain sweep` / `jtrain.sweep()`: hyperparameter search with Optuna as the engine.

    space "KEY=loguniform(a,b)" ...  -> Dimensions, each checked against the config before any trial
    study (journal file in the workdir, or --storage URL)   -> samplers and pruners are Optuna's
    each trial: the config + its params as overrides -> jtrain.train(config, W/trials/NNN, on_eval=report/prune)
    end: trials.csv, best.json (a runnable `jtrain train` command), the table, Optuna's matplotlib plots

Workers (K processes here, or one per machine under a launcher) share the study through its storage; each
records a heartbeat while it runs a trial, and a trial whose worker went silent is failed and retried with
the same params in the same trial directory, so it resumes from its last checkpoint. Running the command
again on the workdir continues the study: finished trials are kept, a killed one is retried.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import ml_collections

from jtrain import config as config_lib
from jtrain.early_stopping import resolve_mode
from jtrain.errors import ConfigError, TrainingError, UserError

SAMPLERS = ("grid", "random", "tpe", "gp")
PRUNERS = ("none", "median", "hyperband")
KINDS = ("loguniform", "uniform", "int", "logint", "choice")
SPLITS = ("val", "test")
JOURNAL_FILE = "study.journal"
SETTINGS_FILE = "sweep.json"
BASE_CONFIG_FILE = "base_config.json"
DEFAULT_TRIALS = 20
HEARTBEAT_S = 30  # a running trial's worker writes a heartbeat this often; 4x this without one = lost
_HEARTBEAT_ATTR = "jtrain:heartbeat"
_SURPLUS_ATTR = "jtrain:surplus"


# (config, trial workdir, on_eval) -> the run's summary {"step", split: {metric: value}, ["stopped"]}. The default
# trains one run; `jtrain sweep --cv K` will plug k-fold training in here.
ObjectiveFn = Callable[[ml_collections.ConfigDict, str, Callable[[int, dict], bool]], dict]


# ---------------------------------------------------------------- the search space


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched config key: `kind` in KINDS, bounds (low, high, step) or the choices."""

    key: str
    kind: str
    text: str  # as the user wrote it, for messages and sweep.json
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    choices: tuple = ()

    @property
    def labels(self) -> tuple:
        """The choices as Optuna stores them: scalars as they are, anything else (tuples, None) by its repr."""
        if all(isinstance(c, (bool, int, float, str)) for c in self.choices):
            return self.choices
        return tuple(repr(c) for c in self.choices)

    def suggest(self, trial) -> Any:
        """The trial's value for this key, in the config's terms."""
        if self.kind == "choice":
            label = trial.suggest_categorical(self.key, list(self.labels))
            return self.choices[list(self.labels).index(label)]
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=self.step, log=self.kind == "logint")
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def value(self, param: Any) -> Any:
        """An Optuna param of this dimension (e.g. from a trial's `params`) as the config value."""
        if self.kind == "choice" and param in self.labels:
            return self.choices[list(self.labels).index(param)]
        return param


def parse_space(space: dict[str, str] | list[str]) -> list[Dimension]:
    """`{"KEY": "loguniform(1e-4, 1e-1)"}` or ["KEY=loguniform(1e-4,1e-1)", ...] -> Dimensions (syntax only;
    `check_space` checks them against a config). Parsed with `ast`, never evaluated."""
    items = list(space.items()) if isinstance(space, dict) else [_split_item(item) for item in space]
    dims, seen = [], set()
    for key, text in items:
        if key in seen:
            raise ConfigError(f"--space {key}: given twice")
        seen.add(key)
        dims.append(_parse_dimension(key, text))
    return dims


def _split_item(item: str) -> tuple[str, str]:
    key, eq, text = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--space {item!r}: expected KEY=DISTRIBUTION, e.g. optim.learning_rate=loguniform(1e-4,1e-1)")
    return key.strip(), text.strip()


def _parse_dimension(key: str, text: str) -> Dimension:
    where = f"--space {key}={text}"
    forms = "loguniform(a,b), uniform(a,b), int(a,b[,step]), logint(a,b) or choice(v1,v2,...)"
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{where}: not a distribution; use {forms}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in KINDS) or node.keywords:
        raise ConfigError(f"{where}: not a distribution; use {forms}")
    kind = node.func.id
    try:
        args = [ast.literal_eval(a) for a in node.args]
    except ValueError:
        raise ConfigError(f"{where}: arguments must be Python literals (numbers, strings, tuples)") from None
    if kind == "choice":
        if not args:
            raise ConfigError(f"{where}: choice() needs at least one value")
        if len({repr(a) for a in args}) != len(args):
            raise ConfigError(f"{where}: a value is repeated")
        return Dimension(key, kind, text, choices=tuple(args))
    want = "(low, high)" if kind != "int" else "(low, high) or (low, high, step)"
    if len(args) not in ((2, 3) if kind == "int" else (2,)):
        raise ConfigError(f"{where}: {kind} takes {want}")
    numbers = (int,) if kind in ("int", "logint") else (int, float)
    if not all(isinstance(a, numbers) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}: {kind} bounds must be {'integers' if numbers == (int,) else 'numbers'}")
    low, high, step = args[0], args[1], (args[2] if len(args) == 3 else 1)
    if not low < high:
        raise ConfigError(f"{where}: reversed or empty bounds: low {low} must be below high {high}")
    if kind in ("loguniform", "logint") and low <= 0:
        raise ConfigError(f"{where}: {kind} needs low > 0, got {low}")
    if step < 1:
        raise ConfigError(f"{where}: step must be >= 1, got {step}")
    return Dimension(key, kind, text, low=float(low), high=float(high), step=int(step))


def check_space(config: ml_collections.ConfigDict, dims: list[Dimension]) -> None:
    """Each key is a config key and every value the dimension can take (each choice, both bounds) is one the
    config accepts: a config with it applied validates."""
    for dim in dims:
        values = dim.choices if dim.kind == "choice" else (_bound(dim, dim.low), _bound(dim, dim.high))
        for value in values:
            trial_config = config.copy_and_resolve_references()
            try:
                config_lib.set_value(trial_config, dim.key, value)
                config_lib.validate(trial_config)
            except ConfigError as e:
                raise ConfigError(f"--space {dim.key}={dim.text}: {e}") from None
            if dim.kind != "choice" and not isinstance(config_lib.flatten(config)[dim.key], (int, float)):
                raise ConfigError(f"--space {dim.key}={dim.text}: {dim.key} is not a number; use choice(...)")
            if isinstance(config_lib.flatten(config)[dim.key], bool) and dim.kind != "choice":
                raise ConfigError(f"--space {dim.key}={dim.text}: {dim.key} is a bool; use choice(True, False)")


def _bound(dim: Dimension, x: float) -> Any:
    return int(x) if dim.kind in ("int", "logint") else x


def apply_params(config: ml_collections.ConfigDict, dims: list[Dimension], params: dict) -> list[str]:
    """Sets a trial's params (Optuna's) on `config` in place; returns them as `KEY=VALUE` overrides."""
    overrides = []
    for dim in dims:
        if dim.key in params:
            value = dim.value(params[dim.key])
            config_lib.set_value(config, dim.key, value)
            overrides.append(f"{dim.key}={value!r}")
    config_lib.validate(config)
    return overrides


# ---------------------------------------------------------------- the objective


def parse_objective(text: str) -> tuple[str, str]:
    split, dot, metric = text.partition(".")
    if not dot or split not in SPLITS or not metric:
        raise ConfigError(f"--objective {text!r}: expected SPLIT.METRIC with SPLIT one of {', '.join(SPLITS)}, "
                          f"e.g. val.accuracy")
    return split, metric


def check_objective(config: ml_collections.ConfigDict, objective: str, pruner: str) -> tuple[str, str]:
    """The split is one the config evaluates and the metric one its task reports (known for supervised runs;
    another method's metrics are checked at the first evaluation)."""
    split, metric = parse_objective(objective)
    if config.data.splits[split] == "none":
        raise ConfigError(f"--objective {objective}: the config evaluates no {split} split (data.splits.{split}=none)")
    known = reported_metrics(config)
    if known is not None and metric not in known:
        raise ConfigError(f"--objective {objective}: the run reports no {split} metric {metric!r}; it has "
                          f"{', '.join(known)}")
    if pruner != "none":
        if split != "val":
            raise ConfigError(f"--pruner {pruner}: pruning compares the periodic val evaluations; use a val objective")
        if not config.eval.every_steps:
            raise ConfigError(f"--pruner {pruner}: needs periodic evaluations (config key 'eval.every_steps' > 0)")
    return split, metric


def reported_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
    """What the run's method reports (jtrain/methods); None when the method does not say."""
    from jtrain import methods

    return methods.build(config).metrics or None


# ---------------------------------------------------------------- settings shared by every worker


@dataclasses.dataclass
class Settings:
    """What a worker needs, written to W/sweep.json (worker processes and later runs read it back)."""

    space: dict[str, str]
    trials: int
    sampler: str
    pruner: str
    objective: str
    direction: str  # maximize | minimize
    seed: int
    storage: str  # "" = the journal file in the workdir
    heartbeat_s: int
    config_spec: str = ""  # the experiment file, when the sweep started from one (for best.json's command)
    overrides: tuple[str, ...] = ()  # --config.KEY=VALUE applied to every trial
    cv: int = 0  # > 0: each trial is a K-fold cross-validation of the training split; the objective its val mean

    def dims(self) -> list[Dimension]:
        return parse_space(self.space)


def _check_settings(s: Settings, workers: int) -> None:
    if s.trials < 1:
        raise ConfigError(f"--trials {s.trials}: must be >= 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if s.heartbeat_s < 1:
        raise ConfigError(f"--heartbeat {s.heartbeat_s}: must be >= 1 second")
    if not s.space:
        raise ConfigError("sweep: no search space; give --space KEY=DISTRIBUTION or define get_space() in the experiment")
    dims = s.dims()
    if s.sampler == "grid" and any(d.kind != "choice" for d in dims):
        bad = next(d for d in dims if d.kind != "choice")
        raise ConfigError(f"--sampler grid: every dimension must be choice(...), not {bad.key}={bad.text}")
    if s.sampler == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("--sampler gp: Optuna's GPSampler needs PyTorch (pip install torch); or use tpe")


def _direction(direction: str, metric: str) -> str:
    mode = {"max": "max", "maximize": "max", "min": "min", "minimize": "min", "auto": "auto"}.get(direction)
    if mode is None:
        raise ConfigError(f"--direction {direction}: max, min or auto")
    return "maximize" if resolve_mode(metric, mode) == "max" else "minimize"


# ---------------------------------------------------------------- the public function


def sweep(config: str | ml_collections.ConfigDict, workdir: str, space: dict[str, str] | list[str] | None = None,
          trials: int | None = None, sampler: str = "tpe", pruner: str = "none", objective: str = "val.accuracy",
          direction: str = "auto", workers: int = 1, storage: str = "", seed: int = 0,
          overrides: list[str] | tuple[str, ...] = (), heartbeat_s: int = HEARTBEAT_S,
          objective_fn: ObjectiveFn | None = None, cv: int = 0):
    """Searches `space` over `trials` runs of `config` (an experiment spec "experiments/X.py[:ARG]", a
    config.json, or a ConfigDict) and returns the trials as a pandas DataFrame sorted by objective.

    Each trial trains in `workdir/trials/NNN` (an ordinary jtrain run); the study lives in `storage` (default:
    `workdir/study.journal`), so calling again on the workdir continues it. `overrides` ("KEY=VALUE") apply to
    every trial. `cv` = K makes each trial a K-fold cross-validation of the training split (jtrain/cv.py, in
    `trial_workdir/fold-k`) whose mean val metric is the objective; the test split stays untouched (nested).
    `objective_fn(config, trial_workdir, on_eval) -> summary` replaces training one run (in this process: only
    with workers=1)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler}: one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner}: one of {', '.join(PRUNERS)}")
    base, spec = _base_config(config, overrides)
    if space is None:
        space = config_lib.load_space(spec) if spec else None
    dims = parse_space(space or {})
    space = {d.key: d.text for d in dims}
    split, metric = check_objective(base, objective, pruner)
    if cv and (cv < 2 or split != "val" or pruner != "none"):
        raise ConfigError(f"--cv {cv}: needs >= 2 folds, a val objective (the held-out folds are val) and "
                          f"--pruner none (a trial's score is known after its last fold)")
    n = trials if trials is not None else (_grid_size(dims) if sampler == "grid" else DEFAULT_TRIALS)
    settings = Settings(space=space, trials=n, sampler=sampler, pruner=pruner, objective=objective,
                        direction=_direction(direction, metric), seed=seed, storage=storage,
                        heartbeat_s=heartbeat_s, config_spec=spec, overrides=tuple(overrides), cv=cv)
    _check_settings(settings, workers)
    check_space(base, dims)
    if sampler == "grid" and settings.trials > _grid_size(dims):
        print(f"sweep: the grid has {_grid_size(dims)} points; running {_grid_size(dims)} trials, not {settings.trials}")
        settings.trials = _grid_size(dims)
    if objective_fn is not None and workers > 1:
        raise UserError("sweep: objective_fn runs in this process; use workers=1 with it")

    workdir = os.path.abspath(workdir)
    _prepare_workdir(workdir, base, settings)
    study = _study(workdir, settings)  # created here, before any worker, so that they only load it
    if workers == 1:
        _work(study, workdir, settings, base, worker=0, objective_fn=objective_fn)
    else:
        _run_workers(workdir, settings, workers, study)
    return write_outputs(study, workdir, settings)


def _base_config(config, overrides) -> tuple[ml_collections.ConfigDict, str]:
    if isinstance(config, str):
        base, spec = config_lib.load_experiment(config), config
    elif isinstance(config, ml_collections.ConfigDict):
        base, spec = config.copy_and_resolve_references(), ""
    else:
        raise UserError(f"sweep: config must be an experiment path or a ConfigDict, got {type(config).__name__}")
    if str(base.data.name).startswith("python:"):
        raise UserError("sweep: data given in Python cannot be rebuilt by each trial; name it in data.name")
    config_lib.apply_overrides(base, list(overrides))
    return base, spec


def _grid_size(dims: list[Dimension]) -> int:
    return math.prod(len(d.choices) for d in dims) if all(d.kind == "choice" for d in dims) else 0


def _prepare_workdir(workdir: str, base: ml_collections.ConfigDict, settings: Settings) -> None:
    """Writes sweep.json and base_config.json; a workdir holding another sweep (space, objective) is refused."""
    try:
        os.makedirs(os.path.join(workdir, "trials"), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create workdir {workdir}: {e.strerror or e}") from e
    path = os.path.join(workdir, SETTINGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        for field in ("space", "objective", "direction", "cv"):
            if old.get(field, getattr(Settings, field, None)) != dataclasses.asdict(settings)[field]:
                raise UserError(f"{path}: this workdir holds a sweep with another {field} ({old.get(field)}); "
                                f"use a new --workdir")
        with open(os.path.join(workdir, BASE_CONFIG_FILE)) as f:
            if json.load(f) != json.loads(config_lib.to_json(base)):
                raise UserError(f"{workdir}: this workdir's sweep trains another base config (config file or "
                                f"--config overrides changed); use a new --workdir")
    _write_atomic(path, json.dumps(dataclasses.asdict(settings), indent=2))
    _write_atomic(os.path.join(workdir, BASE_CONFIG_FILE), config_lib.to_json(base))


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- storage and study


def _study(workdir: str, settings: Settings):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = _storage(workdir, settings)
    try:
        return optuna.create_study(storage=storage, study_name=_study_name(workdir), direction=settings.direction,
                                   load_if_exists=True)
    except ValueError as e:  # e.g. a study of that name with the other direction
        raise UserError(f"sweep: {e}") from e


def _study_name(workdir: str) -> str:
    return f"jtrain:{workdir}"  # one storage (a database) may hold the sweeps of several workdirs


def _storage(workdir: str, settings: Settings):
    """A journal file (default: in the workdir) or an SQLAlchemy URL; either with heartbeats and retries."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)
    interval, grace = settings.heartbeat_s, 4 * settings.heartbeat_s
    url = settings.storage
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                                              heartbeat_stale_trial_callback=retry)
        except Exception as e:  # a driver missing, a server unreachable: one line
            raise UserError(f"--storage {url}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    path = url or os.path.join(workdir, JOURNAL_FILE)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UserError(f"--storage {path}: its directory does not exist")
    from optuna.storages.journal import JournalFileBackend

    return _heartbeat_journal()(JournalFileBackend(path), interval, grace, retry)


def _heartbeat_journal():
    """Optuna's JournalStorage with Optuna's heartbeat protocol (BaseHeartbeat), which Optuna itself gives only
    its RDBStorage: the heartbeat is a trial system attribute (wall-clock time), so `study.optimize` runs its
    heartbeat thread and fails stale trials, and the retry callback re-queues them, with a journal file too."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend, interval: int, grace: int, callback) -> None:
            super().__init__(backend)
            self._interval, self._grace, self._callback = interval, grace, callback

        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(UpdateFinishedTrialError):  # failed as stale meanwhile: nothing to record
                self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                # A worker lost between starting a trial and its first heartbeat: its start time counts.
                last = t.system_attrs.get(_HEARTBEAT_ATTR) or (t.datetime_start or datetime.datetime.now()).timestamp()
                if now - last > self._grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._interval

        def get_heartbeat_stale_trial_callback(self):
            return self._callback

    return HeartbeatJournalStorage


def _sampler(settings: Settings, dims: list[Dimension], worker: int, started: int):
    import numpy as np
    import optuna

    # Workers, and later runs on the same study, draw from their own streams, not the same params again.
    seed = int(np.random.SeedSequence([settings.seed, worker, started]).generate_state(1)[0])
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: list(d.labels) for d in dims}, seed=seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _pruner(settings: Settings, config: ml_collections.ConfigDict):
    import optuna

    if settings.pruner == "median":
        # Optuna's default waits for 5 finished trials; small sweeps start comparing sooner.
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, settings.trials // 4)))
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, config.eval.every_steps))
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------- one worker


class _Surplus(Exception):
    """A trial started while others already filled the study's N trials (two workers asked at once)."""


def _work(study, workdir: str, settings: Settings, base: ml_collections.ConfigDict, worker: int,
          objective_fn: ObjectiveFn | None = None) -> None:
    """Runs trials until the study has `settings.trials` finished ones. While the last ones run elsewhere it
    waits, taking over any whose worker goes silent (Optuna fails it as stale; the retry is queued)."""
    import optuna
    from optuna.trial import TrialState

    dims = settings.dims()
    study.sampler = _sampler(settings, dims, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = _pruner(settings, base)
    objective = _objective(study, workdir, settings, base, dims,
                           objective_fn or (_cross_validated(settings.cv) if settings.cv else _train_one))
    said_waiting = False
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        count = lambda *states: sum(t.state in states for t in trials)
        if count(TrialState.COMPLETE, TrialState.PRUNED) >= settings.trials:
            return
        if count(TrialState.WAITING) == 0 and count(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) >= settings.trials:
            if not said_waiting:
                running = [t.number for t in trials if t.state == TrialState.RUNNING]
                print(f"sweep: waiting for trial(s) {', '.join(map(str, running))} running elsewhere (a worker "
                      f"silent for {4 * settings.heartbeat_s} s loses its trial to this one)", flush=True)
                said_waiting = True
            time.sleep(settings.heartbeat_s)
            continue
        said_waiting = False
        try:
            study.optimize(objective, n_trials=1, gc_after_trial=True)
        except _Surplus:
            return


def _objective(study, workdir: str, settings: Settings, base: ml_collections.ConfigDict, dims: list[Dimension],
               objective_fn: ObjectiveFn):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    split, metric = parse_objective(settings.objective)
    pruning = settings.pruner != "none"

    def objective(trial: optuna.Trial) -> float:
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        me = frozen[trial.number]
        retry_of = me.system_attrs.get("failed_trial")
        if retry_of is None:
            before = [t for t in frozen.values() if t.number < trial.number and t.state != TrialState.FAIL]
            if len(before) >= settings.trials:
                trial.set_user_attr(_SURPLUS_ATTR, True)
                raise _Surplus(trial.number)
        config = base.copy_and_resolve_references()
        params = {d.key: d.suggest(trial) for d in dims}
        # Samplers of categorical spaces draw a point again; training is deterministic, so its result stands.
        twin = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.number != trial.number and t.params == trial.params), None)
        if twin is not None:
            trial.set_user_attr("same_as", twin.number)
            trial.set_user_attr("workdir", twin.user_attrs.get("workdir"))
            trial.set_user_attr("overrides", twin.user_attrs.get("overrides", []))
            trial.set_user_attr("steps", 0)
            trial.set_user_attr("wall_s", 0.0)
            print(f"sweep: trial {trial.number} repeats trial {twin.number}'s params: its {settings.objective} = "
                  f"{twin.value:.6g}, not trained again", flush=True)
            return twin.value
        overrides = apply_params(config, dims, {d.key: trial.params[d.key] for d in dims})
        # A retry keeps its first attempt's directory (the user attribute is copied), so it resumes there.
        rel = me.user_attrs.get("workdir") or os.path.join("trials", f"{trial.number:03d}")
        trial.set_user_attr("workdir", rel)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        print(f"sweep: trial {trial.number}{f' (retry of {retry_of})' if retry_of is not None else ''}: {shown} -> "
              f"{rel}", flush=True)
        reported = set(me.intermediate_values)

        def on_eval(step: int, metrics: dict) -> bool:
            if split not in metrics:
                return False
            if metric not in metrics[split]:
                raise ConfigError(f"--objective {settings.objective}: the run reports no {split} metric {metric!r}; "
                                  f"it has {', '.join(metrics[split])}")
            if step not in reported:
                trial.report(float(metrics[split][metric]), step)
                reported.add(step)
            return pruning and trial.should_prune()

        began = time.perf_counter()
        try:
            summary = objective_fn(config, os.path.join(workdir, rel), on_eval)
        except TrainingError as e:  # e.g. a non-finite loss: the params are bad, not the sweep
            trial.set_user_attr("error", str(e))
            trial.set_user_attr("wall_s", time.perf_counter() - began)
            print(f"sweep: trial {trial.number} stopped: {e}", flush=True)
            raise optuna.TrialPruned(str(e)) from None
        except BaseException as e:
            from jtrain.preemption import Preempted

            if isinstance(e, Preempted):  # saved its checkpoint: the next run of the sweep resumes it
                RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, study.get_trials()[trial.number])
            raise
        trial.set_user_attr("wall_s", time.perf_counter() - began)
        trial.set_user_attr("steps", int(summary.get("step", 0)))
        if summary.get("stopped") == "on_eval":
            print(f"sweep: trial {trial.number} pruned at step {summary.get('step')}", flush=True)
            raise optuna.TrialPruned(f"at step {summary.get('step')}")
        if metric not in summary.get(split, {}):
            raise ConfigError(f"--objective {settings.objective}: the run reports no {split} metric {metric!r}; it "
                              f"has {', '.join(k for k, v in summary.get(split, {}).items() if isinstance(v, float)) or 'none'}")
        value = float(summary[split][metric])
        if not math.isfinite(value):
            trial.set_user_attr("error", f"{settings.objective} is {value}")
            raise optuna.TrialPruned(f"{settings.objective} is {value}")
        if summary["step"] not in reported:
            trial.report(value, int(summary["step"]))
        print(f"sweep: trial {trial.number}: {settings.objective} = {value:.6g}", flush=True)
        return value

    return objective


def _cross_validated(folds: int) -> ObjectiveFn:
    """A trial as K-fold cross-validation: its summary's val is the folds' mean (the test split untouched)."""

    def run(config: ml_collections.ConfigDict, workdir: str, on_eval) -> dict:
        del on_eval  # no pruning inside a cross-validation
        from jtrain.cv import cv

        result = cv(config, workdir, folds=folds)
        steps = [json.load(open(os.path.join(row["workdir"], "summary.json"))).get("step", 0) for row in result["rows"]]
        return {"step": int(sum(steps)), "val": result["mean"]}

    return run


def _train_one(config: ml_collections.ConfigDict, workdir: str, on_eval) -> dict:
    from jtrain.train import train

    return train(config, workdir, on_eval=on_eval)


# ---------------------------------------------------------------- worker processes


def _run_workers(workdir: str, settings: Settings, workers: int, study) -> None:
    """K processes on this machine share the study's storage; each runs `_work` until the study is done."""
    env = {**os.environ, "JTRAIN_NO_PROGRESS": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if (os.cpu_count() or 1) < 2 * workers:  # XLA's CPU thread pool per process would oversubscribe the cores
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    code = "import sys; from jtrain.sweep import worker_main; worker_main(sys.argv[1], int(sys.argv[2]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, workdir, str(i)], env=env) for i in range(workers)]
    codes = []
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()  # each saves its trial's checkpoint (exit 75); the next run retries them
        for p in procs:
            p.wait()
        raise
    from optuna.trial import TrialState

    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    lost = [f"worker {i} exit code {c}" for i, c in enumerate(codes) if c != 0]
    if finished < settings.trials:
        usage = any(c == 2 for c in codes)
        raise (UserError if usage else TrainingError)(
            f"sweep: {finished} of {settings.trials} trials finished ({'; '.join(lost)}); run the command again to "
            f"continue")
    if lost:
        print(f"sweep: {'; '.join(lost)}; the study finished without them (their trials were retried)")


def worker_main(workdir: str, index: int) -> None:
    """A worker process: the settings and base config from the workdir, then `_work`."""
    try:
        with open(os.path.join(workdir, SETTINGS_FILE)) as f:
            settings = Settings(**json.load(f))
        settings.overrides = tuple(settings.overrides)
        base = config_lib.load_experiment(os.path.join(workdir, BASE_CONFIG_FILE))
        _work(_study(workdir, settings), workdir, settings, base, worker=index)
    except UserError as e:
        print(f"jtrain: error: {e}", file=sys.stderr)
        sys.exit(2)  # the CLI's code for a user mistake


# ---------------------------------------------------------------- outputs


def trials_frame(study, settings: Settings):
    """One row per trial (surplus ones aside): number, state, objective, params, steps, wall time, workdir."""
    import pandas as pd

    dims = settings.dims()
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(_SURPLUS_ATTR):
            continue
        row = {"trial": t.number, "state": t.state.name, settings.objective: t.value if t.values else None}
        for d in dims:
            value = d.value(t.params[d.key]) if d.key in t.params else None
            row[d.key] = repr(value) if isinstance(value, (tuple, list)) else value
        row.update(steps=t.user_attrs.get("steps"), wall_s=t.user_attrs.get("wall_s"),
                   workdir=t.user_attrs.get("workdir"), retry_of=t.system_attrs.get("failed_trial"),
                   error=t.user_attrs.get("error"), worker=t.user_attrs.get("worker"),
                   same_as=t.user_attrs.get("same_as"))
        rows.append(row)
    columns = ["trial", "state", settings.objective, *(d.key for d in dims), "steps", "wall_s", "workdir",
               "retry_of", "error", "worker", "same_as"]
    return pd.DataFrame(rows, columns=columns)


def write_outputs(study, workdir: str, settings: Settings):
    """trials.csv, best.json, plots/, and the table printed (sorted by objective); returns the sorted frame."""
    frame = trials_frame(study, settings)
    frame.to_csv(os.path.join(workdir, "trials.csv"), index=False)
    ranked = frame.sort_values(settings.objective, ascending=settings.direction == "minimize", na_position="last",
                               kind="stable").reset_index(drop=True)
    print(format_table(ranked, settings))
    best = _best(study, workdir, settings)
    if best:
        print(f"best: trial {best['trial']}, {settings.objective} = {best['value']:.6g}\n  {best['command']}")
    else:
        print("best: no trial completed")
    for note in _plots(study, os.path.join(workdir, "plots")):
        print(f"plots: {note}")
    return ranked


def _best(study, workdir: str, settings: Settings) -> dict | None:
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    t = study.best_trial
    dims = settings.dims()
    params = {d.key: d.value(t.params[d.key]) for d in dims}
    overrides = [*settings.overrides, *t.user_attrs.get("overrides", [])]
    config = settings.config_spec or os.path.join(workdir, BASE_CONFIG_FILE)
    if not settings.config_spec:  # the base config file holds the sweep's own overrides already
        overrides = list(t.user_attrs.get("overrides", []))
    command = shlex.join(["jtrain", "train", "--config", config, *(f"--config.{o}" for o in overrides),
                          "--workdir", os.path.join(workdir, "best")])
    best = {"trial": t.number, "value": t.value, "objective": settings.objective, "direction": settings.direction,
            "params": {k: (repr(v) if isinstance(v, tuple) else v) for k, v in params.items()},
            "overrides": overrides, "workdir": os.path.join(workdir, t.user_attrs.get("workdir", "")),
            "command": command}
    _write_atomic(os.path.join(workdir, "best.json"), json.dumps(best, indent=2))
    return best


def format_table(frame, settings: Settings) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    columns = ["trial", "state", settings.objective, *settings.space, "steps", "wall_s"]
    rows = [[cell(r[c]) for c in columns] for r in frame.to_dict("records")]
    widths = [max(len(x) for x in [c, *(row[i] for row in rows)]) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(x.rjust(w) if i != 1 else x.ljust(w) for i, (x, w) in enumerate(zip(cells, widths)))
    head = f"sweep: {len(frame)} trials, sorted by {settings.objective} ({settings.direction})"
    return "\n".join([head, line(columns), line(["-" * w for w in widths]), *map(line, rows)])


def _plots(study, plot_dir: str) -> list[str]:
    """Optuna's matplotlib plots; each one the study cannot draw yet is skipped with a note."""
    from jtrain import plots as _  # noqa: F401  (selects matplotlib's Agg backend)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    os.makedirs(plot_dir, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    notes = []
    drawn = {"history.png": vis.plot_optimization_history, "parallel_coordinate.png": vis.plot_parallel_coordinate,
             "param_importances.png": vis.plot_param_importances, "intermediate_values.png": vis.plot_intermediate_values}
    for name, draw in drawn.items():
        if name == "param_importances.png" and len(complete) < 2:
            notes.append(f"{name} skipped: needs 2 completed trials")
            continue
        if name == "intermediate_values.png" and not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            notes.append(f"{name} skipped: no intermediate values (eval.every_steps = 0)")
            continue
        if not complete:
            notes.append(f"{name} skipped: no completed trial")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances of params that never varied
            notes.append(f"{name} skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.savefig(os.path.join(plot_dir, name), dpi=100, bbox_inches="tight")
        plt.close(figure)
    return notes
