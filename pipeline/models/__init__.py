"""Denoisers (exact Gaussian, closed-form KDE, neural grid network) and twin dynamics."""
