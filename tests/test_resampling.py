"""Systematic resampling: each particle gets floor(N w_i) or ceil(N w_i) copies (exactly)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.distributed.comm import LocalComm
from pipeline.filters.ensemble import ess, global_normalise
from pipeline.filters.resampling import systematic


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.floats(0.0, 0.999999))
def test_copies_are_floor_or_ceil(raw, u):
    w = torch.tensor(raw, dtype=torch.float64) + 1e-12
    w = w / w.sum()
    n = len(raw)
    counts = torch.bincount(systematic(w, u), minlength=n).double()
    nw = n * w
    # systematic resampling places one point in each interval [j/N, (j+1)/N): the number of
    # points in an interval of length w_i is floor(N w_i) or ceil(N w_i); allow 1e-9 round-off.
    assert int(counts.sum()) == n
    assert torch.all(counts >= torch.floor(nw - 1e-9)) and torch.all(counts <= torch.ceil(nw + 1e-9))


def test_ancestors_sorted_and_uniform_weights_identity():
    w = torch.full((7,), 1 / 7, dtype=torch.float64)
    a = systematic(w, 0.3)
    assert a.tolist() == list(range(7))
    a = systematic(torch.tensor([0.5, 0.1, 0.4], dtype=torch.float64), 0.9)
    assert torch.all(a[1:] >= a[:-1])


def test_ess_bounds_and_log_sum_exp():
    comm = LocalComm()

    def ess1(lw):
        return ess(comm, torch.arange(lw.numel()), lw)

    lw = torch.tensor([-1000.0, -1000.0, -1000.0, -1000.0], dtype=torch.float64)
    assert abs(ess1(lw) - 4.0) < 1e-12  # log-sum-exp keeps huge negative log-weights exact
    assert abs(ess1(torch.tensor([0.0, -np.inf, -np.inf], dtype=torch.float64)) - 1.0) < 1e-12
    lw = torch.randn(10, dtype=torch.float64) * 50
    assert abs(torch.logsumexp(global_normalise(comm, torch.arange(10), lw), 0)) < 1e-12
