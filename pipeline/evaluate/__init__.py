"""Scores (RMSE, CRPS, spread, ESS), plots, maps and report tables the run uses."""
