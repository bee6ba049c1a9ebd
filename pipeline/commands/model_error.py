"""``diffda model-error --data DIR [--checkpoint CKPT] [--samples S] [--stride K] [--out FILE]``.

Samples of the emulator's one-step error (truth minus its mean 6-hour forecast from the true
states) on a trajectory the filter is not scored on, for the additive inflation of
``filter.additive_inflation`` (:mod:`pipeline.models.model_error`). Writes ``CKPT/model_error.npz``
unless ``--out`` is given (``CKPT`` defaults to the shipped sphere emulator).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-error", help="sample the emulator's one-step error (for additive inflation)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="a sphere-layout directory (truth.zarr, observations.zarr) "
                   "of a trajectory the filter is not scored on")
    p.add_argument("--checkpoint", type=Path, help="emulator checkpoint directory (default: the shipped sphere64x32)")
    p.add_argument("--samples", type=int, default=64, help="number of error samples S (default 64)")
    p.add_argument("--stride", type=int, default=2, help="use every K-th cycle (default 2: 12 hours apart)")
    p.add_argument("--out", type=Path, help="output file (default CKPT/model_error.npz)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run config override (e.g. --set run.seed=1)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..config import load_config
    from ..errors import InputError
    from ..models import model_error
    from ..models.weights import default_checkpoint
    from ..run import DTYPES, load_problem
    from ..filters.propagate import Propagator
    from .run import EMBEDDED_DEFAULT

    if args.samples < 2 or args.stride < 1:
        raise InputError(f"--samples must be >= 2 and --stride >= 1 (got {args.samples}, {args.stride})")
    checkpoint = args.checkpoint or default_checkpoint()
    cfg = load_config(EMBEDDED_DEFAULT, ["run.cycles=null", f"model.checkpoint={checkpoint}", *args.overrides])
    problem = load_problem(cfg, args.data, torch.device("cpu"), DTYPES[cfg.run.dtype])
    propagator = Propagator(denoiser=problem.denoiser, steps=cfg.sampler.steps, eta=cfg.sampler.eta,
                            corrections=0, delta=cfg.sampler.delta, t_min=cfg.sampler.t_min, grid=cfg.sampler.grid,
                            guidance=cfg.guidance.method, guidance_options={}, micro_batch=1, seed=cfg.run.seed)
    start = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if i % 8 == 0 or i == n:
            print(f"sample {i}/{n}  {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    errors, cycles = model_error.estimate(problem, propagator, args.samples, args.stride, progress)
    out = args.out or Path(checkpoint) / model_error.FILE
    model_error.save(out, errors, cycles, str(args.data))
    rms = float(np.sqrt((errors.astype(np.float64) ** 2).mean()))
    bias = float(np.sqrt((errors.astype(np.float64).mean(0) ** 2).mean()))
    print(f"{len(cycles)} samples of the one-step error (RMS {rms:.3f}, RMS of the mean {bias:.3f}, normalised) "
          f"in {out}")
    return 0
