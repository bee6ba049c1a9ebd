r"""Whole-store writes that never leave a partial store behind.

``write_atomic(ds, path)`` writes a consolidated Zarr 3 store to a temporary sibling, then renames
it into place; an existing store at ``path`` is moved aside first and removed only once the new
one is in place. A write killed at any point leaves either the old store or the new one at
``path`` (and perhaps a ``.tmpPID``/``.oldPID`` sibling), never a half-written store.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import xarray as xr


def write_atomic(ds: xr.Dataset, path: str | Path, encoding: dict | None = None) -> Path:
    """Write ``ds`` (chunked and encoded as the caller wants) as ``path``; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3, encoding=encoding)
    if path.exists():
        old = path.with_name(f"{path.name}.old{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` as the file ``path`` (temporary sibling, fsync, rename): all or nothing."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode())
