"""Input preparation as a job: twin data (``diffda make-data``) or a reference store (``diffda prepare``).

    Prepare.make_data("lorenz96", "/project/data/l96", {"cycles": 2000})
    Prepare.prepare(["--data", "/project/era5", "--grid", "64x32", "--observe"])

Both redo nothing that is complete; a requeued job reruns the command (:class:`jobs.command.CommandJob`).
"""

from __future__ import annotations

from pathlib import Path

from .command import CommandJob


class Prepare(CommandJob):
    @classmethod
    def make_data(cls, preset: str, out: str | Path, params: dict | None = None) -> "Prepare":
        argv = ["make-data", preset, "--out", str(out)]
        for k, v in (params or {}).items():
            argv += ["--set", f"{k}={v}"]
        return cls(argv)

    @classmethod
    def prepare(cls, args: list[str]) -> "Prepare":
        return cls(["prepare", *args])
