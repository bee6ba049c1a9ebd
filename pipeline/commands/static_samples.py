"""``diffda static-samples --data DIR [--checkpoint CKPT] [--samples S] [--lag L] [--out FILE]``.

Samples of the tendency ``x^{k+L} - x^k`` over ``L`` cycles (6 hours each; ``L = 1`` by default) of a
training trajectory (not the one scored), in the emulator's normalised units, for the static covariance
of ``filter.static_gain`` (:mod:`pipeline.models.static_samples`). Writes ``CKPT/static_samples.npz``
unless ``--out`` is given (``CKPT`` defaults to the shipped sphere emulator, whose normalisation the
samples take).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("static-samples", help="sample a trajectory's 6-hour tendencies (for filter.static_gain)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="a sphere-layout directory (truth.zarr, observations.zarr) "
                   "of a trajectory the filter is not scored on (e.g. the emulator's training run)")
    p.add_argument("--checkpoint", type=Path, help="emulator checkpoint directory (default: the shipped sphere64x32)")
    p.add_argument("--samples", type=int, default=128, help="number of tendencies S (default 128)")
    p.add_argument("--lag", type=int, default=1, help="the tendency's span L in cycles of 6 hours (default 1; "
                   "docs/sphere.md: what 2 and 4 gave)")
    p.add_argument("--out", type=Path, help="output file (default CKPT/static_samples.npz)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..config import load_config
    from ..errors import InputError
    from ..models import static_samples
    from ..models.weights import default_checkpoint
    from ..run import load_problem
    from .run import EMBEDDED_DEFAULT

    if args.samples < 2:
        raise InputError(f"--samples must be >= 2 (got {args.samples})")
    if args.lag < 1:
        raise InputError(f"--lag must be >= 1 cycle (got {args.lag})")
    checkpoint = args.checkpoint or default_checkpoint()
    cfg = load_config(EMBEDDED_DEFAULT, ["run.cycles=null", f"model.checkpoint={checkpoint}"])
    problem = load_problem(cfg, args.data, torch.device("cpu"), torch.float64)
    start = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if i % 32 == 0 or i == n:
            print(f"sample {i}/{n}  {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    tendencies, cycles = static_samples.estimate(problem, args.samples, progress, args.lag)
    out = args.out or Path(checkpoint) / static_samples.FILE
    static_samples.save(out, tendencies, cycles, str(args.data))
    rms = float(np.sqrt((tendencies.astype(np.float64) ** 2).mean()))
    print(f"{len(cycles)} samples of the {6 * args.lag}-hour tendency (RMS {rms:.3f}, normalised) in {out}")
    return 0
