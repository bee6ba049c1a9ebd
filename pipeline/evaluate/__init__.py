"""Scores (RMSE, CRPS, spread, ESS), plots and reports."""
