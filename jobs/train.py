"""Training the neural denoiser as a job: ``Train(["--data", DIR, "--out", CKPT, "--set", "steps=20000"])``.

``diffda train`` checkpoints atomically and a rerun into the same ``--out`` resumes bit for bit,
so on preemption or time-out the job is requeued as is (:class:`jobs.command.CommandJob`) and
continues from its last checkpoint.
"""

from __future__ import annotations

from .command import CommandJob


class Train(CommandJob):
    def __init__(self, args: list[str]):
        super().__init__(["train", *args])
