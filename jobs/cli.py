r"""The installed ``diffda`` command: the science's sub-commands plus the SLURM ones.

:data:`COMMAND_MODULES` is :data:`pipeline.cli.COMMAND_MODULES` with ``prepare`` replaced by the
version that takes ``--profile`` and with ``submit``, ``campaign``, ``status`` and ``run-window``
added; the layers go one way (``jobs`` imports ``pipeline``, never the reverse).
"""

from __future__ import annotations

import sys

from pipeline import cli as core

COMMAND_MODULES = [m for m in core.COMMAND_MODULES if m != "pipeline.commands.prepare"] + [
    "jobs.commands.prepare",
    "jobs.commands.submit",
    "jobs.commands.campaign",
    "jobs.commands.status",
    "jobs.commands.window",
]


def build_parser():
    return core.build_parser(COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    return core.main(argv, COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
