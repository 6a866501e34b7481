"""The `fastyolo` command line: one module per subcommand in fastyolo/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

from fastyolo.errors import FastYoloError

# Each module has `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS = (
    "bench",
    "build_engine",
    "detect",
    "eval",
    "export",
    "quantize",
    "train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastyolo", description="Fast YOLO detection of cars, trucks and pedestrians in driving video."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"fastyolo.commands.{name}")
        module.add_parser(subparsers).set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FastYoloError as exc:
        print(f"fastyolo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastyolo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
