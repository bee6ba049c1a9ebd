"""diffda: particle-filter data assimilation with diffusion emulators."""

__version__ = "0.1.0"
