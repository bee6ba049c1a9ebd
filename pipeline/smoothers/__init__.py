r"""Score-based trajectory smoothing (Rozet & Louppe, SDA): ``p(x_{1:L} | y_{1:L})`` from a window prior.

- :mod:`.compose`: the whole-trajectory denoiser composed from a window denoiser over ``2k+1`` states;
- :mod:`.gaussian`: the exact linear-Gaussian window denoiser (the KDE and MLP window denoisers are
  not written yet);
- :mod:`.rts`: the Rauch–Tung–Striebel smoother (the oracle);
- :mod:`.smoother`: guided sampling of S trajectories, in overlapping blocks.

Status (2026-12-02): work in progress for issue 12. These modules import but are not yet wired to
a command (`diffda smooth`), checked against the RTS oracle, or covered by tests; nothing else in
diffda calls them.
"""
