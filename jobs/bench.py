"""Benchmarks as a job: ``Bench(["filters", "--particles", "20,100"])`` runs ``diffda bench ...``."""

from __future__ import annotations

from .command import CommandJob


class Bench(CommandJob):
    def __init__(self, args: list[str]):
        super().__init__(["bench", *args])
