"""One rank fails while the others wait; the whole job must end, non-zero, naming that rank.

``python fail.py [RANK] [MODE]``: rank ``RANK`` (default: the last) fails; ``MODE``:

``collective`` (default)  it raises after two all-reduces; the others block in a third one.
``sleep``                 it raises; the others sleep (only the abort or the watchdog stops them).
``launch``                it asks for ``device='cuda:99'`` and fails inside ``launch``, before
                          the process group exists; the others wait in the rendezvous.
"""

from __future__ import annotations

import sys
import time

import torch

from pipeline.distributed.failure import run_ranked
from pipeline.distributed.launch import Context, env_rank_size

MODE = sys.argv[2] if len(sys.argv) > 2 else "collective"


def main(ctx: Context) -> int:
    bad = int(sys.argv[1]) if len(sys.argv) > 1 and int(sys.argv[1]) >= 0 else ctx.size - 1
    for _ in range(2):
        ctx.comm.all_reduce(torch.ones(3, dtype=torch.float64))
    if ctx.rank == bad:
        time.sleep(0.5)  # let the others get to their wait first
        raise RuntimeError(f"boom on purpose ({MODE})")
    if MODE == "collective":
        ctx.comm.all_reduce(torch.ones(3, dtype=torch.float64))  # blocks: rank `bad` never joins
    time.sleep(120)
    return 0


if __name__ == "__main__":
    device = "cpu"
    if MODE == "launch":
        rank, size = env_rank_size()
        bad = int(sys.argv[1]) if int(sys.argv[1]) >= 0 else size - 1
        device = "cuda:99" if rank == bad else "cpu"
    sys.exit(run_ranked(main, device=device, timeout_s=300))
