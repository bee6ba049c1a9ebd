"""Diffusion machinery: schedules, the denoiser protocol, samplers and likelihood guidance."""
