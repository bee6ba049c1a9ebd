"""Filters: fully adapted (optimal-proposal) and bootstrap particle filters, ETKF, Kalman oracle."""
