import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def f64():
    return torch.float64


LONGEST_FIRST = ("test_slurm.py",)  # several minutes of SLURM jobs: one xdist worker starts on them at once


def pytest_collection_modifyitems(config, items):
    """The longest test files first (stable otherwise), so that with ``-n 2 --dist loadfile``
    (env/test.sh) one worker runs them while the other runs the rest."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)
