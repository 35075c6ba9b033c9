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
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
