r"""submitit entry points: the work of a SLURM job, and what submits it.

Entry points (each a submitit ``Checkpointable``; a preempted or timed-out job is requeued and
resumes from its own checkpoint):

:class:`jobs.assimilate.Assimilate`   ``diffda run`` on every task; stops between cycles on USR2/SIGTERM
:class:`jobs.smooth.Smooth`           ``diffda smooth`` on every task: one window, skipped when complete
:class:`jobs.prepare.Prepare`         ``diffda make-data`` / ``diffda prepare``
:class:`jobs.train.Train`             ``diffda train`` (resumes from ``training.pt``)
:class:`jobs.evaluate.Evaluate`       metrics and plots from finished runs
:class:`jobs.bench.Bench`             ``diffda bench``
:class:`jobs.campaign.WindowSequence` a campaign's windows in one job (the ``local`` profile)

Submission: :mod:`jobs.profiles` (site profiles, validated), :mod:`jobs.submission` (checks and
executors), :mod:`jobs.campaign` (windows, manifest, status, resume), :mod:`jobs.slurmctl`
(job states without accounting). The ``diffda submit``, ``campaign``, ``status``, ``run-window`` and
``prepare --profile`` commands live in :mod:`jobs.commands` and join the one ``diffda`` command
through :mod:`jobs.cli` (the installed entry point); ``pipeline`` never imports ``jobs``.
"""
