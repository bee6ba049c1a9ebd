r"""Score-based trajectory smoothing (Rozet & Louppe, SDA): ``p(x_{1:L} | y_{1:L})`` from a window prior.

- :mod:`.compose`: the whole-trajectory denoiser composed from a window denoiser over ``2k+1`` states;
- :mod:`.gaussian`: the exact linear-Gaussian window denoiser (the oracle's prior);
- :mod:`.kde`: the training-free KDE over windows cut from an archive trajectory;
- :mod:`.neural`: the trained window network (EDM preconditioning around an MLP), trained by
  :mod:`.train_window` (``diffda train --set kind=window-mlp|window-conv|window-unet``; ``window-unet``: the
  U-Net over ``2k+1`` gridded states, :mod:`.grid` smooths gridded data with it);
- :mod:`.guidance`: the likelihood score over the whole window (SDA, MMPS);
- :mod:`.rts`: the Rauch–Tung–Striebel smoother (the oracle);
- :mod:`.smoother`: guided sampling of S trajectories, in overlapping blocks;
- :mod:`.window`: the window's checks (width, variables, observation times);
- :mod:`.bench`: ``diffda bench smoother`` (error against RTS for k and C);
- :mod:`.particle`: the bootstrap particle filter and backward simulation (the twins' reference);
- :mod:`.bench_twins`: ``diffda bench smoother-twins`` (KDE and network smoothers against filters).

Entry: :func:`pipeline.commands.smooth.execute` (``diffda smooth``, the submitit job
:class:`jobs.smooth.Smooth`, ``diffda campaign --kind smooth``). Checked against RTS in
tests/test_smoother_oracle.py and tests/test_smooth_cli.py (rank-count invariance under mpiexec too), the
network in tests/test_smoother_neural.py.
"""
