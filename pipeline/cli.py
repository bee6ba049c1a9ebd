r"""The ``diffda`` command. Library code raises; only this module (and the command modules) print.

Each sub-command lives in its own module with ``register(subparsers)``; the module list below is
the science's command surface. The installed ``diffda`` command is :func:`jobs.cli.main`, which
adds the SLURM commands (submit, campaign, status, prepare --profile) from ``jobs/``; this module
knows nothing of them. A ``ConfigError``/``InputError`` becomes a one-paragraph message and exit
status 2, before any work.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import DiffdaError

COMMAND_MODULES = [
    "pipeline.commands.run",
    "pipeline.commands.make_data",
    "pipeline.commands.bench",
    "pipeline.commands.train",
    "pipeline.commands.prepare",
    "pipeline.commands.smooth",
    "pipeline.commands.model_error",
    "pipeline.commands.static_samples",
]


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffda",
        description="Particle-filter data assimilation with diffusion emulators.",
    )
    parser.add_argument("--version", action="version", version=f"diffda {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules or COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None, modules: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DiffdaError as err:
        print(f"diffda {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffda {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
