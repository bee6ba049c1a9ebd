"""Distribution of the particle ensemble over ranks: communicators, shards, migration.

Modules: ``comm`` (the ``Comm`` protocol, ``LocalComm``, shard sizes), ``launch`` (MPI / srun /
torchrun start-up, one torch.distributed group per run), ``torch_comm`` (``TorchComm``),
``migration`` (minimal-migration resampling across ranks), ``failure`` (``run_ranked``: one rank
fails, all stop), ``watchdog`` (what ``launch`` and ``failure`` both need: the ``Watchdog``,
``failure_report``), ``selftest`` (``python -m pipeline.distributed.selftest``).
"""

from .comm import Comm, LocalComm, shard_sizes, shard_start
from .failure import run_ranked
from .launch import Context, LaunchError, launch
from .migration import Migrated, MigrationPlan, gather_by_id, migrate, plan_migration

__all__ = [
    "Comm", "LocalComm", "shard_sizes", "shard_start", "run_ranked", "Context", "LaunchError", "launch",
    "Migrated", "MigrationPlan", "gather_by_id", "migrate", "plan_migration",
]
