"""Without ``run_ranked``: ``launch`` + ``try/finally: ctx.shutdown()``, and rank 1 raises.

The failing rank's ``shutdown`` (an exception in flight) must not wait in a barrier; it posts the
failure, and the other ranks' watchdogs stop them, though they sleep outside any collective.
"""

from __future__ import annotations

import time

import torch

from pipeline.distributed.launch import launch

ctx = launch(device="cpu", timeout_s=300)
try:
    ctx.comm.all_reduce(torch.ones(2, dtype=torch.float64))
    if ctx.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("boom on purpose (finally)")
    time.sleep(120)
finally:
    ctx.shutdown()
