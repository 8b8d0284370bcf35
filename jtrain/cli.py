"""`jtrain train|finetune|cv|sweep|eval|predict|score|active|export|prepare ...`: thin wrappers over the public functions.

User mistakes (unknown config key, wrong type, missing file or data) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from jtrain.config import SECTIONS
from jtrain.errors import TrainingError, UserError

USAGE_EXIT = 2  # a user mistake: bad flag, config key, file or data
TRAINING_FAILED_EXIT = 1  # training stopped on its own terms, e.g. a non-finite loss


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UserError(f"{self.prog}: {message}")


def _split_config_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pulls out `--config.KEY=VALUE` (or `--config.KEY VALUE`) so argparse sees only its own flags."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            item = arg[len("--config."):]
            if "=" not in item:
                if i + 1 >= len(argv):
                    raise UserError(f"{arg}: missing value (use {arg}=VALUE)")
                item, i = f"{item}={argv[i + 1]}", i + 1
            overrides.append(item)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jtrain", description="Train, evaluate and prepare data with jtrain.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    overrides_help = ("Any config field can be set on the command line: --config.SECTION.KEY=VALUE (Python literals: "
                      "--config.model.hidden_sizes='(128, 64)'; strings as they are). Sections: "
                      + ", ".join(SECTIONS) + ". `jtrain config [--config F] [SECTION or KEY]` lists every field "
                      "with its default, type and meaning.")
    train = sub.add_parser("train", help="train (or resume) a run; --config.SECTION.KEY=VALUE overrides",
                           epilog=overrides_help)
    train.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    train.add_argument("--workdir", required=True, help="run directory (resumes if it has a checkpoint)")

    ft = sub.add_parser("finetune", help="train starting from pretrained weights (sets init.pretrained); resumes too",
                        epilog=overrides_help)
    ft.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    ft.add_argument("--pretrained", required=True, help="jtrain workdir or step dir, Flax .msgpack file, or HF dir")
    ft.add_argument("--workdir", required=True, help="run directory (resumes if it has a checkpoint)")

    cv = sub.add_parser("cv", help="k-fold cross-validation of the training split: a run per fold, the table of "
                                   "val metrics (mean, std) in WORKDIR/cv.csv; resumes")
    cv.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    cv.add_argument("--workdir", required=True, help="directory of the fold runs (fold-K/), cv.csv and cv.json")
    cv.add_argument("--folds", type=int, required=True, help="K: folds of the training split (>= 2)")
    cv.add_argument("--repeats", type=int, default=1, help="repeat the K folds R times, shuffled anew each time")
    cv.add_argument("--no-stratify", dest="stratify", action="store_false",
                    help="plain KFold for classification too (default: StratifiedKFold)")
    cv.add_argument("--group", default="", metavar="COLUMN",
                    help="a column of your own table whose groups stay in one fold (GroupKFold)")
    cv.add_argument("--refit", action="store_true",
                    help="then train on the whole training split (WORKDIR/refit) and evaluate on test")

    ev = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--split", default="test", help="train, val, test, or a TFDS split such as 'train[:10%%]'")
    ev.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    for command in (train, ft):
        command.add_argument("--allow_changes", action="store_true",
                             help="resume although the config changed more than length, intervals and speed settings")
    for command in (train, ft, ev):  # one run over several processes (see jtrain/distributed.py)
        command.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
        command.add_argument("--num_processes", type=int, default=None, help="processes in the run")
        command.add_argument("--process_id", type=int, default=None, help="this process's index, 0-based")

    cfg = sub.add_parser("config", help="every config field with its default, type and meaning")
    cfg.add_argument("key", nargs="?", default="", help="a section (data, data.prep, optim, ...) or one field")
    cfg.add_argument("--config", default="", help="experiments/NAME.py[:ARG]: its values instead of the defaults")

    prd = sub.add_parser("predict", help="predictions of a run on new rows, images or arrays")
    prd.add_argument("--workdir", required=True)
    prd.add_argument("--input", required=True, help="a CSV / Parquet / JSON table, .npz, an image or a folder of images")
    prd.add_argument("--output", required=True, help="preds.csv, or .jsonl for JSON lines")
    prd.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    al = sub.add_parser("active", help="pool-based active learning: rounds of runs, each querying labels by a "
                                       "strategy; learning curves in WORKDIR/curves.csv and learning_curve.png",
                        epilog=overrides_help)
    al.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    al.add_argument("--workdir", required=True, help="the loop's directory (running again continues it)")
    al.add_argument("--initial", type=int, required=True, help="rows labelled at random before round 0")
    al.add_argument("--query", type=int, required=True, help="rows queried after each round")
    al.add_argument("--rounds", type=int, required=True, help="runs in all (round 0 on the initial rows)")
    al.add_argument("--strategy", default="entropy",
                    help="random, entropy, margin, least_confidence or bald; comma-separated for several")
    al.add_argument("--seeds", type=int, default=1, help="repeat every strategy with seeds seed ... seed+N-1")
    al.add_argument("--warm_start", action="store_true", help="start each round from the previous one's weights")
    al.add_argument("--passes", type=int, default=10, help="bald: Monte Carlo dropout passes")

    sc = sub.add_parser("score", help="per-example loss, margin and entropy of a classifier, most likely "
                                      "mislabelled first")
    sc.add_argument("--workdir", required=True)
    sc.add_argument("--split", default="train", help="train, val or test")
    sc.add_argument("--output", required=True, help="scores.csv (a difficulty table for data.curriculum too)")
    sc.add_argument("--rank", default="loss", help="loss (highest first) or margin (lowest first)")
    sc.add_argument("--passes", type=int, default=0, help="Monte Carlo dropout passes (adds a bald column); 0 = off")
    sc.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    insp = sub.add_parser("inspect", help="show a checkpoint: step, metrics, config, parameter tree")
    insp.add_argument("path", nargs="?", default=None, help="workdir, its checkpoints/ dir, or a step dir")
    insp.add_argument("--diff", default=None, metavar="OTHER", help="compare with another checkpoint")
    # Scale-out: `jtrain inspect --config FILE [--devices N]` prints the sharding plan of an experiment instead.
    insp.add_argument("--config", default=None, help="experiments/NAME.py: show its sharding plan, not a checkpoint")
    insp.add_argument("--devices", type=int, default=None, help="with --config: plan for N fake CPU devices")

    plan = sub.add_parser("plan", help="compile the train step for N devices or a TPU topology: memory, FLOPs, "
                                       "collectives")
    plan.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    plan.add_argument("--devices", type=int, default=None, help="N fake CPU devices (default: this machine's devices)")
    plan.add_argument("--topology", default="", help="a TPU slice such as v5e:16x16 or v4:2x2x2 (needs libtpu)")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")

    smp = sub.add_parser("sample", help="generate text from a language-model run's checkpoint (key-value cache)")
    smp.add_argument("--workdir", required=True)
    smp.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    smp.add_argument("--max_tokens", type=int, default=200, help="tokens to generate")
    smp.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    smp.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens; 0 = all")
    smp.add_argument("--top_p", type=float, default=1.0, help="nucleus: the smallest set with this probability")
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    exp = sub.add_parser("export", help="write a run's checkpoint in Hugging Face's layout (LoRA merged)")
    exp.add_argument("--workdir", required=True)
    exp.add_argument("--format", default="hf", help="hf: config.json + model.safetensors that transformers loads")
    exp.add_argument("--output", required=True, help="directory to write")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    exp.add_argument("--max_shard_size", default="5GB", help="safetensors shards of at most this size (5GB, 500MB)")

    cmp = sub.add_parser("compare", help="finished runs side by side, with each one's difference from the first")
    cmp.add_argument("workdirs", nargs="+", help="two or more workdirs; the first is the baseline")
    cmp.add_argument("--split", default="test", help="which split's metrics (from each summary.json)")

    sw = sub.add_parser("sweep", help="hyperparameter search (Optuna): trials are runs in WORKDIR/trials/NNN")
    sw.add_argument("--config", required=True, help="experiments/NAME.py[:ARG] (its get_space() if no --space)")
    sw.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                    help="e.g. 'optim.learning_rate=loguniform(1e-4,1e-1)', uniform(a,b), int(a,b[,step]), "
                         "logint(a,b), 'model.hidden_sizes=choice((64,),(128,64))'; repeat per key")
    sw.add_argument("--trials", type=int, default=None, help="trials to finish (default: the grid's size, else 20)")
    sw.add_argument("--sampler", default="tpe", help="grid, random, tpe or gp")
    sw.add_argument("--pruner", default="none", help="none, median or hyperband (on the periodic val evaluations)")
    sw.add_argument("--objective", default="val.accuracy", help="SPLIT.METRIC of the run's final evaluation")
    sw.add_argument("--direction", default="auto", help="max, min, or auto (min for losses and errors)")
    sw.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sw.add_argument("--storage", default="", help="SQLAlchemy URL or journal file shared by workers on several "
                                                  "machines (default: WORKDIR/study.journal)")
    sw.add_argument("--heartbeat", type=int, default=30, help="seconds between a worker's heartbeats; a trial "
                                                              "silent for 4x this is retried")
    sw.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    sw.add_argument("--cv", type=int, default=0, metavar="K", help="score each trial by K-fold cross-validation of "
                                                                   "the training split (val mean; test untouched)")
    sw.add_argument("--workdir", required=True, help="the sweep's directory (running again continues the study)")

    prep = sub.add_parser("prepare", help="build a dataset's array_record files once")
    prep.add_argument("name", help="dataset name, e.g. digits or fashion_mnist")
    prep.add_argument("--data_dir", default="", help="TFDS data directory (default: data.dir's default)")
    return parser


def run(argv: list[str]) -> int:
    argv, overrides = _split_config_overrides(argv)
    args = _parser().parse_args(argv)
    if overrides and args.command not in ("train", "finetune", "cv", "active", "sweep", "plan", "config") and not (args.command == "inspect" and args.config):
        raise UserError(f"--config.{overrides[0]}: config overrides apply to `jtrain train`, `cv`, `active`, `sweep`, `plan` and "
                        f"`inspect --config` only")

    # Imported here so `jtrain --help` and flag errors answer without loading JAX.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax / TFDS info and warnings are not for users
    import jtrain

    if args.command in ("train", "finetune", "eval"):
        from jtrain import distributed

        distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    if args.command == "train":
        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        jtrain.train(config, args.workdir, allow_changes=args.allow_changes)
    elif args.command == "finetune":  # = train with init.pretrained set (the path is taken as is, never parsed)
        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        jtrain.config.set_value(config, "init.pretrained", args.pretrained)
        jtrain.train(config, args.workdir, allow_changes=args.allow_changes)
    elif args.command == "cv":
        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        jtrain.cv(config, args.workdir, folds=args.folds, repeats=args.repeats, stratify=args.stratify,
                  group=args.group, refit=args.refit)
    elif args.command == "eval":
        report = jtrain.evaluate(args.workdir, args.split, args.step)
        from jtrain.metrics import scalars
        from jtrain.summary import format_table

        print(format_table({"step": report["step"], args.split: report}, splits=[args.split]))  # labelled as asked
        print(json.dumps({"split": args.split, "step": report["step"], **scalars(report)}))
    elif args.command == "config":
        config = jtrain.load_experiment(args.config) if args.config else jtrain.default_config()
        jtrain.apply_overrides(config, overrides)
        print(jtrain.config.describe(config, args.key))
    elif args.command == "predict":
        from jtrain.predict import write

        frame = jtrain.predict(args.workdir, args.input, args.step)
        write(frame, args.output)
        unseen = frame.attrs.get("unseen") or {}
        print(f"wrote {len(frame)} predictions (checkpoint step {frame.attrs['step']}) to {args.output}"
              + (f"; categories unseen in training: {', '.join(f'{c} {n}' for c, n in unseen.items())}" if unseen else ""))
    elif args.command == "active":
        from jtrain.active import format_curves

        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        rows = jtrain.active(config, args.workdir, args.initial, args.query, args.rounds,
                             [s.strip() for s in args.strategy.split(",") if s.strip()], seeds=args.seeds,
                             warm_start=args.warm_start, passes=args.passes)
        print(format_curves(rows))
        print(f"curves in {args.workdir}/curves.csv and {args.workdir}/learning_curve.png")
    elif args.command == "score":
        if args.passes < 0:
            raise UserError(f"--passes {args.passes}: must be >= 0")
        frame = jtrain.score(args.workdir, args.split, args.step, rank=args.rank, passes=args.passes)
        frame.to_csv(args.output, index=False)
        print(f"wrote {len(frame)} scores of {args.split} (checkpoint step {frame.attrs['step']}) to {args.output}, "
              f"ranked by {args.rank}; first: " + ", ".join(
                  f"row {r.index} labelled {r.label} predicted {r.predicted}" for r in frame.head(3).itertuples()))
    elif args.command == "inspect" and args.path:
        from jtrain import inspect_checkpoint

        print(inspect_checkpoint.diff(args.path, args.diff) if args.diff else inspect_checkpoint.describe(args.path))
    elif args.command in ("inspect", "plan") and args.config:
        from jtrain import plan as plan_lib

        if args.devices is not None and args.devices < 1:
            raise UserError(f"--devices {args.devices}: must be >= 1")
        args.devices = args.devices or 0  # 0 = this machine's devices
        if args.devices:
            plan_lib.use_fake_devices(args.devices)  # before anything asks JAX for its devices
        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        if args.command == "inspect":
            print(plan_lib.plan(config, args.devices, compile=False)["sharding"])
        else:
            result = plan_lib.plan(config, args.devices, args.topology)
            print(json.dumps(result) if args.json else plan_lib.format_plan(result))
    elif args.command == "inspect":
        raise UserError("inspect: give a checkpoint PATH, or --config FILE for a sharding plan")
    elif args.command == "sample":
        print(jtrain.sample(args.workdir, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed, step=args.step))
    elif args.command == "export":
        print(f"wrote {jtrain.export(args.workdir, args.output, args.format, args.step, args.max_shard_size)}")
    elif args.command == "compare":
        from jtrain.compare import format_comparison

        print(format_comparison(jtrain.compare(args.workdirs, args.split)))
    elif args.command == "sweep":
        jtrain.sweep(args.config, args.workdir, space=args.space or None, trials=args.trials, sampler=args.sampler,
                     pruner=args.pruner, objective=args.objective, direction=args.direction, workers=args.workers,
                     storage=args.storage, seed=args.seed, overrides=overrides, heartbeat_s=args.heartbeat,
                     cv=args.cv)
    elif args.command == "prepare":
        from jtrain.data import prepare

        print(prepare(args.name, args.data_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"jtrain: error: {e}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except TrainingError as e:
        print(f"jtrain: error: {e}", file=sys.stderr)
        sys.exit(TRAINING_FAILED_EXIT)
    except Exception as e:
        from jtrain.preemption import PREEMPTED_EXIT_CODE, Preempted

        if isinstance(e, Preempted):
            print(f"jtrain: {e}", file=sys.stderr)
            sys.exit(PREEMPTED_EXIT_CODE)
        raise
    except KeyboardInterrupt:
        print("jtrain: interrupted", file=sys.stderr)
        sys.exit(130)
