"""The `openr` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from openr.evaluation import commands as evaluation
from openr.server import serve
from openr.training import commands as train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openr",
        description="OpenR serve: an OpenAI-compatible reasoning server. Run `openr COMMAND --help` for a command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(commands)
    train.add_parser(commands)
    evaluation.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    # A training stage forwards its flags to the stage's own parser. argparse's
    # REMAINDER does not capture arguments that start with "-" when they come
    # first, so those arrive here as unknown and are handed on in order.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not hasattr(args, "args"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.args = unknown + args.args
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
