r"""Score-based trajectory smoothing (Rozet & Louppe, SDA): ``p(x_{1:L} | y_{1:L})`` from a window prior.

- :mod:`.compose`: the whole-trajectory denoiser composed from a window denoiser over ``2k+1`` states;
- :mod:`.gaussian`: the exact linear-Gaussian window denoiser (the KDE and MLP window denoisers are
  not written yet);
- :mod:`.rts`: the Rauch–Tung–Striebel smoother (the oracle);
- :mod:`.smoother`: guided sampling of S trajectories, in overlapping blocks.

Status (2026-12-02): work in progress for issue 12. Not wired to a command (`diffda smooth`).
Checked against the RTS oracle only at full width (2k+1 = L, tests/test_smoother_oracle.py). With
2k+1 < L, MMPS's Jacobian covariance diverges (the composed Jacobian is not symmetric) and SDA
guidance is 0.3 to 0.5 posterior std off RTS, so the 0.15 target is not met yet.
"""
