"""`jtrain train|eval|prepare ...`: thin wrappers over the public functions.

User mistakes (unknown config key, wrong type, missing file or data) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from jtrain.errors import UserError

USAGE_EXIT = 2


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

    train = sub.add_parser("train", help="train (or resume) a run; --config.SECTION.KEY=VALUE overrides")
    train.add_argument("--config", required=True, help="experiments/NAME.py[:ARG]")
    train.add_argument("--workdir", required=True, help="run directory (resumes if it has a checkpoint)")

    ev = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--split", default="test", help="train, val, test, or a TFDS split such as 'train[:10%%]'")
    ev.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    prep = sub.add_parser("prepare", help="build a dataset's array_record files once")
    prep.add_argument("name", help="dataset name, e.g. digits or fashion_mnist")
    prep.add_argument("--data_dir", default="", help="TFDS data directory (default: data.dir's default)")
    return parser


def run(argv: list[str]) -> int:
    argv, overrides = _split_config_overrides(argv)
    args = _parser().parse_args(argv)
    if overrides and args.command != "train":
        raise UserError(f"--config.{overrides[0]}: config overrides apply to `jtrain train` only")

    # Imported here so `jtrain --help` and flag errors answer without loading JAX.
    import jtrain

    if args.command == "train":
        config = jtrain.load_experiment(args.config)
        jtrain.apply_overrides(config, overrides)
        jtrain.train(config, args.workdir)
    elif args.command == "eval":
        report = jtrain.evaluate(args.workdir, args.split, args.step)
        from jtrain.metrics import scalars
        from jtrain.summary import format_table

        print(format_table({"step": report["step"], "test" if args.split not in ("train", "val") else args.split: report}))
        print(json.dumps({"split": args.split, "step": report["step"], **scalars(report)}))
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
    except KeyboardInterrupt:
        print("jtrain: interrupted", file=sys.stderr)
        sys.exit(130)
