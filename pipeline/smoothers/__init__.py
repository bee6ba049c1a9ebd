r"""Score-based trajectory smoothing (Rozet & Louppe, SDA): ``p(x_{1:L} | y_{1:L})`` from a window prior.

- :mod:`.compose`: the whole-trajectory denoiser composed from a window denoiser over ``2k+1`` states;
- :mod:`.gaussian`, :mod:`.kde`, :mod:`.network`: window denoisers (exact linear-Gaussian, KDE, MLP);
- :mod:`.rts`: the Rauch–Tung–Striebel smoother (the oracle);
- :mod:`.smoother`: guided sampling of S trajectories, in overlapping blocks.
"""
