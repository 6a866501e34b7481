"""The `fastyolo` command line: one module per subcommand in fastyolo/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from fastyolo.errors import FastYoloError

# Each module has `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS = (
    "bench",
    "build_engine",
    "detect",
    "eval",
    "export",
    "label",
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
    # The dataset report the commands print already says which coordinate order a crowdAI header
    # mix-up was read in; Python's warning would say it a second time.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*the header says xmin,xmax,ymin,ymax", category=UserWarning)
            return int(args.handler(args) or 0)
    except (FastYoloError, ValueError, OSError) as exc:
        # A bad value or an unusable path given on the command line: one line, exit code 2.
        # FASTYOLO_DEBUG=1 shows the traceback instead.
        if os.environ.get("FASTYOLO_DEBUG"):
            raise
        print(f"fastyolo {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = type(exc).__name__ == "Terminated"  # SIGTERM, see fastyolo.fileio.sigterm_as_interrupt
        print(f"fastyolo {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, FastYoloError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
