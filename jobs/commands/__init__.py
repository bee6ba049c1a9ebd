"""The SLURM sub-commands of ``diffda`` (submit, campaign, status, prepare --profile): :mod:`jobs.cli` adds them."""
